"""The delivery HTTP/1.1 client against raw servers: framing, keep-alive, stale connections, bad answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from fastapi_gcp_tasks.emulator._http11 import HTTPClient, ProtocolError


@dataclass
class RawServer:
    """Answers each request with `answer(request_head)` bytes; records heads and bodies, counts connections."""

    answer: Callable[[bytes], bytes]
    close_after: bool = False
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.heads.append(head)
                self.bodies.append(await reader.readexactly(length))
                writer.write(self.answer(head))
                await writer.drain()
                if self.close_after:
                    return
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., asyncio.Future[tuple[RawServer, str]]]]:
    servers: list[tuple[asyncio.Server, RawServer]] = []

    async def start(answer: Callable[[bytes], bytes], close_after: bool = False) -> tuple[RawServer, str]:
        raw = RawServer(answer, close_after=close_after)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append((server, raw))
        return raw, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start  # type: ignore[misc]
    for server, raw in servers:
        server.close()
        for writer in raw.writers:
            writer.close()
        await server.wait_closed()


def _ok(body: bytes = b"done", extra: bytes = b"") -> Callable[[bytes], bytes]:
    return lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_requests_reuse_one_kept_alive_connection(
    serve: Callable[..., asyncio.Future[tuple[RawServer, str]]],
) -> None:
    raw, base = await serve(_ok())
    client = HTTPClient()
    for index in range(3):
        response = await client.request("POST", f"{base}/path?q={index}", {"X-A": "1"}, b"body")
        assert response.status == 200
    await client.aclose()
    assert raw.connections == 1
    assert raw.heads[2].startswith(b"POST /path?q=2 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-A: 1\r\n" in raw.heads[0]
    assert b"\r\nContent-Length: 4\r\n" in raw.heads[0]
    assert raw.bodies == [b"body"] * 3


async def test_chunked_and_retry_after_and_no_body_statuses(
    serve: Callable[..., asyncio.Future[tuple[RawServer, str]]],
) -> None:
    answers = iter(
        [
            b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\n\r\n"
            b"4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        ]
    )
    raw, base = await serve(lambda head: next(answers))
    client = HTTPClient()
    busy = await client.request("POST", f"{base}/a", {}, b"")
    assert (busy.status, busy.retry_after) == (503, "7")
    assert (await client.request("GET", f"{base}/b", {}, b"")).status == 204
    assert (await client.request("HEAD", f"{base}/c", {}, b"")).status == 200
    await client.aclose()
    assert raw.connections == 1
    assert b"Content-Length" not in raw.heads[1]


async def test_connection_close_and_http_1_0_open_a_new_connection(
    serve: Callable[..., asyncio.Future[tuple[RawServer, str]]],
) -> None:
    raw, base = await serve(_ok(extra=b"Connection: close\r\n"), close_after=True)
    client = HTTPClient()
    for _ in range(2):
        assert (await client.request("POST", base, {}, b"")).status == 200
    assert raw.connections == 2
    raw10, base10 = await serve(lambda head: b"HTTP/1.0 202 Accepted\r\n\r\nuntil close", close_after=True)
    for _ in range(2):
        assert (await client.request("POST", base10, {}, b"x")).status == 202
    assert raw10.connections == 2
    await client.aclose()


async def test_a_connection_the_server_closed_while_idle_is_replaced(
    serve: Callable[..., asyncio.Future[tuple[RawServer, str]]],
) -> None:
    raw, base = await serve(_ok())
    client = HTTPClient()
    assert (await client.request("POST", base, {}, b"1")).status == 200
    for writer in raw.writers:
        writer.close()
    await asyncio.sleep(0.05)
    assert (await client.request("POST", base, {}, b"2")).status == 200
    await client.aclose()
    assert raw.connections == 2
    assert raw.bodies == [b"1", b"2"]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SMTP ready\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
    ],
)
async def test_bad_answers_are_protocol_errors(
    serve: Callable[..., asyncio.Future[tuple[RawServer, str]]], answer: bytes, message: str
) -> None:
    _, base = await serve(lambda head: answer)
    client = HTTPClient()
    with pytest.raises(ProtocolError, match=message):
        await client.request("POST", base, {}, b"")
    await client.aclose()


async def test_header_injection_and_bad_urls_are_refused() -> None:
    client = HTTPClient()
    with pytest.raises(ProtocolError, match="line break"):
        await client.request("POST", "http://127.0.0.1:9/", {"X-A": "1\r\nEvil: yes"}, b"")
    with pytest.raises(ProtocolError, match="absolute"):
        await client.request("POST", "ftp://host/", {}, b"")
    await client.aclose()
