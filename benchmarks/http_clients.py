"""The raw keep-alive HTTP/1.1 exchange the load benchmarks' clients make (asyncio streams, no client library in
the way of the timing)."""

from __future__ import annotations

import asyncio


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
