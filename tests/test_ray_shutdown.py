"""The Ray engine's shutdown: quick, needs no cluster and no shared data (the cluster tests are in
test_ray_engine.py)."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("ray.data")

from resnets.ray import jobs


def test_ray_data_threads_are_waited_for_before_ray_shuts_down():
    """A job that stops early leaves Ray Data's threads inside Ray calls; ``ray.shutdown()`` under one ends
    the process (exit 1, no test report: CI saw it). Those threads are joined first; older ones are not."""
    old = threading.Thread(target=time.sleep, args=(5,), name="iter_threaded", daemon=True)
    old.start()
    before = set(threading.enumerate())
    late = threading.Thread(target=time.sleep, args=(0.5,), name="iter_threaded", daemon=True)
    other = threading.Thread(target=time.sleep, args=(5,), name="something-else", daemon=True)
    late.start()
    other.start()
    start = time.monotonic()
    jobs._join_data_threads(before)
    assert not late.is_alive()  # waited for
    assert old.is_alive() and other.is_alive() and time.monotonic() - start < 4  # not waited for
