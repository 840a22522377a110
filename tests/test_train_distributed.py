"""torchrun: a 2-process gloo DDP run follows the 1-process run with the same global batch, and writes once."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from resnets.train import make_config, train
from resnets.train.metrics import read_metrics
from test_cifar_data import write_fake_cifar

pytestmark = pytest.mark.slow  # several processes under torchrun


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (read from /proc, Linux)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # the parent pid
            children.append(int(stat.parent.name))
    return children + [d for c in children for d in _descendants(c)]


def torchrun(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 -m resnets ARGS`` (gloo); a run past ``timeout`` s fails the test.

    On timeout every process of the job gets SIGABRT first, on which Python's faulthandler writes each
    thread's stack to the captured stderr (where the job waited), then torchrun is terminated. Output
    goes to files, not to pipes that a hung rank would hold open.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "resnets", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in _descendants(proc.pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGABRT)
            time.sleep(2)
            proc.terminate()
            proc.wait(timeout=60)
            out.seek(0)
            err.seek(0)
            pytest.fail(f"torchrun still running after {timeout} s; stdout:\n{out.read()[-2000:]}\n"
                        f"stderr (stacks of the job's processes):\n{err.read()[-12000:]}")
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def test_two_process_gloo_run_matches_one_process(tmp_path):
    write_fake_cifar(tmp_path, per_batch=52, n_test=64)
    # BatchNorm statistics are per process under DDP (SyncBatchNorm needs GPUs), so freeze them
    # ("--freeze bn"): then the 2 x 32 images of each step give exactly the gradient of the 64.
    args = dict(model="resnet20", epochs=2, batch_size=64, lr=0.02, precision="fp32", freeze="bn", threads=1,
                cache_dir=str(tmp_path / "cache"))
    train(make_config("fast-cifar", data=str(tmp_path), out=str(tmp_path / "one"), progress=False, **args))

    proc = torchrun(["train", "--data", str(tmp_path), "--out", str(tmp_path / "two"), "--no-progress",
                     *[x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", str(v))]], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done:") == 1  # only rank 0 reports

    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        for key in ("train_loss", "eval_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-3), (key, a, b)
    assert [r["step"] for r in two] == [r["step"] for r in one] == [4, 8]
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


def test_a_run_killed_in_one_process_resumes_in_two(tmp_path):
    from test_train import Interrupt, interrupting_model

    write_fake_cifar(tmp_path, per_batch=52, n_test=64)
    # seed 7 for data order, seed 0 for the weights (interrupting_model): a fresh start from the saved
    # config would initialise differently, so only a real resume can match the uninterrupted run
    args = dict(model="resnet20", epochs=2, batch_size=64, lr=0.02, precision="fp32", freeze="bn", threads=1,
                cache_dir=str(tmp_path / "cache"), progress=False, data=str(tmp_path), seed=7)
    train(make_config("fast-cifar", out=str(tmp_path / "one"), **args), model=interrupting_model(10**6))
    # killed after 5 of the 8 steps on one process, with a checkpoint every step; resumed by two processes
    with pytest.raises(Interrupt):
        train(make_config("fast-cifar", out=str(tmp_path / "moved"), checkpoint_every_steps=1, **args),
              model=interrupting_model(after_steps=5))
    proc = torchrun(["train", "--resume", "--out", str(tmp_path / "moved"), "--no-progress"], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    one, moved = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "moved")
    assert [r["step"] for r in moved] == [r["step"] for r in one] == [4, 8]
    for a, b in zip(one, moved):
        for key in ("train_loss", "eval_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-3), (key, a, b)
