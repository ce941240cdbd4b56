"""HTTP/1.1 exchanges for deliveries: h11 parses and frames, this module only pools connections.

h11 (the protocol engine under httpcore and uvicorn) does everything that must be exact: interim 1xx
responses are skipped, Content-Length and chunked framing are checked, a peer that closes mid-response is
an error, and `Connection: close` or HTTP/1.0 answers end the connection. The pool adds one rule of its
own: a connection goes back to the pool only when h11 says both sides finished the exchange, nothing was
received beyond the response, and nothing arrives while it sits idle; any other connection is closed. So
a response can never be read as the answer to a later request.

URLs are percent-encoded before sending: both services "encode some characters for safety and
compatibility" without saying which, so the emulator encodes what RFC 3986 does not allow. Spaces,
non-ASCII characters and other characters outside it in the path and query become UTF-8 `%XX` escapes
(escapes already there are kept, a stray `%` becomes `%25`), a non-ASCII host is sent in its IDNA form,
and the fragment is not sent.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import h11

from fastapi_gcp_tasks.build._wire import HEADER_NAME
from fastapi_gcp_tasks.emulator._types import RESPONSE_EXCERPT_BYTES

__all__ = ["KEPT_HEADERS", "MAX_HEAD", "MAX_RESPONSE_BODY", "Answer", "ConnectionPool", "Target", "target_of"]

MAX_HEAD = 64 * 1024
"""Largest response head (status line and headers) accepted."""
MAX_RESPONSE_BODY = 16 * 1024 * 1024
"""Response body bytes read (and dropped) before the connection is closed; the status stands."""
_MAX_IDLE_PER_ORIGIN = 256
KEPT_HEADERS = ("retry-after", "x-gcp-tasks-gave-up")
"""Response headers an `Answer` keeps (lowercase names): the services and the delivery log read them."""
_KEPT_NAMES = tuple(name.encode("ascii") for name in KEPT_HEADERS)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection"})
"""Headers the pool writes itself (or never): a task's own would frame its request differently."""
_BREAKS = re.compile(r"[\r\n\x00]")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PATH_SAFE = "/!$&'()*+,;=:@-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"


@dataclass(frozen=True, slots=True)
class Answer:
    """The parts of a final response a delivery needs: its status, the headers the services read, Location."""

    status: int
    headers: Mapping[str, str]
    """`retry-after` and `x-gcp-tasks-gave-up` when the response had them (lowercase names)."""
    location: str | None = None
    excerpt: bytes = b""
    """The start of the body (`RESPONSE_EXCERPT_BYTES` at most)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one URL is sent: its origin and its encoded request target and Host header."""

    scheme: str
    host: str
    port: int
    request_target: bytes
    host_header: bytes

    @property
    def origin(self) -> tuple[str, str, int]:
        """(scheme, host, port): connections are pooled per origin, and Authorization never leaves one."""
        return self.scheme, self.host, self.port


def _encode(part: str, safe: str) -> str:
    return quote(_STRAY_PERCENT.sub("%25", part), safe=safe)


@functools.lru_cache(maxsize=4096)
def target_of(url: str) -> Target:
    """The origin and encoded request target of an absolute http(s) `url`; ValueError when it has none."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    scheme = parts.scheme.lower()
    default_port = 443 if scheme == "https" else 80
    port = parts.port or default_port
    host = parts.hostname
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"the host of {url!r} has no IDNA form: {exc}") from None
    target = _encode(parts.path, _PATH_SAFE) or "/"
    if parts.query:
        target += "?" + _encode(parts.query, _QUERY_SAFE)
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header += f":{port}"
    return Target(scheme, host, port, target.encode("ascii"), host_header.encode("ascii"))


def _text(value: bytes) -> str:
    """A header value as text: UTF-8 when it decodes (what browsers assume for Location), else Latin-1."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


class _StaleConnectionError(Exception):
    """A kept-alive connection ended before any byte of the response: the request may go on a fresh one."""


def _request_event(method: str) -> h11.Request:
    """The h11 request event for `method`: h11 checks the method once and learns from it how to read the answer.

    The pool writes the request itself; h11 needs only the method (a HEAD answer has no body), so one
    event per method serves every request and h11's checks of it run once, not per delivery.
    """
    event = _REQUEST_EVENTS.get(method)
    if event is None:
        event = h11.Request(method=method, target=b"/", headers=[(b"Host", b"-")])
        if len(_REQUEST_EVENTS) < _MAX_CACHED:
            _REQUEST_EVENTS[method] = event
    return event


def _name_line(name: str) -> bytes:
    """The bytes that start `name`'s header line, b"" for a framing header the pool writes itself.

    Checked once per name (a token, RFC 9110 5.6.2) and remembered: a task's header names repeat from
    delivery to delivery, so the check stays off the hot path.
    """
    line = _NAME_LINES.get(name)
    if line is None:
        if HEADER_NAME.fullmatch(name) is None:
            raise ValueError(f"header {name!r} cannot be sent: its name is not a token")
        line = b"" if name.lower() in _FRAMING else b"\r\n" + name.encode("ascii") + b": "
        if len(_NAME_LINES) < _MAX_CACHED:
            _NAME_LINES[name] = line
    return line


def _check_values(headers: Mapping[str, str]) -> None:
    """Refuse a header value with a line break or NUL (one search over all values; the culprit named after)."""
    if _BREAKS.search("".join(headers.values())) is not None:
        name = next(name for name, value in headers.items() if _BREAKS.search(value) is not None)
        raise ValueError(f"header {name!r} cannot be sent: a line break in its value")


_REQUEST_EVENTS: dict[str, h11.Request] = {}
_NAME_LINES: dict[str, bytes] = {}
_MAX_CACHED = 1024
"""Bound of each cache above: past it, names and methods are still checked, just not remembered."""
_END = h11.EndOfMessage()


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, driven by h11; `idle` while it waits in the pool."""

    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.transport: asyncio.Transport | None = None
        self.idle = False
        self.ended = False
        self.received = False
        """A byte of the current exchange's answer arrived (before it, a closed connection was only stale)."""
        self.unread = False
        """Bytes or the end arrived since h11 last said NEED_DATA."""
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def usable(self) -> bool:
        return not self.ended and self.transport is not None and not self.transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        if self.idle:
            # bytes nobody asked for: they could be read as the answer to the next request
            self.close()
            return
        self.received = True
        self.unread = True
        self.h11.receive_data(data)
        self._wake()

    def eof_received(self) -> bool | None:
        self._end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            if not self.idle:
                self.unread = True
                self.h11.receive_data(b"")
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        """Wait for bytes or the end of the connection."""
        self.unread = False
        assert self._loop is not None
        self._waiter = self._loop.create_future()
        await self._waiter

    def close(self) -> None:
        self.ended = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, method: str, target: Target, headers: Mapping[str, str], body: bytes) -> Answer:
        """Send one request and read its final response to the end; the connection is then reusable or closed."""
        # The request is written here (its framing is only Content-Length); h11 is told what it needs to
        # read the answer, the method, which keeps its checks of the request off the hot path.
        request_event = _request_event(method)
        head = [method.encode("ascii"), b" ", target.request_target, b" HTTP/1.1\r\nHost: ", target.host_header]
        names = _NAME_LINES
        for name, value in headers.items():
            line = names.get(name)
            if line is None:
                line = _name_line(name)
            if line:
                head += (line, value.encode("utf-8"))
        _check_values(headers)
        if body or method in _BODY_METHODS:
            head += (b"\r\nContent-Length: ", str(len(body)).encode("ascii"))
        head += (b"\r\n\r\n", body)
        self.idle = False
        self.received = False
        connection = self.h11
        connection.send(request_event)
        connection.send(_END)
        assert self.transport is not None
        self.transport.write(b"".join(head))
        status = 0
        kept: dict[str, str] = {}
        location: str | None = None
        body_bytes = 0
        excerpt = b""
        # Nothing of the answer can be there yet unless bytes arrived before the request (bytes arriving on
        # an idle connection retire it): wait first rather than ask h11 for what it cannot have.
        if not self.unread:
            await self._wait()
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError:
                if not self.received:
                    raise _StaleConnectionError from None
                raise
            if event is h11.NEED_DATA:
                await self._wait()
            elif type(event) is h11.Data:
                if body_bytes < RESPONSE_EXCERPT_BYTES:
                    excerpt += bytes(event.data[: RESPONSE_EXCERPT_BYTES - body_bytes])
                body_bytes += len(event.data)
                if body_bytes > MAX_RESPONSE_BODY:
                    self.close()
                    return Answer(status, kept, location, excerpt)
            elif type(event) is h11.Response:
                status = event.status_code
                for field, raw in event.headers.raw_items():
                    field = field.lower()
                    if field in _KEPT_NAMES:
                        kept[field.decode("ascii")] = raw.decode("latin-1")
                    elif field == b"location":
                        location = _text(raw)
            elif type(event) is h11.EndOfMessage:
                break
            elif type(event) is h11.ConnectionClosed:
                if not self.received:
                    raise _StaleConnectionError
                raise h11.RemoteProtocolError("the connection closed before the response ended")
            # h11.InformationalResponse (100 Continue, 103 Early Hints): not the answer, keep reading
        if (
            connection.our_state is h11.DONE
            and connection.their_state is h11.DONE
            and not connection.trailing_data[0]
            and self.usable
        ):
            connection.start_next_cycle()
            self.idle = True
            self.unread = False
        else:
            self.close()
        return Answer(status, kept, location, excerpt)


class ConnectionPool:
    """Idle connections per origin; each request takes one (or opens one) and holds it alone until it ends."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self.opened = 0
        """Connections opened so far (benchmarks and tests count reuse with it)."""

    async def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Send one request and read its whole final response; raises OSError, ValueError or h11 errors."""
        target = target_of(url)
        idle = self._idle.get(target.origin)
        while idle:
            connection = idle.pop()
            if not connection.usable:
                connection.close()
                continue
            try:
                return await self._exchange(connection, method, target, headers, body)
            except _StaleConnectionError:
                continue
        connection = await self._connect(target)
        try:
            return await self._exchange(connection, method, target, headers, body)
        except _StaleConnectionError:
            raise h11.RemoteProtocolError("the server closed the connection without answering") from None

    async def _exchange(
        self, connection: _Connection, method: str, target: Target, headers: Mapping[str, str], body: bytes
    ) -> Answer:
        try:
            answer = await connection.exchange(method, target, headers, body)
        except BaseException:
            connection.close()
            raise
        if connection.idle:
            idle = self._idle.setdefault(target.origin, [])
            if len(idle) < _MAX_IDLE_PER_ORIGIN:
                idle.append(connection)
            else:
                connection.close()
        return answer

    async def _connect(self, target: Target) -> _Connection:
        context = None
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        connection = _Connection()
        await asyncio.get_running_loop().create_connection(
            lambda: connection,
            target.host,
            target.port,
            ssl=context,
            server_hostname=target.host if context is not None else None,
        )
        self.opened += 1
        return connection

    async def aclose(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
