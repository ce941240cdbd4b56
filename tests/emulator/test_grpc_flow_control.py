"""What one HTTP/2 connection may make the emulator's gRPC server hold, and the RFC 9113 rules it enforces.

A hand-framed peer (`Peer`) sends what no well-behaved client sends: bodies that never end, DATA beyond the
windows, frames on idle streams. Every wait is on a frame from the server: a PING is answered after every
frame sent before it, so its acknowledgement says the server has seen them all.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import hpack
import pytest

from fastapi_gcp_tasks.emulator._grpc_server import _OUTBOUND_LIMIT, CONNECTION_BUDGET, GrpcServer

_SERVICE = "test.Flow"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE = range(9)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 0, 1, 3, 5, 6, 7
MAX_WINDOW = 2**31 - 1
KIB = 1024


# the server ---------------------------------------------------------------------------------------------------------


def _size(request: bytes, context: grpc.ServicerContext) -> bytes:
    return str(len(request)).encode()


def _big(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"x" * int(request)


class Server:
    """A `GrpcServer` on a loop in a background thread, with a `Gate` method that answers when `open_gate()`."""

    def __init__(self, budget: int = CONNECTION_BUDGET) -> None:
        self.loop = asyncio.new_event_loop()
        self.gate = asyncio.Event()

        async def gate(request: bytes, context: Any) -> bytes:
            await self.gate.wait()
            return b"opened"

        methods: dict[str, Callable[..., Any]] = {"Size": _size, "Big": _big, "Gate": gate}
        handler = grpc.method_handlers_generic_handler(
            _SERVICE, {name: grpc.unary_unary_rpc_method_handler(method) for name, method in methods.items()}
        )
        self.server = GrpcServer([handler], connection_budget=budget)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port: int = self.run(self.server.start("127.0.0.1", 0))

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def buffered(self) -> tuple[int, int]:
        async def read() -> tuple[int, int]:
            return self.server.buffered()

        result: tuple[int, int] = self.run(read())
        return result

    def open_gate(self) -> None:
        self.loop.call_soon_threadsafe(self.gate.set)

    def close(self) -> None:
        self.run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


@pytest.fixture
def small() -> Iterator[Server]:
    """A server whose connections may hold 1 MiB."""
    running = Server(budget=1024 * KIB)
    yield running
    running.close()


# a hand-framed peer -------------------------------------------------------------------------------------------------

Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload


def message(payload: bytes) -> bytes:
    return struct.pack(">BL", 0, len(payload)) + payload


def prefix(length: int) -> bytes:
    """The gRPC prefix of a message of `length` bytes, sent without the message."""
    return struct.pack(">BL", 0, length)


class Peer:
    """One HTTP/2 connection framed by hand; it keeps every frame the server sends."""

    def __init__(self, port: int, *, settings: bytes | None = b"") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.encoder = hpack.Encoder()
        self.frames: list[Frame] = []
        self.pending = b""
        self.pings = 0
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        if settings is not None:
            self.send(SETTINGS, 0, 0, settings)

    def send(self, kind: int, flags: int, stream_id: int, payload: bytes = b"") -> None:
        self.sock.sendall(
            struct.pack(">L", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">L", stream_id) + payload
        )

    def headers(
        self, stream_id: int, method: str = "Size", *, end_stream: bool = False, extra: tuple[tuple[str, str], ...] = ()
    ) -> None:
        fields = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", f"/{_SERVICE}/{method}"),
            (":authority", "test"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *extra,
        ]
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        self.send(HEADERS, flags, stream_id, self.encoder.encode(fields))

    def data(self, stream_id: int, payload: bytes, *, end_stream: bool = False) -> None:
        """`payload` in frames of at most 16 KiB, the last one ending the stream when asked."""
        chunks = [payload[start : start + 16 * KIB] for start in range(0, len(payload), 16 * KIB)] or [b""]
        for index, chunk in enumerate(chunks):
            self.send(DATA, END_STREAM if end_stream and index == len(chunks) - 1 else 0, stream_id, chunk)

    def read(self) -> Frame:
        while len(self.pending) < 9 or len(self.pending) < 9 + int.from_bytes(self.pending[:3], "big"):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.pending += chunk
        size = int.from_bytes(self.pending[:3], "big")
        kind, flags = self.pending[3], self.pending[4]
        stream_id = int.from_bytes(self.pending[5:9], "big") & MAX_WINDOW
        frame = (kind, flags, stream_id, self.pending[9 : 9 + size])
        self.pending = self.pending[9 + size :]
        self.frames.append(frame)
        return frame

    def until(self, wanted: Callable[[Frame], bool]) -> Frame:
        while True:
            frame = self.read()
            if wanted(frame):
                return frame

    def sync(self) -> None:
        """Return once the server has processed every frame sent so far."""
        self.pings += 1
        token = self.pings.to_bytes(8, "big")
        self.send(PING, 0, 0, token)
        self.until(lambda frame: frame[0] == PING and bool(frame[1] & ACK) and frame[3] == token)

    def goaway(self) -> tuple[int, int]:
        """(last stream id, error code) of the server's GOAWAY."""
        payload = self.until(lambda frame: frame[0] == GOAWAY)[3]
        return int.from_bytes(payload[:4], "big"), int.from_bytes(payload[4:8], "big")

    def reset_code(self, stream_id: int) -> int:
        payload = self.until(lambda frame: frame[0] == RST_STREAM and frame[2] == stream_id)[3]
        return int.from_bytes(payload, "big")

    def resets(self) -> dict[int, int]:
        return {
            stream_id: int.from_bytes(payload, "big")
            for kind, _, stream_id, payload in self.frames
            if kind == RST_STREAM
        }

    def answer(self, stream_id: int) -> bytes:
        """The DATA of a stream's response, once its trailers arrived."""
        self.until(lambda frame: frame[0] == HEADERS and frame[2] == stream_id and bool(frame[1] & END_STREAM))
        return b"".join(payload for kind, _, sid, payload in self.frames if kind == DATA and sid == stream_id)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def open_peer(server: Server, **options: Any) -> Peer:
        peers.append(Peer(server.port, **options))
        return peers[-1]

    yield open_peer
    for peer in peers:
        peer.close()


# the budget ---------------------------------------------------------------------------------------------------------


def _window_updates(peer: Peer) -> list[int]:
    """The streams the server opened a window on, in order."""
    return [stream_id for kind, _, stream_id, _ in peer.frames if kind == WINDOW_UPDATE and stream_id]


def test_a_large_request_waits_for_the_budget_and_every_call_finishes(
    small: Server, connect: Callable[..., Peer]
) -> None:
    peer = connect(small)
    # half of 1 MiB is for the windows of large requests: two of 300 KiB fit there at once
    for stream_id in (1, 3, 5, 7):
        peer.headers(stream_id)
        peer.data(stream_id, prefix(300 * KIB) + bytes(50 * KIB if stream_id < 5 else 10))
    peer.sync()
    assert peer.resets() == {}
    assert _window_updates(peer) == [1, 3]  # the others may send no more than their first window until then
    held, _ = small.buffered()
    assert 2 * (50 * KIB + 5) < held <= 1024 * KIB
    sent = {1: 50 * KIB + 5, 3: 50 * KIB + 5, 5: 15, 7: 15}
    for finished, admitted in ((1, [1, 3, 5]), (3, [1, 3, 5, 7]), (5, [1, 3, 5, 7]), (7, [1, 3, 5, 7])):
        peer.data(finished, bytes(300 * KIB + 5 - sent[finished]), end_stream=True)
        assert peer.answer(finished) == message(str(300 * KIB).encode())
        peer.sync()
        assert _window_updates(peer) == admitted  # each call over makes room for the next one waiting
    assert small.buffered() == (0, 0)


def test_a_new_stream_that_does_not_fit_is_refused(small: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(small)
    opened = list(range(1, 41, 2))
    for stream_id in opened:
        peer.headers(stream_id)
    peer.sync()
    refused = sorted(peer.resets())
    assert set(peer.resets().values()) == {REFUSED_STREAM}
    # each may send 64 KiB (the client never acknowledged our SETTINGS) and half the budget is kept for
    # the largest request: seven streams fit, the newest others are refused
    assert refused == opened[7:]
    held, _ = small.buffered()
    assert 0 < held <= 1024 * KIB
    peer.data(1, message(b"abc"), end_stream=True)  # the calls let in are served
    assert peer.answer(1) == message(b"3")
    peer.headers(41)  # and there is room for one more
    peer.data(41, message(b"abcd"), end_stream=True)
    assert peer.answer(41) == message(b"4")


def test_many_unfinished_uploads_on_the_default_budget(server: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(server)
    opened = list(range(1, 2 * 600, 2))
    for stream_id in opened:  # 600 streams announcing 30 MiB each, never sent
        peer.headers(stream_id)
        peer.data(stream_id, prefix(30 * 1024 * KIB) + bytes(1_000))
    peer.sync()
    assert _window_updates(peer) == [1]  # one is let in; the others wait, each with its first window
    refused = sorted(peer.resets())
    assert set(peer.resets().values()) == {REFUSED_STREAM}
    assert refused == opened[len(opened) - len(refused) :]  # the newest ones
    assert 400 < len(opened) - len(refused) < 600
    held, _ = server.buffered()
    assert (len(opened) - len(refused)) * 1_005 <= held <= CONNECTION_BUDGET


def test_large_requests_are_let_in_first_come_first_served(small: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(small)
    sizes = {1: 450 * KIB, 3: 450 * KIB, 5: 450 * KIB, 7: 100 * KIB}
    for stream_id, size in sizes.items():
        peer.headers(stream_id)
        peer.data(stream_id, prefix(size))
    peer.sync()
    assert _window_updates(peer) == [1]  # the last one would fit, but the two before it came first
    for finished, admitted in ((1, [1, 3]), (3, [1, 3, 5, 7]), (5, [1, 3, 5, 7]), (7, [1, 3, 5, 7])):
        peer.data(finished, bytes(sizes[finished]), end_stream=True)
        assert peer.answer(finished) == message(str(sizes[finished]).encode())
        peer.sync()
        assert _window_updates(peer) == admitted


def test_a_request_larger_than_the_budget_is_resource_exhausted_not_refused(
    small: Server, connect: Callable[..., Peer]
) -> None:
    peer = connect(small)
    peer.headers(1)
    peer.data(1, prefix(2048 * KIB))  # refusing it would only make the client send it again
    frame = peer.until(lambda frame: frame[0] == HEADERS and frame[2] == 1)
    fields = dict(hpack.Decoder().decode(frame[3], raw=True))
    assert fields[b"grpc-status"] == b"8"  # RESOURCE_EXHAUSTED, in a Trailers-Only answer
    assert fields[b"grpc-message"].startswith(b"the request is larger than ")
    assert peer.reset_code(1) == NO_ERROR  # the rest of it is not wanted
    assert small.buffered() == (0, 0)


def test_request_bytes_held_by_a_running_call_count_until_it_ends(small: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(small)
    peer.headers(1, "Gate")
    peer.data(1, message(bytes(500 * KIB)), end_stream=True)
    peer.sync()
    assert small.buffered()[0] > 500 * KIB  # the call runs: its request is not given back yet
    peer.headers(3)
    peer.data(3, prefix(400 * KIB))
    peer.sync()
    assert (_window_updates(peer), peer.resets()) == ([1], {})  # stream 3 waits
    small.open_gate()
    assert peer.answer(1) == message(b"opened")
    peer.sync()
    assert _window_updates(peer) == [1, 3]
    peer.data(3, bytes(400 * KIB), end_stream=True)
    assert peer.answer(3) == message(str(400 * KIB).encode())
    peer.sync()
    assert small.buffered() == (0, 0)


# flow control -------------------------------------------------------------------------------------------------------


def _shrink_the_connection_window(server: Server, peer: Peer, left: int) -> None:
    """Leave `left` bytes of connection window. No client gets there without sending beyond a stream's
    window first (the streams' windows always fit in the connection's), so the state is set by hand."""
    peer.sync()

    async def shrink() -> None:
        (connection,) = server.server._connections
        connection._window = left

    server.run(shrink())


def test_data_beyond_the_connection_window_is_a_connection_flow_control_error(
    server: Server, connect: Callable[..., Peer]
) -> None:
    peer = connect(server)
    _open_stream(peer)
    _shrink_the_connection_window(server, peer, 100)
    peer.send(DATA, 0, 1, bytes(101))
    assert peer.goaway()[1] == FLOW_CONTROL_ERROR


def test_data_within_the_connection_window_is_accepted(server: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(server)
    _open_stream(peer)
    _shrink_the_connection_window(server, peer, 100)
    peer.send(DATA, 0, 1, bytes(100))
    peer.sync()
    assert peer.resets() == {}


def test_data_beyond_a_stream_window_resets_that_stream(server: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(server)
    peer.headers(1)
    peer.data(1, message(b"12345"))  # a small request: its window stays what SETTINGS announced
    peer.data(1, bytes(65_535 - 10))  # what is left of it
    peer.sync()
    assert peer.resets() == {}
    peer.send(DATA, 0, 1, b"!")
    assert peer.reset_code(1) == FLOW_CONTROL_ERROR
    peer.sync()  # the connection lives on
    assert server.buffered() == (0, 0)


def test_answers_the_client_does_not_take_stop_new_calls(server: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(server, settings=struct.pack(">HL", 0x4, 0))  # SETTINGS_INITIAL_WINDOW_SIZE 0: no DATA for us
    answer = 1024 * KIB
    count = _OUTBOUND_LIMIT // answer + 8
    for index in range(count):
        peer.headers(2 * index + 1, "Big")
        peer.data(2 * index + 1, message(str(answer).encode()), end_stream=True)
    peer.sync()
    held, waiting = server.buffered()
    assert _OUTBOUND_LIMIT < waiting <= _OUTBOUND_LIMIT + answer + 64 * KIB  # answers wait, the rest wait unanswered
    assert held > 0  # the calls not answered yet keep their requests
    peer.send(SETTINGS, 0, 0, struct.pack(">HL", 0x4, MAX_WINDOW))
    peer.send(WINDOW_UPDATE, 0, 0, (MAX_WINDOW - 65_535).to_bytes(4, "big"))
    for index in range(count):
        assert len(peer.answer(2 * index + 1)) == 5 + answer
    peer.sync()
    assert server.buffered() == (0, 0)


# RFC 9113 -----------------------------------------------------------------------------------------------------------


def _open_stream(peer: Peer) -> None:
    """Stream 1, open (the request not finished)."""
    peer.headers(1)
    peer.data(1, prefix(10))


def _on_an_open_stream(peer: Peer, *frames: tuple[int, int, int, bytes]) -> None:
    _open_stream(peer)
    for frame in frames:
        peer.send(*frame)


@pytest.mark.parametrize(
    ("send", "code"),
    [
        pytest.param(lambda peer: peer.send(RST_STREAM, 0, 1, bytes(4)), PROTOCOL_ERROR, id="RST_STREAM-idle"),
        pytest.param(lambda peer: peer.send(RST_STREAM, 0, 2, bytes(4)), PROTOCOL_ERROR, id="RST_STREAM-even"),
        pytest.param(
            lambda peer: peer.send(WINDOW_UPDATE, 0, 3, (1).to_bytes(4, "big")), PROTOCOL_ERROR, id="WINDOW_UPDATE-idle"
        ),
        pytest.param(lambda peer: peer.send(WINDOW_UPDATE, 0, 0, bytes(4)), PROTOCOL_ERROR, id="WINDOW_UPDATE-0"),
        pytest.param(
            lambda peer: peer.send(WINDOW_UPDATE, 0, 0, MAX_WINDOW.to_bytes(4, "big")),
            FLOW_CONTROL_ERROR,
            id="connection-window-over-2^31-1",
        ),
        pytest.param(
            lambda peer: _on_an_open_stream(
                peer,
                (WINDOW_UPDATE, 0, 1, (MAX_WINDOW - 65_535).to_bytes(4, "big")),
                (SETTINGS, 0, 0, struct.pack(">HL", 0x4, 65_536)),
            ),
            FLOW_CONTROL_ERROR,
            id="stream-window-over-2^31-1-by-SETTINGS",
        ),
        pytest.param(lambda peer: peer.send(DATA, 0, 5, b"x"), PROTOCOL_ERROR, id="DATA-idle"),
        pytest.param(lambda peer: peer.send(PING, 0, 0, bytes(7)), FRAME_SIZE_ERROR, id="PING-size"),
        pytest.param(lambda peer: peer.send(PING, 0, 1, bytes(8)), PROTOCOL_ERROR, id="PING-stream"),
        pytest.param(
            lambda peer: _on_an_open_stream(peer, (RST_STREAM, 0, 1, bytes(3))),
            FRAME_SIZE_ERROR,
            id="RST_STREAM-size",
        ),
        pytest.param(lambda peer: peer.send(SETTINGS, ACK, 0, bytes(6)), FRAME_SIZE_ERROR, id="SETTINGS-ACK-payload"),
        pytest.param(
            lambda peer: peer.send(SETTINGS, 0, 0, struct.pack(">HL", 0x2, 2)), PROTOCOL_ERROR, id="ENABLE_PUSH-2"
        ),
        pytest.param(lambda peer: peer.send(GOAWAY, 0, 1, bytes(8)), PROTOCOL_ERROR, id="GOAWAY-stream"),
        pytest.param(lambda peer: peer.send(GOAWAY, 0, 0, bytes(4)), FRAME_SIZE_ERROR, id="GOAWAY-size"),
        pytest.param(lambda peer: peer.send(PRIORITY, 0, 3, bytes(4)), FRAME_SIZE_ERROR, id="PRIORITY-size-idle"),
    ],
)
def test_connection_errors(
    server: Server, connect: Callable[..., Peer], send: Callable[[Peer], object], code: int
) -> None:
    peer = connect(server)
    send(peer)
    assert peer.goaway()[1] == code
    with pytest.raises(ConnectionError):
        peer.until(lambda frame: False)  # and the connection ends


def test_the_first_frame_after_the_preface_must_be_settings(server: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(server, settings=None)
    peer.send(PING, 0, 0, bytes(8))
    assert peer.goaway() == (0, PROTOCOL_ERROR)
    assert not any(frame[0] == PING and frame[1] & ACK for frame in peer.frames)


@pytest.mark.parametrize(
    ("send", "code"),
    [
        pytest.param(lambda peer: peer.send(WINDOW_UPDATE, 0, 1, bytes(4)), PROTOCOL_ERROR, id="WINDOW_UPDATE-0"),
        pytest.param(
            lambda peer: peer.send(WINDOW_UPDATE, 0, 1, MAX_WINDOW.to_bytes(4, "big")),
            FLOW_CONTROL_ERROR,
            id="stream-window-over-2^31-1",
        ),
        pytest.param(
            lambda peer: peer.send(PRIORITY, 0, 1, (1).to_bytes(4, "big") + b"\x10"),
            PROTOCOL_ERROR,
            id="PRIORITY-on-itself",
        ),
        pytest.param(lambda peer: peer.send(PRIORITY, 0, 1, bytes(6)), FRAME_SIZE_ERROR, id="PRIORITY-size"),
        pytest.param(
            lambda peer: peer.send(HEADERS, END_HEADERS, 1, peer.encoder.encode([("x-trailer", "1")])),
            PROTOCOL_ERROR,
            id="trailers-without-END_STREAM",
        ),
        pytest.param(
            lambda peer: peer.send(HEADERS, END_HEADERS | END_STREAM, 1, peer.encoder.encode([(":path", "/x")])),
            PROTOCOL_ERROR,
            id="pseudo-header-in-trailers",
        ),
    ],
)
def test_stream_errors_on_an_open_stream(
    server: Server, connect: Callable[..., Peer], send: Callable[[Peer], object], code: int
) -> None:
    peer = connect(server)
    _open_stream(peer)
    send(peer)
    assert peer.reset_code(1) == code
    peer.sync()  # the connection lives on
    peer.headers(3)
    peer.data(3, message(b"abc"), end_stream=True)
    assert peer.answer(3) == message(b"3")
    assert server.buffered()[0] == 0


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param((("X-Upper", "1"),), id="uppercase-name"),
        pytest.param((("connection", "close"),), id="connection-specific"),
        pytest.param((("te", "gzip"),), id="te-not-trailers"),
        pytest.param((("x:colon", "1"),), id="colon-in-name"),
        pytest.param(((":status", "200"),), id="response-pseudo-header"),
        pytest.param((("content-length", "five"),), id="content-length-not-a-number"),
        pytest.param((("content-length", "3"),), id="content-length-not-the-body"),
    ],
)
def test_malformed_requests_are_reset_with_protocol_error(
    server: Server, connect: Callable[..., Peer], extra: tuple[tuple[str, str], ...]
) -> None:
    peer = connect(server)
    peer.headers(1, extra=extra)
    peer.data(1, message(b"abc"), end_stream=True)
    assert peer.reset_code(1) == PROTOCOL_ERROR
    peer.sync()
    assert server.buffered()[0] == 0


def test_a_matching_content_length_is_served(server: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(server)
    peer.headers(1, extra=(("content-length", "8"),))
    peer.data(1, message(b"abc"), end_stream=True)
    assert peer.answer(1) == message(b"3")


def test_pseudo_headers_after_a_regular_one_are_malformed(server: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(server)
    fields = [(":method", "POST"), ("content-type", "application/grpc"), (":scheme", "http"), (":path", "/a/b")]
    peer.send(HEADERS, END_HEADERS | END_STREAM, 1, peer.encoder.encode(fields))
    assert peer.reset_code(1) == PROTOCOL_ERROR


def test_data_on_a_half_closed_stream_is_stream_closed(server: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(server)
    peer.headers(1, "Gate")
    peer.data(1, message(b""), end_stream=True)
    peer.sync()
    peer.send(DATA, 0, 1, b"more")
    assert peer.reset_code(1) == STREAM_CLOSED
    peer.sync()
    assert server.buffered()[0] == 0  # the call was cancelled, its request released


def test_frames_on_a_closed_stream_are_ignored(server: Server, connect: Callable[..., Peer]) -> None:
    peer = connect(server)
    peer.headers(1)
    peer.data(1, message(b"abc"), end_stream=True)
    assert peer.answer(1) == message(b"3")
    peer.send(WINDOW_UPDATE, 0, 1, (10).to_bytes(4, "big"))
    peer.send(RST_STREAM, 0, 1, bytes(4))
    peer.sync()
    assert peer.resets() == {}


def test_goaway_keeps_its_last_stream_id_and_later_streams_are_ignored(connect: Callable[..., Peer]) -> None:
    running = Server()
    try:
        peer = connect(running)
        peer.headers(1, "Gate")
        peer.data(1, message(b""), end_stream=True)
        peer.sync()
        stopping = asyncio.run_coroutine_threadsafe(running.server.stop(10), running.loop)
        assert peer.goaway() == (1, NO_ERROR)
        peer.headers(3)  # after our GOAWAY: ignored, neither answered nor refused
        peer.data(3, message(b"abc"), end_stream=True)
        peer.sync()
        running.open_gate()
        assert peer.answer(1) == message(b"opened")
        with pytest.raises(ConnectionError):
            peer.until(lambda frame: False)
        stopping.result(10)
        assert [frame for frame in peer.frames if frame[2] == 3] == []
        assert [int.from_bytes(frame[3][:4], "big") for frame in peer.frames if frame[0] == GOAWAY] == [1]
    finally:
        running.loop.call_soon_threadsafe(running.loop.stop)
        running.thread.join(10)
        running.loop.close()


def test_a_budget_too_small_for_a_stream_is_refused() -> None:
    with pytest.raises(ValueError, match="connection_budget"):
        GrpcServer([], connection_budget=256 * KIB - 1)


# grpcio clients -----------------------------------------------------------------------------------------------------


def test_the_official_client_with_large_and_concurrent_calls(server: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        size = channel.unary_unary(f"/{_SERVICE}/Size")
        assert size(bytes(3_000_000), timeout=20) == b"3000000"
        futures = [size.future(bytes(index * 1_000), timeout=20) for index in range(50)]
        assert [future.result() for future in futures] == [str(index * 1_000).encode() for index in range(50)]
    assert server.buffered()[0] == 0


def test_the_official_client_when_concurrent_uploads_exceed_the_budget(small: Server) -> None:
    # 50 calls of 300 KB on a connection that may hold 1 MiB: the calls wait for room, none is refused
    # (grpcio would fail a refused call with UNAVAILABLE)
    with grpc.insecure_channel(f"127.0.0.1:{small.port}") as channel:
        size = channel.unary_unary(f"/{_SERVICE}/Size")
        futures = [size.future(bytes(300_000 + index), timeout=30) for index in range(50)]
        assert [future.result() for future in futures] == [str(300_000 + index).encode() for index in range(50)]
    assert small.buffered()[0] == 0
