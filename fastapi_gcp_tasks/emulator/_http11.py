"""A small HTTP/1.1 client with keep-alive connections, for delivering tasks at the rate workers take them.

Delivery is the emulator's other hot path. A general-purpose client spends far more CPU per request than
the worker it calls, and its pool grows slower as more requests wait in it, so a burst of attempts
would be throttled by the emulator itself. This client does only what a delivery needs: one request,
one response, status and a few headers, the body read and dropped. Each attempt takes an idle
connection to its origin or opens a new one, so a hanging worker only ever holds its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["HTTPClient", "HTTPResponse", "ProtocolError"]

_MAX_HEAD = 64 * 1024
_MAX_IDLE_PER_ORIGIN = 256
_NO_BODY_STATUSES = frozenset({204, 304})


class ProtocolError(Exception):
    """The server's answer was not valid HTTP/1.1, or the request could not be written."""


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """The parts of a response that a delivery needs."""

    status: int
    retry_after: str | None


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    request_target: bytes
    host_header: bytes

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProtocolError(f"not an absolute http(s) URL: {url!r}")
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    return _Target(parts.scheme, host, port, path.encode("utf-8"), host_header.encode("idna"))


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


def _head(target: _Target, method: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [method.encode("ascii"), b" ", target.request_target, b" HTTP/1.1\r\nHost: ", target.host_header, b"\r\n"]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or ":" in name or "\r" in value or "\n" in value:
            raise ProtocolError(f"header {name!r} contains a line break or colon")
        lines += [name.encode("latin-1"), b": ", value.encode("utf-8"), b"\r\n"]
    if body or method in ("POST", "PUT", "PATCH"):
        lines += [b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)


class HTTPClient:
    """Keeps idle connections per origin (scheme, host, port) and makes one request at a time on each."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> HTTPResponse:
        """Send one request and read its whole response; raises OSError, ProtocolError or asyncio errors."""
        target = _target(url)
        payload = _head(target, method, headers, body) + body
        idle = self._idle.get(target.origin)
        while idle:
            connection = idle.pop()
            if not connection.usable:
                connection.close()
                continue
            try:
                return await self._exchange(connection, target, method, payload)
            except (_StaleConnectionError, ConnectionResetError, BrokenPipeError):
                # the server dropped a kept-alive connection before answering this request: try a fresh one
                continue
        connection = await self._connect(target)
        try:
            return await self._exchange(connection, target, method, payload)
        except _StaleConnectionError:
            raise ProtocolError("the server closed the connection without answering") from None

    async def _connect(self, target: _Target) -> _Connection:
        context = None
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        reader, writer = await asyncio.open_connection(
            target.host, target.port, ssl=context, limit=_MAX_HEAD, server_hostname=target.host if context else None
        )
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, target: _Target, method: str, payload: bytes) -> HTTPResponse:
        reusable = False
        try:
            connection.writer.write(payload)
            try:
                head = await connection.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _StaleConnectionError from None
                raise ProtocolError("the response ended inside its headers") from None
            except asyncio.LimitOverrunError:
                raise ProtocolError("the response headers are too large") from None
            status, retry_after, length, chunked, keep_alive = _parse_head(head)
            if method == "HEAD" or status in _NO_BODY_STATUSES or 100 <= status < 200:
                pass
            elif chunked:
                await _drain_chunked(connection.reader)
            elif length is not None:
                await connection.reader.readexactly(length)
            else:
                await connection.reader.read()
                keep_alive = False
            reusable = keep_alive
            return HTTPResponse(status, retry_after)
        finally:
            if reusable and connection.usable:
                idle = self._idle.setdefault(target.origin, [])
                if len(idle) < _MAX_IDLE_PER_ORIGIN:
                    idle.append(connection)
                else:
                    connection.close()
            else:
                connection.close()

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await connection.writer.wait_closed()


class _StaleConnectionError(Exception):
    pass


def _parse_head(head: bytes) -> tuple[int, str | None, int | None, bool, bool]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    keep_alive = version != "HTTP/1.0"
    retry_after = None
    length = None
    chunked = False
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length":
            if not value.isdigit():
                raise ProtocolError(f"invalid Content-Length {value!r}")
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            tokens = value.lower()
            if "close" in tokens:
                keep_alive = False
            elif "keep-alive" in tokens:
                keep_alive = True
        elif name == "retry-after":
            retry_after = value
    return int(code), retry_after, length, chunked, keep_alive


async def _drain_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"invalid chunk size {size_text[:20]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return
        await reader.readexactly(size + 2)
