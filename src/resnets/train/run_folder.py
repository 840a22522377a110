"""A run folder held by one writer: an earlier run is not overwritten unless resumed, nor written by two runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import BadInput
from ..locks import exclusive


@contextlib.contextmanager
def run_folder(out: Path, resume: bool, is_main: bool) -> Iterator[None]:
    """Refuse to overwrite an earlier run unless resuming it, and hold the folder against a second writer."""
    if not is_main:
        yield
        return
    if not resume and ((out / "last.pt").exists() or (out / "metrics.jsonl").exists()):
        raise BadInput(f"{out} already holds a training run (last.pt, metrics): continue it with resume=True, "
                         "or give a new out= folder")
    with exclusive(out / ".lock", f"another 'resnets train' is writing to {out} right now; give this run another "
                                  "out= folder"):
        yield
