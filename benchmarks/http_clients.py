"""The keep-alive HTTP/1.1 client the load benchmarks run many of (asyncio streams, no client library in the way
of the timing)."""

from __future__ import annotations

import asyncio
import time


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: bytes) -> tuple[int, bytes, bool]:
    """Sends one whole HTTP request and reads its answer: (status, body, whether the server closes the
    connection)."""
    writer.write(request)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length, close = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and value.strip().lower() == "close":
            close = True
    return status, await reader.readexactly(length), close


async def client(port: int, requests: list[bytes], start: int, step: int, deadline: float,
                 latencies: list[float], errors: list[str], budget: list[int] | None = None) -> None:
    """Sends ``requests[start::step]`` (whole HTTP requests, cycling) to 127.0.0.1:``port`` until ``deadline`` or
    the shared ``budget`` (a one-item list) is spent; one connection, kept alive, opened again after an error or a
    ``Connection: close``. A 200's latency goes to ``latencies``, anything else to ``errors``."""
    reader = writer = None
    index = start
    while time.perf_counter() < deadline and (budget is None or budget[0] > 0):
        if budget is not None:
            budget[0] -= 1
        began = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            status, body, close = await exchange(reader, writer, requests[index % len(requests)])
            index += step
            if status != 200:
                errors.append(f"HTTP {status}: {body[:200].decode(errors='replace')}")
            else:
                latencies.append(time.perf_counter() - began)
            if close:
                writer.close()
                reader = writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            errors.append(f"{type(e).__name__}: {e}")
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()
