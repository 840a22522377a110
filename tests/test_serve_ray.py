"""``resnets serve --engine ray``: the service as a Ray Serve deployment of two replicas on a local Ray cluster
(started by the command, in a subprocess). Both replicas serve, the answers are the one-process service's (the
weights' recipe on load_img and the eager network, as ``resnets predict``), and killing one replica's process
under load loses no request that the client's retry cannot recover; Ray Serve starts the replica again."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("ray.serve")
triton = pytest.importorskip("tritonclient.http")

from serve_server import free_port, request  # noqa: E402

from resnets.data.images import load_img  # noqa: E402
from resnets.pipeline import load_inference  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray cluster
ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "examples" / "images").glob("*.jpg"))
WEIGHTS = "resnet20.cifar10"


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, at any depth (Linux /proc)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found += children
                pending += children
        except OSError:
            continue
    return found


def replicas(root: int) -> list[int]:
    """The Ray Serve replica processes under ``root``."""
    pids = []
    for pid in descendants(root):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ServeReplica"):
                pids.append(pid)
        except OSError:
            continue
    return pids


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_two_replicas_share_the_load_and_survive_one_killed() -> None:
    inf = load_inference("resnet20", WEIGHTS, device="cpu")
    with torch.inference_mode():
        expected = inf.probabilities(inf.model(torch.stack([inf.preprocessing(load_img(p)) for p in IMAGES])))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "resnets", "serve", "--engine", "ray", "--replicas", "2",
                             "--weights", WEIGHTS, "--port", str(port), "--max-delay-ms", "20",
                             "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started: list[int] = []  # the replicas, then every process the command started
    try:
        deadline = time.monotonic() + 300
        while len(started := replicas(proc.pid)) < 2 or not ready(port):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the Ray Serve deployment did not get ready"
            time.sleep(1)
        before = {pid: cpu_seconds(pid) for pid in started}
        answers, retried, failed = [], [0], []
        stop = threading.Event()

        def client(i: int) -> None:
            while not stop.is_set():
                image = i % len(IMAGES)
                for attempt in range(8):  # a retry reaches a living replica
                    try:
                        answer = request(port, "POST", f"/v2/models/{WEIGHTS}/infer", IMAGES[image].read_bytes(),
                                         {"Inference-Header-Content-Length": "0"}, timeout=30)
                        if answer.status == 200:
                            result = triton.InferenceServerClient.parse_response_body(
                                answer.body, header_length=int(answer.headers["inference-header-content-length"]))
                            answers.append((image, result.as_numpy("probabilities")[0]))
                            break
                    except (OSError, http.client.HTTPException):
                        pass
                    retried[0] += 1
                    time.sleep(0.2 * (attempt + 1))
                else:
                    failed.append(image)
                i += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        time.sleep(6)
        shares = {pid: cpu_seconds(pid) - before[pid] for pid in started}
        os.kill(started[0], signal.SIGKILL)  # one replica's process dies under load
        time.sleep(8)
        stop.set()
        for thread in threads:
            thread.join(120)
        assert all(share > 0.3 for share in shares.values()), f"CPU seconds per replica: {shares}"
        assert not failed, f"{len(failed)} requests failed after retries ({retried[0]} retries)"
        assert len(answers) > 20
        for image, probabilities in answers:
            np.testing.assert_allclose(probabilities, expected[image].numpy(), atol=1e-5)
        print(f"{len(answers)} answers, {retried[0]} retried, none lost; CPU seconds per replica {shares}")
        deadline = time.monotonic() + 120
        while len(replicas(proc.pid)) < 2:  # Ray Serve starts a new replica in place of the dead one
            assert time.monotonic() < deadline, "the killed replica was not replaced"
            time.sleep(1)
        started = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)  # drains, stops Ray Serve and the Ray it started
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            started = descendants(proc.pid)
            proc.kill()
            proc.wait()
        for pid in started:  # whatever Ray left behind: this test's processes alone
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def ready(port: int) -> bool:
    try:
        return request(port, "GET", "/v2/health/ready", timeout=5).status == 200
    except (OSError, http.client.HTTPException):
        return False
