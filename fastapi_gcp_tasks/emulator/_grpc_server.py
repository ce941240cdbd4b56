"""A lean gRPC server for unary calls: HTTP/2 over cleartext, on the running asyncio event loop.

grpcio's Python server hands every call from its C core to a Python thread and back, which costs more
CPU than everything the emulator does with a task. Both Cloud Tasks and Cloud Scheduler are unary APIs,
so this module serves exactly that: HTTP/2 with prior knowledge (what gRPC clients speak without TLS),
flow control both ways, HPACK decoding of our own (`_hpack.py`), and the gRPC message framing and status
trailers. Handlers are the usual `grpc.GenericRpcHandler` objects. A synchronous behaviour runs inline on
the loop (the emulator's handlers do no I/O); a coroutine behaviour (grpc.aio style) runs as a task.

Memory is bounded per connection. Requests: the connection's flow-control window is its budget
(`CONNECTION_BUDGET`), and a byte of DATA goes back to the client only once the call that received it is
over (or its stream is discarded; padding, which is not kept, at once). Each stream reserves part of the
budget: its header list and the 64 KiB it may send before its gRPC length prefix (or content-length) says how
large the request is; then its window opens to that size if the budget has room, or stays shut until the
calls before it end. The reservations never exceed the budget, so every call let in can finish; a new stream
that does not fit is refused with REFUSED_STREAM. (grpcio's clients fail a refused call with UNAVAILABLE,
not retry it, which is why a large request waits rather than being refused.) Responses: a client that does
not read its answers stops being read (the transport's write buffer), and one that does not open its windows
gets no new calls answered while `_OUTBOUND_LIMIT` bytes of answers wait for them.

Not served: TLS, streaming methods, server push, request compression other than gzip and deflate.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import operator
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn
from urllib.parse import quote

import grpc

from fastapi_gcp_tasks.emulator._hpack import HeaderListTooLargeError, HPACKDecoder, HPACKError

__all__ = ["CONNECTION_BUDGET", "GrpcServer"]

logger = logging.getLogger("fastapi_gcp_tasks.emulator")

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME = struct.Struct(">HBBBL")  # 24-bit length as 16 + 8 bits, type, flags, stream id
_SETTING = struct.Struct(">HL")
_MESSAGE_PREFIX = struct.Struct(">BL")

_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = (
    range(10)
)
_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY_FLAG = 0x20

_NO_ERROR, _PROTOCOL_ERROR, _INTERNAL_ERROR, _FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
_STREAM_CLOSED, _FRAME_SIZE_ERROR, _REFUSED_STREAM, _COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x9
_ENHANCE_YOUR_CALM = 0xB

_SETTINGS_HEADER_TABLE_SIZE = 0x1
_SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
_SETTINGS_INITIAL_WINDOW_SIZE = 0x4
_SETTINGS_MAX_FRAME_SIZE = 0x5
_SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

_MAX_FRAME_SIZE = 16_384  # what we accept (the protocol's default)
_MAX_HEADER_LIST_SIZE = 65_536
_MAX_HEADER_BLOCK = 2 * _MAX_HEADER_LIST_SIZE  # HPACK never makes a block much larger than its header list
_MAX_DETAILS = 2_048  # UTF-8 bytes of grpc-message: clients refuse trailers over 8-16 KiB, and one frame holds it
_MAX_CONCURRENT_STREAMS = 1_000
_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
_DEFAULT_WINDOW = 65_535
_STREAM_WINDOW = 16 * 1024  # what a stream may send before its request says how large it is
_MAX_WINDOW = 2**31 - 1
CONNECTION_BUDGET = 64 * 1024 * 1024
"""Request bytes (DATA, and decoded header lists) one connection may make the server hold: two requests of
the largest size served, `_MAX_MESSAGE_BYTES`, fit at once."""
_MIN_BUDGET = 256 * 1024  # a stream opened before the client applies our SETTINGS may send 64 KiB: let several in
_MAX_PADDING = 256  # what padding may add to a DATA frame: its length byte and 255 bytes
_OUTBOUND_LIMIT = 16 * 1024 * 1024  # answers waiting for the client's window before new calls wait too
_HEADER_ENTRY_OVERHEAD = 32  # RFC 9113 6.5.2: a header field costs its name, its value and 32 bytes
_REQUIRED_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":path"})
_CONNECTION_SPECIFIC = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
_SPECIAL_FIELDS = _REQUIRED_PSEUDO_HEADERS | _CONNECTION_SPECIFIC | {":authority", "te", "content-length"}
"""Field names a request's validity depends on: a connection-specific one is always malformed there."""
_SETTINGS_ENABLE_PUSH = 0x2


_first = operator.itemgetter(0)


_VALID, _INVALID, _WITH_LENGTH = "valid", "invalid", "valid, with a content-length"


def _valid_field_names(names: tuple[str, ...]) -> str:
    """Whether a request's field names are well formed (RFC 9113 8.2, 8.3): the request pseudo-header fields,
    each once, all before the regular fields, `:method`, `:scheme` and `:path` among them; no uppercase,
    space, control, non-ASCII or colon in a regular name; no connection-specific field."""
    pseudo = 0
    for name in names:
        if name[:1] != ":":
            break
        pseudo += 1
    joined = "".join(names)
    special = _SPECIAL_FIELDS.intersection(names)
    if (
        len(special) == pseudo + ("te" in special) + ("content-length" in special)
        and joined.count(":") == pseudo
        and joined.isascii()
        and joined.isprintable()
        and joined.islower()
        and " " not in joined
        and special.issuperset(_REQUIRED_PSEUDO_HEADERS)
    ):
        return _WITH_LENGTH if "content-length" in special else _VALID
    return _INVALID


def _frame(kind: int, flags: int, stream_id: int, payload: bytes | memoryview = b"") -> bytes:
    size = len(payload)
    return _FRAME.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """RFC 7541 section 5.1: `value` with an N-bit prefix; `first` holds the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header as a literal without indexing and with a literal name: no encoder state is needed."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


# ":status: 200" is static table entry 8; "content-type" is entry 31, sent as a literal without indexing
_RESPONSE_HEADERS = b"\x88" + _hpack_int(31, 4) + _hpack_int(16, 7) + b"application/grpc"
_OK_TRAILERS = _literal(b"grpc-status", b"0")

# headers that are HTTP/2 or gRPC transport, not call metadata
_RESERVED = frozenset({"te", "content-type", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "user-agent"})


def _status_block(code: grpc.StatusCode, details: str, *, with_response_headers: bool) -> bytes:
    """Trailers (or a Trailers-Only response) carrying `code`; details are percent-encoded as gRPC says."""
    block = _RESPONSE_HEADERS if with_response_headers else b""
    block += _literal(b"grpc-status", str(code.value[0]).encode())
    if details:
        raw = details.encode("utf-8", "backslashreplace")  # a lone surrogate must not fail the answer
        if len(raw) > _MAX_DETAILS:
            raw = raw[:_MAX_DETAILS].decode("utf-8", "ignore").encode()  # whole characters only
        block += _literal(b"grpc-message", quote(raw, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~").encode())
    return block


class _AbortError(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _CallDetails(grpc.HandlerCallDetails):  # type: ignore[misc, unused-ignore]
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = method
        self.invocation_metadata = metadata


class _Context:
    """What a unary handler may ask of its call: abort it, read its metadata and peer."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], peer: str) -> None:
        self._metadata = metadata
        self._peer = peer

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        raise _AbortError(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer


class _AsyncContext(_Context):
    """The grpc.aio flavour: `abort()` is awaited."""

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:  # type: ignore[override]
        raise _AbortError(code, details)


class _Stream:
    __slots__ = (
        "allowed",
        "body",
        "declared",
        "ended",
        "fields",
        "floor",
        "header_bytes",
        "headers",
        "held",
        "outbound",
        "reserved",
        "send_window",
        "stream_id",
        "task",
        "trailers",
        "window",
    )

    def __init__(self, stream_id: int, send_window: int, window: int) -> None:
        self.stream_id = stream_id
        self.send_window = send_window
        self.window = window  # what the client may still send on this stream
        self.headers: list[tuple[str, str]] = []
        self.fields: dict[str, str] = {}  # the headers by name
        self.header_bytes = 0  # the decoded header list's size, held until the call is over
        self.body = bytearray()
        self.held = 0  # request bytes received and kept
        self.allowed = window  # request bytes the client may send in all: what we reserved for them
        self.declared = 0  # request bytes announced (content-length, gRPC length prefix); 0 while unknown
        self.reserved = 0  # this stream's share of the connection budget
        self.floor = 0  # the part of it reserved before the request said its size
        self.ended = False  # the client sent END_STREAM: the stream is half-closed (remote)
        self.outbound: bytes | memoryview = b""  # response DATA not yet sent, waiting for flow-control window
        self.trailers: bytes | None = None  # set once the response is ready
        self.task: asyncio.Task[None] | None = None


class _ConnectionError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class _Connection(asyncio.Protocol):
    """One client connection: frames in, calls dispatched, responses out."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server
        self._budget = server._connection_budget
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._preface_seen = False
        self._settings_seen = False
        self._decoder = HPACKDecoder(max_header_list_size=_MAX_HEADER_LIST_SIZE)
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._goaway_id: int | None = None  # the last-stream-id of the GOAWAY we sent: newer streams are ignored
        self._continuing: _Stream | None = None
        self._header_block = bytearray()
        self._continuing_ends_stream = False
        self._peer_max_frame = _MAX_FRAME_SIZE
        self._peer_initial_window = _DEFAULT_WINDOW
        self._initial_window = _DEFAULT_WINDOW  # a new stream's window, until the client has applied ours
        # The budget in two parts. The floor: what each stream may send when it opens (its first window) and its
        # header list; a stream that does not fit there is refused. The rest, for the windows of requests larger
        # than their first window, which wait their turn: the largest request served fits there alone, so the
        # oldest waiting one always gets in once those before it are over. Announced so, a client with modest
        # headers is never refused.
        self._largest = min(_MAX_MESSAGE_BYTES + 5, self._budget // 2)
        self._floor_limit = self._budget - self._largest - _MAX_PADDING
        self._floor = 0
        self._max_streams = min(_MAX_CONCURRENT_STREAMS, self._floor_limit // (_STREAM_WINDOW + 2048))
        self._send_window = _DEFAULT_WINDOW
        # request accounting: window + held + credit == budget at all times
        self._window = self._budget  # what the client may still send on the connection
        self._held = 0  # request bytes (DATA without padding) kept by streams
        self._credit = 0  # bytes released, not yet given back with a connection WINDOW_UPDATE
        self._credit_batch = self._budget // 4
        self._header_bytes = 0  # header lists held by streams
        self._reserved = 0  # sum of the streams' reservations
        self._blocked: dict[int, _Stream] = {}  # streams whose response waits for flow-control window
        self._deferred: collections.deque[_Stream] = collections.deque()  # complete requests not yet answered
        self._waiting: collections.deque[_Stream] = collections.deque()  # large requests waiting for the budget
        self._table_size_update = False  # the peer set SETTINGS_HEADER_TABLE_SIZE: signal ours (RFC 7541 4.2)
        self._out: list[bytes] = []
        self._closing = False
        self._peer = "unknown"

    # asyncio.Protocol -------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = f"ipv6:[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"ipv4:{peer[0]}:{peer[1]}"
        self._server._connections.add(self)
        settings = b"".join(
            _SETTING.pack(key, value)
            for key, value in (
                (_SETTINGS_MAX_CONCURRENT_STREAMS, self._max_streams),
                (_SETTINGS_INITIAL_WINDOW_SIZE, _STREAM_WINDOW),
                (_SETTINGS_MAX_HEADER_LIST_SIZE, _MAX_HEADER_LIST_SIZE),
            )
        )
        transport.write(
            _frame(_SETTINGS, 0, 0, settings)
            + _frame(_WINDOW_UPDATE, 0, 0, (self._budget - _DEFAULT_WINDOW).to_bytes(4, "big"))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._forget(self)
        for stream in self._streams.values():
            if stream.task is not None:
                stream.task.cancel()
        self._streams.clear()
        self._blocked.clear()
        self._deferred.clear()
        self._waiting.clear()
        self._held = self._header_bytes = self._reserved = self._floor = 0
        self._transport = None

    def pause_writing(self) -> None:
        # the client does not read what we send: read nothing more from it (PINGs, SETTINGS, calls) until it does
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        try:
            if not self._preface_seen:
                if len(buffer) < len(_PREFACE):
                    if not _PREFACE.startswith(bytes(buffer)):
                        raise _ConnectionError(_PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    return
                if buffer[: len(_PREFACE)] != _PREFACE:
                    raise _ConnectionError(_PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                del buffer[: len(_PREFACE)]
                self._preface_seen = True
            position = 0
            end = len(buffer)
            while end - position >= 9:
                high, low, kind, flags, stream_id = _FRAME.unpack_from(buffer, position)
                size = (high << 8) | low
                if size > _MAX_FRAME_SIZE:
                    raise _ConnectionError(_FRAME_SIZE_ERROR, f"a frame of {size} bytes is over {_MAX_FRAME_SIZE}")
                if end - position - 9 < size:
                    break
                payload = bytes(buffer[position + 9 : position + 9 + size])
                position += 9 + size
                self._frame_received(kind, flags, stream_id & 0x7FFFFFFF, payload)
            del buffer[:position]
        except _ConnectionError as exc:
            self._go_away(exc.code, str(exc))
        except Exception:
            logger.exception("emulator: HTTP/2 connection failed")
            self._go_away(_INTERNAL_ERROR, "internal error")
        self._write_out()

    # frames -----------------------------------------------------------------------------------------------------

    def _frame_received(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._continuing is not None and kind != _CONTINUATION:
            raise _ConnectionError(_PROTOCOL_ERROR, "expected a CONTINUATION frame")
        if not self._settings_seen:
            if kind != _SETTINGS or flags & _ACK:
                raise _ConnectionError(_PROTOCOL_ERROR, "the connection preface must end with a SETTINGS frame")
            self._settings_seen = True
        if kind == _DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == _HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == _CONTINUATION:
            if self._continuing is None or self._continuing.stream_id != stream_id:
                raise _ConnectionError(_PROTOCOL_ERROR, "unexpected CONTINUATION frame")
            self._header_block += payload
            if len(self._header_block) > _MAX_HEADER_BLOCK:
                raise _ConnectionError(_ENHANCE_YOUR_CALM, f"a header block over {_MAX_HEADER_BLOCK} bytes")
            if flags & _END_HEADERS:
                stream, self._continuing = self._continuing, None
                self._headers_complete(stream, bytes(self._header_block), self._continuing_ends_stream)
                self._header_block = bytearray()
        elif kind == _SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == _WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == _PING:
            if stream_id != 0:
                raise _ConnectionError(_PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise _ConnectionError(_FRAME_SIZE_ERROR, "PING of the wrong size")
            if not flags & _ACK:
                self._out.append(_frame(_PING, _ACK, 0, payload))
        elif kind == _RST_STREAM:
            if stream_id == 0:
                raise _ConnectionError(_PROTOCOL_ERROR, "RST_STREAM on stream 0")
            if len(payload) != 4:
                raise _ConnectionError(_FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
            if self._idle(stream_id):
                raise _ConnectionError(_PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
            reset = self._streams.get(stream_id)
            if reset is not None:
                self._discard(reset)
        elif kind == _GOAWAY:
            if stream_id != 0:
                raise _ConnectionError(_PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise _ConnectionError(_FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
            self._closing = True
            self._close_when_done()
        elif kind == _PUSH_PROMISE:
            raise _ConnectionError(_PROTOCOL_ERROR, "a client must not send PUSH_PROMISE")
        elif kind == _PRIORITY:
            if stream_id == 0:
                raise _ConnectionError(_PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                self._stream_error(stream_id, _FRAME_SIZE_ERROR, "PRIORITY of the wrong size")
            elif int.from_bytes(payload[:4], "big") & 0x7FFFFFFF == stream_id:
                self._stream_error(stream_id, _PROTOCOL_ERROR, "a stream cannot depend on itself")
        # frames of unknown types are ignored, as RFC 9113 requires

    def _idle(self, stream_id: int) -> bool:
        """RFC 9113 5.1: a stream the client has not opened yet (we open none: even ids are all idle)."""
        return stream_id > self._last_stream_id or not stream_id & 1

    def _stream_error(self, stream_id: int, code: int, reason: str) -> None:
        """Reset an open stream; ignore a closed one; an idle one cannot be reset, so the connection ends."""
        if self._idle(stream_id):
            raise _ConnectionError(code, f"{reason} (idle stream {stream_id})")
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._reset(stream, code)

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & _PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise _ConnectionError(_PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise _ConnectionError(_PROTOCOL_ERROR, f"HEADERS on stream {stream_id}")
        block = self._unpad(flags, payload)
        if flags & _PRIORITY_FLAG:
            if len(block) < 5:
                raise _ConnectionError(_FRAME_SIZE_ERROR, "HEADERS too short for its priority fields")
            depends_on_itself = int.from_bytes(block[:4], "big") & 0x7FFFFFFF == stream_id
            block = block[5:]
        else:
            depends_on_itself = False
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id <= self._last_stream_id:
                raise _ConnectionError(_STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
            self._last_stream_id = stream_id
            stream = _Stream(stream_id, self._peer_initial_window, self._initial_window)
            if self._goaway_id is not None and stream_id > self._goaway_id:
                pass  # above the last stream of our GOAWAY: its block is decoded (HPACK state), then ignored
            elif len(self._streams) >= self._max_streams or self._closing:
                self._out.append(_frame(_RST_STREAM, 0, stream_id, _REFUSED_STREAM.to_bytes(4, "big")))
            else:
                self._streams[stream_id] = stream
        if depends_on_itself and self._streams.get(stream_id) is stream:
            self._reset(stream, _PROTOCOL_ERROR)
        if flags & _END_HEADERS:
            self._headers_complete(stream, block, bool(flags & _END_STREAM))
        else:
            self._continuing = stream
            self._header_block = bytearray(block)
            self._continuing_ends_stream = bool(flags & _END_STREAM)

    def _headers_complete(self, stream: _Stream, block: bytes, ends_stream: bool) -> None:
        try:
            headers = self._decoder.decode(block)
        except HeaderListTooLargeError:
            headers = None  # the block was decoded (HPACK state is in step): refuse this request only
        except HPACKError as exc:
            raise _ConnectionError(_COMPRESSION_ERROR, f"undecodable header block: {exc}") from None
        if self._streams.get(stream.stream_id) is not stream:
            return  # refused, reset or ignored: only the HPACK state mattered
        if stream.headers:  # a second block: the request's trailers
            if stream.ended:
                self._reset(stream, _STREAM_CLOSED)
            elif not ends_stream or headers is None or any(name[0] == ":" for name, _ in headers):
                self._reset(stream, _PROTOCOL_ERROR)  # RFC 9113 8.1: trailers end the stream, carry no pseudo-headers
            else:
                self._end_of_request(stream)
            return
        if headers is None:
            self._fail(stream, grpc.StatusCode.RESOURCE_EXHAUSTED, f"headers over {_MAX_HEADER_LIST_SIZE} bytes")
            if not ends_stream:
                self._out.append(_frame(_RST_STREAM, 0, stream.stream_id, _NO_ERROR.to_bytes(4, "big")))
            return
        fields = dict(headers)
        length = self._declared_length(headers, fields)
        if length is None:
            self._reset(stream, _PROTOCOL_ERROR)
            return
        stream.headers = headers
        stream.fields = fields
        size = self._decoder.list_size
        floor = size + stream.allowed  # what it may send before we say more
        if self._floor + floor > self._floor_limit:
            self._reset(stream, _REFUSED_STREAM)  # the newest stream: the calls before it keep their place
            return
        stream.reserved = stream.floor = floor
        self._reserved += floor
        self._floor += floor
        stream.header_bytes = size
        self._header_bytes += size
        if length and not self._declare(stream, length):
            return
        if ends_stream:
            self._end_of_request(stream)

    def _declared_length(self, headers: list[tuple[str, str]], fields: dict[str, str]) -> int | None:
        """The content-length of a request (0 when it has none), or None when it is malformed (RFC 9113 8.2, 8.3).

        Clients send the same field names call after call: whether a list of names is valid is remembered."""
        names = tuple(map(_first, headers))
        verdict = self._server._valid_names.get(names)
        if verdict is None:
            verdict = self._server._remember_names(names)
        if verdict is _INVALID or ("te" in fields and fields["te"] != "trailers"):
            return None
        if verdict is _VALID:
            return 0
        length = fields["content-length"]
        if not length.isdigit() or any(value != length for name, value in headers if name == "content-length"):
            return None
        return int(length)

    def _declare(self, stream: _Stream, total: int) -> bool:
        """The request announced `total` bytes: answer it at once if it can never be held; open its window
        when the budget has room for it; or leave it waiting, its window shut, until calls before it end.
        False when the stream is over."""
        if total > self._largest:
            self._too_large(stream)
            return False
        stream.declared = total
        if total > stream.allowed:
            if self._waiting or not self._fits(total + _MAX_PADDING - stream.allowed):
                self._waiting.append(stream)  # first come, first served: a large call is not overtaken forever
            else:
                self._grant(stream)
        return True

    def _fits(self, extra: int) -> bool:
        return self._reserved - self._floor + extra <= self._budget - self._floor_limit

    def _grant(self, stream: _Stream) -> None:
        extra = stream.declared + _MAX_PADDING - stream.allowed  # room for the padding of its last frame
        self._reserved += extra
        stream.reserved += extra
        stream.allowed += extra
        stream.window += extra
        self._out.append(_frame(_WINDOW_UPDATE, 0, stream.stream_id, extra.to_bytes(4, "big")))

    def _admit_waiting(self) -> None:
        waiting = self._waiting
        while waiting:
            stream = waiting[0]
            if self._streams.get(stream.stream_id) is stream and not stream.ended:
                if not self._fits(stream.declared + _MAX_PADDING - stream.allowed):
                    return
                self._grant(stream)
            waiting.popleft()

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise _ConnectionError(_PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        if size > self._window:
            raise _ConnectionError(_FLOW_CONTROL_ERROR, f"DATA beyond the connection window ({self._window} bytes)")
        self._window -= size
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._idle(stream_id):
                raise _ConnectionError(_PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            self._give_back(size)  # a stream closed, reset or ignored: the data is counted and dropped
            return
        if stream.ended:
            self._give_back(size)
            self._reset(stream, _STREAM_CLOSED)
            return
        if size > stream.window:
            self._give_back(size)
            self._reset(stream, _FLOW_CONTROL_ERROR)
            return
        stream.window -= size
        chunk = self._unpad(flags, payload)
        if len(chunk) != size:  # padding is not kept: both windows get it back at once
            padding = size - len(chunk)
            stream.window += padding
            self._out.append(_frame(_WINDOW_UPDATE, 0, stream_id, padding.to_bytes(4, "big")))
            self._give_back(padding)
        stream.held += len(chunk)
        self._held += len(chunk)
        body = stream.body
        known = len(body) >= 5
        body += chunk
        if not known and len(body) >= 5:
            total = 5 + _MESSAGE_PREFIX.unpack_from(body)[1]
            if total > stream.allowed:
                if total > stream.declared and not self._declare(stream, total):
                    return
            elif total > stream.declared:
                stream.declared = total  # within its first window: nothing to reserve
        if flags & _END_STREAM:
            self._end_of_request(stream)

    def _too_large(self, stream: _Stream) -> None:
        """Answer a request that can never be held (refusing it would only make the client send it again)."""
        limit = self._largest - 5
        self._fail(stream, grpc.StatusCode.RESOURCE_EXHAUSTED, f"the request is larger than {limit} bytes")
        self._out.append(_frame(_RST_STREAM, 0, stream.stream_id, _NO_ERROR.to_bytes(4, "big")))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise _ConnectionError(_PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & _ACK:
            if payload:
                raise _ConnectionError(_FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            self._initial_window = _STREAM_WINDOW  # our SETTINGS apply to the streams opened from now on
            return
        if len(payload) % 6:
            raise _ConnectionError(_FRAME_SIZE_ERROR, "SETTINGS of a size not a multiple of 6")
        for offset in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, offset)
            if key == _SETTINGS_INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise _ConnectionError(_FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > _MAX_WINDOW:
                        raise _ConnectionError(_FLOW_CONTROL_ERROR, "a stream window above 2^31-1")
            elif key == _SETTINGS_MAX_FRAME_SIZE:
                if not _MAX_FRAME_SIZE <= value <= 16_777_215:
                    raise _ConnectionError(_PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self._peer_max_frame = value
            elif key == _SETTINGS_ENABLE_PUSH:
                if value > 1:
                    raise _ConnectionError(_PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH neither 0 nor 1")
            elif key == _SETTINGS_HEADER_TABLE_SIZE:
                self._table_size_update = True  # responses never use the dynamic table, but must say so
        self._out.append(_frame(_SETTINGS, _ACK, 0))
        self._send_blocked()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(_FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise _ConnectionError(_PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > _MAX_WINDOW:
                raise _ConnectionError(_FLOW_CONTROL_ERROR, "connection window above 2^31-1")
        else:
            if self._idle(stream_id):
                raise _ConnectionError(_PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            stream = self._streams.get(stream_id)
            if stream is None:
                return  # closed: an update may cross our END_STREAM or RST_STREAM
            if increment == 0:
                self._reset(stream, _PROTOCOL_ERROR)
                return
            stream.send_window += increment
            if stream.send_window > _MAX_WINDOW:
                self._reset(stream, _FLOW_CONTROL_ERROR)
                return
        self._send_blocked()

    # request accounting -----------------------------------------------------------------------------------------

    def _give_back(self, size: int) -> None:
        """Return `size` bytes of connection window, in batches, but never leave an admitted call short of it."""
        self._credit += size
        if self._credit >= self._credit_batch or self._credit > self._budget - self._reserved:
            self._out.append(_frame(_WINDOW_UPDATE, 0, 0, self._credit.to_bytes(4, "big")))
            self._window += self._credit
            self._credit = 0

    def _release(self, stream: _Stream) -> None:
        """The call no longer needs its request: its bytes leave the budget, its DATA goes back to the window."""
        if not stream.reserved:
            return  # released already, or never admitted
        self._reserved -= stream.reserved
        self._floor -= stream.floor
        self._header_bytes -= stream.header_bytes
        held = stream.held
        stream.reserved = stream.floor = stream.header_bytes = stream.held = 0
        if held:
            self._held -= held
            self._credit += held
            if self._credit >= self._credit_batch or self._credit > self._budget - self._reserved:
                self._give_back(0)
        if self._waiting:
            self._admit_waiting()

    def buffered(self) -> tuple[int, int]:
        """(request bytes held, response bytes not yet taken by the client) on this connection."""
        waiting = sum(len(stream.outbound) for stream in self._blocked.values())
        if self._transport is not None:
            waiting += self._transport.get_write_buffer_size()
        return self._held + self._header_bytes, waiting

    # calls ------------------------------------------------------------------------------------------------------

    def _end_of_request(self, stream: _Stream) -> None:
        stream.ended = True
        if self._deferred or (self._blocked and self._waiting_output() > _OUTBOUND_LIMIT):
            self._deferred.append(stream)  # answers pile up unread: this call waits, its request stays held
        else:
            self._request_complete(stream)

    def _waiting_output(self) -> int:
        return sum(len(stream.outbound) for stream in self._blocked.values())

    def _answer_deferred(self) -> None:
        deferred = self._deferred
        while deferred and not (self._blocked and self._waiting_output() > _OUTBOUND_LIMIT):
            stream = deferred.popleft()
            if self._streams.get(stream.stream_id) is stream:
                self._request_complete(stream)

    def _request_complete(self, stream: _Stream) -> None:
        try:
            self._dispatch(stream)
        finally:
            if stream.task is None:
                self._release(stream)

    def _dispatch(self, stream: _Stream) -> None:
        headers = stream.fields
        if "content-length" in headers and int(headers["content-length"]) != len(stream.body):
            self._reset(stream, _PROTOCOL_ERROR)  # RFC 9113 8.1.1: a body that is not its content-length
            return
        method = headers.get(":method")
        path = headers.get(":path", "")
        content_type = headers.get("content-type", "")
        if method != "POST":
            self._http_error(stream, b"405")
            return
        if not content_type.startswith("application/grpc"):
            self._http_error(stream, b"415")
            return
        metadata = tuple((name, value) for name, value in stream.headers if name[0] != ":" and name not in _RESERVED)
        handler = self._server._handler(path, metadata)
        if handler is None:
            self._fail(stream, grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {path}")
            return
        try:
            payload = self._message(stream.body, headers.get("grpc-encoding", "identity"))
        except _AbortError as exc:
            self._fail(stream, exc.code, exc.details)
            return
        if self._server._is_coroutine(handler.unary_unary):
            stream.task = asyncio.get_running_loop().create_task(
                self._serve_async(stream, handler, payload, _AsyncContext(metadata, self._peer), path)
            )
            return
        with self._answering(stream, path):
            request = payload if handler.request_deserializer is None else handler.request_deserializer(payload)
            self._answer(stream, handler, handler.unary_unary(request, _Context(metadata, self._peer)))

    async def _serve_async(
        self, stream: _Stream, handler: Any, payload: bytes, context: _AsyncContext, path: str
    ) -> None:
        try:
            with self._answering(stream, path):
                request = payload if handler.request_deserializer is None else handler.request_deserializer(payload)
                self._answer(stream, handler, await handler.unary_unary(request, context))
        finally:
            stream.task = None
            self._release(stream)
        self._write_out()

    @contextlib.contextmanager
    def _answering(self, stream: _Stream, path: str) -> Iterator[None]:
        """Turn what a handler raises into the call's status: its abort, or UNKNOWN as grpcio answers."""
        try:
            yield
        except _AbortError as exc:
            self._fail(stream, exc.code, exc.details)
        except Exception as exc:
            logger.exception("emulator: %s failed", path)
            self._fail(stream, grpc.StatusCode.UNKNOWN, f"Exception calling application: {exc}")

    @staticmethod
    def _message(body: bytearray, encoding: str) -> bytes:
        """The one request message of a unary call, decompressed."""
        if len(body) < 5:
            raise _AbortError(grpc.StatusCode.INTERNAL, "the request carries no message")
        compressed, size = _MESSAGE_PREFIX.unpack_from(body)
        if len(body) != 5 + size:
            raise _AbortError(grpc.StatusCode.INTERNAL, "a unary request must carry exactly one message")
        message = bytes(body[5:])
        if not compressed:
            return message
        if encoding in ("gzip", "deflate"):
            inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)  # the gzip or the zlib wrapper
            try:
                message = inflater.decompress(message, _MAX_MESSAGE_BYTES + 1)  # the limit holds after inflation too
            except zlib.error:
                raise _AbortError(grpc.StatusCode.INTERNAL, f"the request is not valid {encoding} data") from None
            if len(message) > _MAX_MESSAGE_BYTES:
                raise _AbortError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"the request is larger than {_MAX_MESSAGE_BYTES} bytes"
                )
            if not inflater.eof or inflater.unused_data:
                raise _AbortError(grpc.StatusCode.INTERNAL, f"the request is not valid {encoding} data")
            return message
        if encoding == "identity":
            raise _AbortError(grpc.StatusCode.INTERNAL, "a compressed message without grpc-encoding")
        raise _AbortError(grpc.StatusCode.UNIMPLEMENTED, f"request compression {encoding!r} is not supported")

    def _answer(self, stream: _Stream, handler: Any, response: Any) -> None:
        message = response if handler.response_serializer is None else handler.response_serializer(response)
        if self._streams.get(stream.stream_id) is not stream:
            return  # reset by the client meanwhile
        stream.outbound = _MESSAGE_PREFIX.pack(0, len(message)) + message
        self._out.append(self._headers(_END_HEADERS, stream.stream_id, _RESPONSE_HEADERS))
        self._finish(stream, _OK_TRAILERS, trailers_only=False)

    def _fail(self, stream: _Stream, code: grpc.StatusCode, details: str) -> None:
        self._finish(stream, _status_block(code, details, with_response_headers=True), trailers_only=True)

    def _http_error(self, stream: _Stream, status: bytes) -> None:
        block = _hpack_int(8, 4) + _hpack_int(len(status), 7) + status  # ":status" has static index 8
        self._finish(stream, block, trailers_only=True)

    # output -----------------------------------------------------------------------------------------------------

    def _headers(self, flags: int, stream_id: int, block: bytes) -> bytes:
        if self._table_size_update:
            self._table_size_update = False
            block = b"\x20" + block  # a dynamic table size update to 0, allowed under any SETTINGS_HEADER_TABLE_SIZE
        return _frame(_HEADERS, flags, stream_id, block)

    def _finish(self, stream: _Stream, trailers: bytes, *, trailers_only: bool) -> None:
        if self._streams.get(stream.stream_id) is not stream:
            return  # reset by the client meanwhile
        stream.trailers = trailers
        stream.body = bytearray()
        if trailers_only:
            stream.outbound = b""
        self._send(stream)

    def _send(self, stream: _Stream) -> None:
        """Send what flow control allows of the response DATA, then the trailers."""
        out = self._out
        pending = memoryview(stream.outbound)  # slices without copying the rest of a large response
        while pending:
            allowed = min(len(pending), self._send_window, stream.send_window, self._peer_max_frame)
            if allowed <= 0:
                stream.outbound = pending
                self._blocked[stream.stream_id] = stream
                return
            out.append(_frame(_DATA, 0, stream.stream_id, pending[:allowed]))
            pending = pending[allowed:]
            self._send_window -= allowed
            stream.send_window -= allowed
        stream.outbound = b""
        assert stream.trailers is not None
        out.append(self._headers(_END_HEADERS | _END_STREAM, stream.stream_id, stream.trailers))
        self._close_stream(stream)

    def _send_blocked(self) -> None:
        if self._blocked:
            blocked, self._blocked = self._blocked, {}
            for stream in blocked.values():
                if self._streams.get(stream.stream_id) is stream:
                    self._send(stream)
        if self._deferred:
            self._answer_deferred()

    def _reset(self, stream: _Stream, code: int) -> None:
        """A stream error: RST_STREAM with `code`, and the stream is forgotten."""
        self._out.append(_frame(_RST_STREAM, 0, stream.stream_id, code.to_bytes(4, "big")))
        self._discard(stream)

    def _discard(self, stream: _Stream) -> None:
        stream.body = bytearray()
        if stream.task is not None:
            stream.task.cancel()  # its finally releases the request
        self._close_stream(stream)

    def _close_stream(self, stream: _Stream) -> None:
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
        self._blocked.pop(stream.stream_id, None)
        if stream.task is None:
            self._release(stream)  # a running coroutine releases it when it ends
        if self._closing:
            self._close_when_done()

    def _goaway_frame(self, code: int, reason: str = "") -> bytes:
        if self._goaway_id is None:
            self._goaway_id = self._last_stream_id  # fixed once sent: a later GOAWAY may not raise it
        return _frame(_GOAWAY, 0, 0, self._goaway_id.to_bytes(4, "big") + code.to_bytes(4, "big") + reason.encode())

    def _go_away(self, code: int, reason: str) -> None:
        """End the connection at once, telling the client why (a connection error)."""
        if self._transport is None:
            return
        self._out.append(self._goaway_frame(code, reason))
        self._write_out()
        self._transport.close()

    def _close_when_done(self) -> None:
        if not self._streams and self._transport is not None:
            self._write_out()
            self._transport.close()

    def _write_out(self) -> None:
        if self._out and self._transport is not None:
            out, self._out = self._out, []
            self._transport.write(b"".join(out))

    def shut_down(self) -> None:
        """Refuse new calls (GOAWAY) and close once the calls in flight are answered."""
        if self._transport is None or self._closing:
            return
        self._closing = True
        self._out.append(self._goaway_frame(_NO_ERROR))
        self._write_out()
        self._close_when_done()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class GrpcServer:
    """Serves unary methods of `grpc.GenericRpcHandler`s over HTTP/2 on the running loop."""

    def __init__(
        self, handlers: Iterable[grpc.GenericRpcHandler], *, connection_budget: int = CONNECTION_BUDGET
    ) -> None:
        if connection_budget < _MIN_BUDGET:
            raise ValueError(f"connection_budget must be at least {_MIN_BUDGET} bytes, got {connection_budget}")
        self._connection_budget = connection_budget
        self._handlers: Sequence[grpc.GenericRpcHandler] = tuple(handlers)
        self._methods: dict[str, Any] = {}
        self._valid_names: dict[tuple[str, ...], str] = {}
        self._coroutines: dict[Any, bool] = {}
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._all_closed: asyncio.Event | None = None

    def _handler(self, path: str, metadata: tuple[tuple[str, str], ...]) -> Any:
        if path in self._methods:
            return self._methods[path]
        found = None
        for generic in self._handlers:
            found = generic.service(_CallDetails(path, metadata))
            if found is not None:
                break
        if found is not None and found.unary_unary is None:
            found = None  # streaming methods are not served
        if len(self._methods) < 1_000:
            self._methods[path] = found
        return found

    def buffered(self) -> tuple[int, int]:
        """(request bytes held, response bytes the clients have not taken yet), over all connections.

        Call it on the server's loop. Each connection holds at most its budget of request bytes."""
        held = waiting = 0
        for connection in self._connections:
            request, response = connection.buffered()
            held += request
            waiting += response
        return held, waiting

    def _remember_names(self, names: tuple[str, ...]) -> str:
        valid = _valid_field_names(names)
        if len(self._valid_names) >= 1_000:
            self._valid_names.clear()  # a client that varies its names costs a check a call, never memory
        self._valid_names[names] = valid
        return valid

    def _forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        if not self._connections and self._all_closed is not None:
            self._all_closed.set()

    def _is_coroutine(self, behaviour: Any) -> bool:
        known = self._coroutines.get(behaviour)
        if known is None:
            known = self._coroutines[behaviour] = asyncio.iscoroutinefunction(behaviour)
        return known

    async def start(self, host: str, port: int) -> int:
        """Listen on `host:port` (0 picks a free port) and return the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host.strip("[]"), port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace: float | None = 0.5) -> None:
        """Stop listening, let calls in flight finish for up to `grace` seconds, then close every connection."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for connection in list(self._connections):
            connection.shut_down()
        if self._connections:
            self._all_closed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace or 0.0)
        for connection in list(self._connections):
            connection.abort()
        await server.wait_closed()
