"""``resnets serve`` against hostile or careless clients: stalled and trickled uploads, idle and header-trickling
connections, and many concurrent large images; and the command's key and weights options.

Real servers on 127.0.0.1 (uvicorn in a thread, or ``resnets serve`` in a subprocess whose memory is read from
/proc), and raw sockets for the clients no library would write.
"""

from __future__ import annotations

import io
import os
import select
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")

from PIL import Image, ImageDraw  # noqa: E402
from serve_server import decompression_bomb, free_port, request, serving, wait_ready  # noqa: E402

from resnets.pipeline import Inference, load_inference  # noqa: E402
from resnets.serve import ServeConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CAT = ROOT / "examples" / "images" / "cifar10_cat.jpg"
WEIGHTS = "resnet20.cifar10"


@pytest.fixture(scope="module")
def inf() -> Inference:
    return load_inference("resnet20", WEIGHTS, device="cpu")


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    """A compressible PNG: small on the wire, ``width`` x ``height`` pixels once decoded."""
    img = Image.new(mode, (width, height), (120, 140, 90, 255)[:len(mode)])
    ImageDraw.Draw(img).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4),
                                fill=(200, 60, 40, 255)[:len(mode)])
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def predict(port: int, data: bytes, timeout: float = 30):
    return request(port, "POST", "/v1/predict", data, {"Content-Type": "image/jpeg"}, timeout=timeout)


def metric(port: int, name: str) -> float:
    for line in request(port, "GET", "/metrics").body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


class Client:
    """A raw connection that sends what it is told and records what comes back until the server closes it."""

    def __init__(self, port: int, first: bytes, trickle: bytes = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.trickle, self.received, self.closed = trickle, b"", False
        if first:
            self.sock.sendall(first)

    def poll(self) -> None:
        """Send the next trickled byte, read what arrived, note whether the server closed the connection."""
        if self.closed:
            return
        try:
            if self.trickle:
                self.sock.send(self.trickle)
            while select.select([self.sock], [], [], 0)[0]:
                data = self.sock.recv(65536)
                if not data:
                    self.closed = True
                    return
                self.received += data
        except (ConnectionResetError, BrokenPipeError):
            self.closed = True


POST_HEADERS = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n")


@pytest.mark.slow
def test_stalled_uploads_do_not_lock_clients_out_and_are_closed(inf: Inference) -> None:
    """64 uploads that stall after a few body bytes (the default --max-queue), 8 that trickle their body, 8 that
    trickle their headers and 8 that send nothing: other clients are answered at once, and each stalled
    connection is closed after its timeout (408 for a request begun)."""
    config = ServeConfig(header_timeout=4, body_timeout=4, min_upload_rate=1, keep_alive=1)
    with serving(inf, config) as port:
        groups: dict[str, list[Client]] = {}
        try:
            groups["stalled body"] = [Client(port, POST_HEADERS + b"\xff\xd8\xff") for _ in range(config.max_queue)]
            groups["trickled body"] = [Client(port, POST_HEADERS, trickle=b"x") for _ in range(8)]
            groups["trickled headers"] = [Client(port, b"POST /v1/predict HTTP/1.1\r\nX-Slow: ", trickle=b"a")
                                          for _ in range(8)]
            groups["idle"] = [Client(port, b"") for _ in range(8)]
            stalled = config.max_queue + 8
            deadline = time.monotonic() + 2
            while metric(port, "resnets_uploads_in_progress") < stalled:  # every stalled body is being read
                assert time.monotonic() < deadline
                time.sleep(0.05)
            start = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: predict(port, CAT.read_bytes(), timeout=5), range(4)))
            assert [a.status for a in answers] == [200] * 4, [a.body[:200] for a in answers]
            assert time.monotonic() - start < 2
            assert metric(port, "resnets_uploads_in_progress") == stalled  # answered while they stall, not after
            deadline = time.monotonic() + 10
            everyone = [c for clients in groups.values() for c in clients]
            while not all(c.closed for c in everyone) and time.monotonic() < deadline:
                for client in everyone:
                    client.poll()
                time.sleep(0.2)
            for name, clients in groups.items():
                assert all(c.closed for c in clients), f"{name}: a connection is still open"
            for client in groups["stalled body"]:  # nothing left unread on either side: the whole answer arrived
                assert client.received.startswith(b"HTTP/1.1 408 "), client.received[:200]
                assert b"the upload stalled" in client.received and b"--body-timeout" in client.received
            assert all(c.received == b"" for c in groups["idle"])
            assert metric(port, 'resnets_requests_total{endpoint="/v1/predict",status="408"}') == stalled
            assert metric(port, "resnets_uploads_in_progress") == 0
            assert metric(port, "resnets_requests_in_progress") == 0
        finally:
            for clients in groups.values():
                for client in clients:
                    client.sock.close()


@pytest.mark.slow
def test_an_idle_kept_alive_connection_is_closed(inf: Inference) -> None:
    with serving(inf, ServeConfig(keep_alive=0.5, header_timeout=5)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in answer.lower()
            start = time.monotonic()
            assert sock.recv(65536) == b""  # closed by the server, not by the 5 s socket timeout
            assert time.monotonic() - start < 2


def test_an_upload_below_the_minimum_rate_gets_408(inf: Inference) -> None:
    """The rate rule: a body that keeps coming, too slowly, is cut off once it has taken --body-timeout."""
    with serving(inf, ServeConfig(body_timeout=0.5, min_upload_rate=64)) as port:
        client = Client(port, POST_HEADERS, trickle=b"x" * 1000)  # 1000 bytes / 0.05 s: 20 KB/s, under 64 KiB/s
        try:
            deadline = time.monotonic() + 5
            while not client.closed and time.monotonic() < deadline:
                client.poll()
                time.sleep(0.05)
            assert client.closed and client.received.startswith(b"HTTP/1.1 408 "), client.received[:300]
        finally:
            client.sock.close()
        assert predict(port, CAT.read_bytes()).status == 200


@pytest.mark.slow
def test_bodies_being_received_are_bounded_in_bytes(inf: Inference) -> None:
    """Reading bodies before admission must not let memory grow with the connections: the bodies being received
    hold at most --max-queue x --max-upload-mb bytes together; past that, 503."""
    config = ServeConfig(max_queue=2, max_upload_mb=0.01, body_timeout=1)  # 2 x 10,485 bytes
    headers = POST_HEADERS.replace(b"100000", b"10000")
    with serving(inf, config) as port:
        clients = [Client(port, headers + b"x" * 9000) for _ in range(2)]
        try:
            deadline = time.monotonic() + 2
            while metric(port, "resnets_uploads_in_progress") < 2:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            answer = request(port, "POST", "/v1/predict", b"x" * 9000, {"Content-Type": "image/jpeg"})
            assert answer.status == 503 and "--max-queue x --max-upload-mb" in answer.json["detail"]
            assert answer.headers["retry-after"] == "1"
            time.sleep(1.2)  # the two stalled bodies time out and give their bytes back
            assert predict(port, CAT.read_bytes()).status == 200
        finally:
            for client in clients:
                client.sock.close()


# --- memory ------------------------------------------------------------------------------------------------


def _memory_mib(pid: int) -> dict[str, float]:
    """The process's resident memory now (VmRSS) and at its peak so far (VmHWM), in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_concurrent_large_images_stay_within_the_decoding_budget() -> None:
    """32 concurrent 5000x5000 PNGs (100 KB each, 100 MB each decoded) to /v1/explain: the server's peak memory
    grows by less than its decoding budget, although 8 decoding threads could take 8 at once and each request
    waits for its panel (the full-size photos of all 32 would be 3.2 GB). The API key comes from the environment."""
    budget_mib = 500  # two of these images at once (250 MiB each, estimated from their headers)
    port, key = free_port(), {"X-API-Key": "from-the-environment"}
    proc = subprocess.Popen([sys.executable, "-m", "resnets", "serve", "--weights", WEIGHTS, "--port", str(port),
                             "--workers", "8", "--decode-memory-mb", str(budget_mib), "--log-level", "warning"],
                            env={**os.environ, "RESNETS_API_KEY": key["X-API-Key"]},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(proc, port)
        assert request(port, "POST", "/v1/explain", png(320, 240)).status == 401
        small = request(port, "POST", "/v1/explain", png(320, 240), key)
        assert small.status == 200, small.body[:300]  # the explainer is built: the rest is per-image memory
        before = _memory_mib(proc.pid)
        assert before["VmHWM"] - before["VmRSS"] < 50  # starting up took no more than serving
        large = png(5000, 5000)
        assert len(large) < 200_000
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda _: request(port, "POST", "/v1/explain", large, key, timeout=300), range(32)))
        after = _memory_mib(proc.pid)
        assert [a.status for a in answers] == [200] * 32, [a.body[:200] for a in answers if a.status != 200]
        panel = np.asarray(Image.open(io.BytesIO(answers[0].body)))
        assert panel.shape[:2] == (256 + 46, 256)  # the panel of the photo, drawn from its reduced view
        grown = after["VmHWM"] - before["VmRSS"]
        assert grown < budget_mib, f"peak memory grew by {grown:.0f} MiB (from {before['VmHWM']:.0f} MiB)"
    finally:
        proc.kill()
        proc.wait()


def test_the_decoding_budget_is_first_come_first_served() -> None:
    """A large image waiting for its share is not overtaken by small ones that would fit; a waiter that gives
    up lets those behind it go; more than the whole budget is 413."""
    import asyncio

    from resnets.serve.decoding import DecodingBudget
    from resnets.serve.http import ApiError

    async def main() -> list[str]:
        budget, order = DecodingBudget(100), []

        async def job(name: str, size: int, seconds: float) -> None:
            async with budget.hold(size):
                order.append(name)
                await asyncio.sleep(seconds)

        first = asyncio.ensure_future(job("first", 60, 0.05))
        await asyncio.sleep(0)
        gives_up = asyncio.ensure_future(job("gives up", 90, 0))
        large = asyncio.ensure_future(job("large", 80, 0))
        small = asyncio.ensure_future(job("small", 10, 0))  # 40 are free, yet it waits behind the large one
        await asyncio.sleep(0.01)
        assert order == ["first"] and budget.used == 60
        gives_up.cancel()
        await asyncio.gather(first, large, small)
        assert gives_up.cancelled() and budget.used == 0
        with pytest.raises(ApiError) as refused:
            async with budget.hold(101):
                pass
        assert refused.value.status == 413 and "--decode-memory-mb" in refused.value.detail
        return order

    assert asyncio.run(main()) == ["first", "large", "small"]


def test_decoding_memory_is_estimated_from_the_header() -> None:
    from resnets.serve.decoding import BYTES_PER_PIXEL, BYTES_PER_PIXEL_WIDE, decoding_bytes

    assert decoding_bytes(png(300, 200)) == 300 * 200 * BYTES_PER_PIXEL
    assert decoding_bytes(png(300, 200, "RGBA")) == 300 * 200 * BYTES_PER_PIXEL_WIDE
    assert decoding_bytes(CAT.read_bytes()) == 32 * 32 * BYTES_PER_PIXEL
    sixteen = io.BytesIO()
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(sixteen, format="PNG")
    assert decoding_bytes(sixteen.getvalue()) == 30 * 20 * BYTES_PER_PIXEL_WIDE
    assert decoding_bytes(b"not an image") == 0  # decoding says what is wrong


@pytest.mark.slow
def test_an_image_over_the_decoding_budget_is_413(inf: Inference) -> None:
    with serving(inf, ServeConfig(decode_memory_mb=1)) as port:  # 1 MiB: 104,857 opaque pixels, 32,768 wide
        assert predict(port, png(300, 300)).status == 200
        for data in (png(400, 300), png(200, 200, "RGBA")):
            answer = predict(port, data)
            assert answer.status == 413 and "--decode-memory-mb" in answer.json["detail"], answer.body
        bomb = predict(port, decompression_bomb())  # PIL's own limit speaks first, as in resnets predict
        assert bomb.status == 422 and "decompression bomb" in bomb.json["detail"]
        assert metric(port, "resnets_decoding_bytes") == 0
