"""A minimal load generator for the benchmark's worker: one fixed request, answers framed by Content-Length.

It measures the worker's own request rate, the yardstick of the drain. It parses only what this worker
sends (no chunked bodies, no interim answers), so it costs less CPU than any real client and stays out of
the way of what it measures. Never use it elsewhere: the emulator delivers through `_http_pool`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from urllib.parse import urlsplit


class _Loop(asyncio.Protocol):
    """One kept-alive connection sending `request` again as soon as each answer ends, `left[0]` times in all."""

    def __init__(self, request: bytes, left: list[int], done: asyncio.Future[None]) -> None:
        self.request = request
        self.left = left
        self.done = done
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._next()

    def _next(self) -> None:
        assert self.transport is not None
        if self.left[0] <= 0:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.left[0] -= 1
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            if not head.startswith(b"http/1.1 200"):
                raise RuntimeError(f"unexpected answer {head[:40]!r}")
            start = head.find(b"content-length:") + 15
            length = int(head[start : head.find(b"\r\n", start)])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if self.left[0] > 0:
                self.done.set_exception(ConnectionError(f"the worker closed a connection: {exc}"))
            else:
                self.done.set_result(None)


async def post_many(
    url: str, body: bytes, count: int, concurrency: int, headers: Mapping[str, str] | None = None
) -> None:
    """POST `body` to `url` `count` times, `concurrency` requests in flight over as many connections.

    `headers` (default: only `Content-Type: application/json`) are sent besides Host and Content-Length;
    the benchmark sends a delivery's own headers, so that the worker parses the same requests as when the
    emulator delivers.
    """
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    lines = "".join(f"{name}: {value}\r\n" for name, value in (headers or {"Content-Type": "application/json"}).items())
    request = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n{lines}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    left = [count]
    loop = asyncio.get_running_loop()
    futures = []
    for _ in range(concurrency):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(lambda done=done: _Loop(request, left, done), parts.hostname, parts.port)  # type: ignore[misc]
        futures.append(done)
    await asyncio.gather(*futures)
