"""The emulator's HTTP/2 gRPC server, driven by grpcio clients and by a raw HTTP/2 client (the `h2` package).

The emulator's conformance tests already run every Cloud Tasks and Cloud Scheduler call through this server;
these tests cover the transport itself: flow control, header continuation, compression, status details,
protocol errors, garbage, and stopping with calls in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_gcp_tasks.emulator._grpc_server import GrpcServer

_SERVICE = "test.Echo"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def _big(request: bytes, context: grpc.ServicerContext) -> bytes:
    """Answers as many bytes as the request asks for (a decimal number)."""
    return b"x" * int(request or b"0")


def _size(request: bytes, context: grpc.ServicerContext) -> bytes:
    return str(len(request)).encode()


def _fail(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, request.decode())
    raise AssertionError("unreachable")


def _crash(request: bytes, context: grpc.ServicerContext) -> bytes:
    raise RuntimeError("boom")


def _metadata(request: bytes, context: grpc.ServicerContext) -> bytes:
    return json.dumps(sorted(context.invocation_metadata())).encode()


async def _slow(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(float(request))
    return b"slept"


async def _async_fail(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("unreachable")


class Server:
    """A `GrpcServer` with the test methods, on a loop in a background thread."""

    def __init__(self) -> None:
        methods = {
            "Echo": _echo,
            "Big": _big,
            "Size": _size,
            "Fail": _fail,
            "Crash": _crash,
            "Metadata": _metadata,
            "Slow": _slow,
            "AsyncFail": _async_fail,
        }
        handler = grpc.method_handlers_generic_handler(
            _SERVICE, {name: grpc.unary_unary_rpc_method_handler(method) for name, method in methods.items()}
        )
        self.server = GrpcServer([handler])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self.run(self.server.start("127.0.0.1", 0))

    def run(self, coroutine: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


@pytest.fixture
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


def _call(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(f"/{_SERVICE}/{method}")


# grpcio clients ---------------------------------------------------------------------------------------------------


def test_echo_and_a_response_larger_than_every_window(channel: grpc.Channel) -> None:
    assert _call(channel, "Echo")(b"hello", timeout=5) == b"hello"
    assert _call(channel, "Echo")(b"", timeout=5) == b""
    request = bytes(range(256)) * 40_000  # 10 MB: over the stream window we announce, so the client waits for ours
    assert _call(channel, "Size")(request, timeout=20) == b"10240000"
    big = _call(channel, "Big")(b"3000000", timeout=20)  # over the client's windows: we wait for its updates
    assert big == b"x" * 3_000_000


def test_concurrent_calls_on_one_connection(channel: grpc.Channel) -> None:
    echo = _call(channel, "Echo")
    futures = [echo.future(str(index).encode() * (index % 50), timeout=10) for index in range(300)]
    assert [future.result() for future in futures] == [str(index).encode() * (index % 50) for index in range(300)]


def test_status_details_survive_percent_encoding(channel: grpc.Channel) -> None:
    details = "naïve 100% — a/b?c=d\nline two"
    with pytest.raises(grpc.RpcError) as raised:
        _call(channel, "Fail")(details.encode(), timeout=5)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == details


def test_async_behaviours_run_on_the_loop(channel: grpc.Channel) -> None:
    assert _call(channel, "Slow")(b"0.01", timeout=5) == b"slept"
    with pytest.raises(grpc.RpcError) as raised:
        _call(channel, "AsyncFail")(b"", timeout=5)
    assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing")


def test_a_crashing_handler_answers_unknown_and_the_server_lives_on(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _call(channel, "Crash")(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNKNOWN
    assert "boom" in str(raised.value.details())
    assert _call(channel, "Echo")(b"still here", timeout=5) == b"still here"


def test_unknown_methods_are_unimplemented(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/test.Nothing/Here")(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "/test.Nothing/Here" in str(raised.value.details())


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_compressed_requests(channel: grpc.Channel, compression: grpc.Compression) -> None:
    request = b"compress me " * 1000
    assert _call(channel, "Echo")(request, timeout=5, compression=compression) == request


def test_metadata_reaches_the_handler_and_large_blocks_use_continuation(channel: grpc.Channel) -> None:
    large = "v" * 40_000  # a header block over one 16 KiB frame: HEADERS then CONTINUATION frames
    answer = _call(channel, "Metadata")(b"", timeout=5, metadata=[("x-small", "one"), ("x-large", large)])
    metadata = dict(json.loads(answer))
    assert metadata["x-small"] == "one"
    assert metadata["x-large"] == large
    assert "content-type" not in metadata


def test_a_header_list_over_the_limit_fails_the_call_not_the_server(server: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.RpcError) as raised:
            _call(channel, "Echo")(b"", timeout=5, metadata=[("x-huge", "v" * 70_000)])
        assert raised.value.code() != grpc.StatusCode.OK
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        assert _call(channel, "Echo")(b"after", timeout=5) == b"after"


def test_stop_lets_calls_in_flight_finish_and_refuses_new_connections() -> None:
    running = Server()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            assert _call(channel, "Echo")(b"warm", timeout=5) == b"warm"
            in_flight = _call(channel, "Slow").future(b"0.3", timeout=10)
            stopping = asyncio.run_coroutine_threadsafe(running.server.stop(5), running.loop)
            assert in_flight.result() == b"slept"
            stopping.result(10)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", running.port), timeout=2).close()
    finally:
        running.loop.call_soon_threadsafe(running.loop.stop)
        running.thread.join(10)
        running.loop.close()


# a raw HTTP/2 client ------------------------------------------------------------------------------------------------


class RawClient:
    """One HTTP/2 connection driven by the h2 state machine, for what grpcio clients never send."""

    def __init__(self, port: int, *, window: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()
        self.events: list[h2.events.Event] = []

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(self, path: str, body: bytes, *, method: str = "POST", content_type: str = "application/grpc") -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "http"), (":path", path), (":authority", "test")]
        self.conn.send_headers(stream_id, [*headers, ("content-type", content_type), ("te", "trailers")])
        self.conn.send_data(stream_id, body, end_stream=True)
        self.flush()
        return stream_id

    def until(self, done: type[h2.events.Event], stream_id: int | None = None) -> list[h2.events.Event]:
        """Read events (acknowledging received data) until one of type `done` arrives for `stream_id`."""
        while True:
            for event in self.events:
                if isinstance(event, done) and (stream_id is None or getattr(event, "stream_id", None) == stream_id):
                    return self.events
            data = self.sock.recv(65_536)
            if not data:
                raise ConnectionError("closed by the server")
            for event in self.conn.receive_data(data):
                self.events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.flush()

    def answer(self, stream_id: int) -> tuple[dict[str, str], bytes, dict[str, str]]:
        self.until(h2.events.StreamEnded, stream_id)
        headers: dict[str, str] = {}
        trailers: dict[str, str] = {}
        body = b""
        for event in self.events:
            if getattr(event, "stream_id", None) != stream_id:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                headers = {_text(name): _text(value) for name, value in event.headers}
            elif isinstance(event, h2.events.TrailersReceived):
                trailers = {_text(name): _text(value) for name, value in event.headers}
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
        return headers, body, trailers

    def close(self) -> None:
        self.sock.close()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _message(payload: bytes) -> bytes:
    return struct.pack(">BL", 0, len(payload)) + payload


def test_a_tiny_client_window_is_respected(server: Server) -> None:
    client = RawClient(server.port, window=100)
    try:
        stream_id = client.request(f"/{_SERVICE}/Big", _message(b"50000"))
        headers, body, trailers = client.answer(stream_id)
        assert headers[":status"] == "200"
        assert body == _message(b"x" * 50_000)
        assert trailers["grpc-status"] == "0"
    finally:
        client.close()


def test_ping_is_acknowledged(server: Server) -> None:
    client = RawClient(server.port)
    try:
        client.conn.ping(b"12345678")
        client.flush()
        events = client.until(h2.events.PingAckReceived)
        assert any(isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"12345678" for e in events)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("method", "content_type", "status"),
    [("GET", "application/grpc", "405"), ("POST", "text/plain", "415")],
)
def test_http_requests_that_are_not_grpc(server: Server, method: str, content_type: str, status: str) -> None:
    client = RawClient(server.port)
    try:
        stream_id = client.request(f"/{_SERVICE}/Echo", b"", method=method, content_type=content_type)
        headers, _, _ = client.answer(stream_id)
        assert headers[":status"] == status
    finally:
        client.close()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "13"),  # no message
        (_message(b"a") + _message(b"b"), "13"),  # two messages in a unary call
        (b"\x01" + struct.pack(">L", 3) + b"abc", "13"),  # compressed, but no grpc-encoding
    ],
)
def test_malformed_grpc_bodies_get_internal(server: Server, body: bytes, code: str) -> None:
    client = RawClient(server.port)
    try:
        stream_id = client.request(f"/{_SERVICE}/Echo", body)
        headers, _, _ = client.answer(stream_id)
        assert headers["grpc-status"] == code  # a Trailers-Only answer
        assert headers["grpc-message"]
    finally:
        client.close()


def test_a_protocol_error_ends_the_connection_with_goaway(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        # a valid preface and SETTINGS, then DATA on stream 0
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(3) + b"\x04\x00" + bytes(4))
        sock.sendall(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
        received = b""
        while chunk := sock.recv(65_536):
            received += chunk
    frames = []
    while len(received) >= 9:
        size = int.from_bytes(received[:3], "big")
        frames.append((received[3], received[9 : 9 + size]))
        received = received[9 + size :]
    goaways = [payload for kind, payload in frames if kind == 0x7]
    assert goaways
    assert int.from_bytes(goaways[0][4:8], "big") == 0x1  # PROTOCOL_ERROR


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=300), preface=st.booleans())
def test_the_server_survives_any_bytes(server: Server, garbage: bytes, preface: bool) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        if preface:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.5)
        try:
            while sock.recv(65_536):
                pass
        except OSError:
            pass
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        assert _call(channel, "Echo")(b"alive", timeout=5) == b"alive"


def test_long_status_details_are_cut_to_fit_one_frame_and_the_clients_limits(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _call(channel, "Fail")(("é" * 20_000).encode(), timeout=5)  # 40 KB of UTF-8, 120 KB percent-encoded
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details() == "é" * 1024


def test_a_header_list_over_the_limit_fails_only_its_own_call(channel: grpc.Channel) -> None:
    slow = _call(channel, "Slow").future(b"0.3", timeout=5)
    with pytest.raises(grpc.RpcError) as raised:
        _call(channel, "Echo")(b"", timeout=5, metadata=[("x-huge", "v" * 70_000)])
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert slow.result() == b"slept"


def test_a_compressed_request_is_bounded_after_inflation(server: Server) -> None:
    client = RawClient(server.port)
    try:
        bomb = gzip.compress(bytes(40 * 2**20))  # 40 KB that inflate to 40 MiB, over the 32 MiB limit
        stream_id = client.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", f"/{_SERVICE}/Size"), (":authority", "test")]
        client.conn.send_headers(stream_id, [*headers, ("content-type", "application/grpc"), ("grpc-encoding", "gzip")])
        body = struct.pack(">BL", 1, len(bomb)) + bomb
        for start in range(0, len(body), 16_384):
            client.conn.send_data(stream_id, body[start : start + 16_384], end_stream=start + 16_384 >= len(body))
        client.flush()
        headers_, _, _ = client.answer(stream_id)
        assert headers_["grpc-status"] == "8"  # RESOURCE_EXHAUSTED
    finally:
        client.close()


def test_padding_is_given_back_so_a_padded_request_completes(server: Server) -> None:
    client = RawClient(server.port)
    try:
        client.until(h2.events.RemoteSettingsChanged)
        stream_id = client.conn.get_next_available_stream_id()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", f"/{_SERVICE}/Size"), (":authority", "test")]
        client.conn.send_headers(stream_id, [*headers, ("content-type", "application/grpc")])
        body = _message(b"p" * 2_200_000)
        # 240-byte chunks with 256 bytes of padding: the window opened to the request's size is spent on padding
        # twice over unless the server gives the padding back
        for start in range(0, len(body), 240):
            chunk = body[start : start + 240]
            while client.conn.local_flow_control_window(stream_id) < len(chunk) + 256:
                client.flush()
                client.events.clear()
                client.until(h2.events.WindowUpdated, stream_id)
            client.conn.send_data(stream_id, chunk, end_stream=start + 240 >= len(body), pad_length=255)
        client.flush()
        _, answer, trailers = client.answer(stream_id)
        assert (answer, trailers["grpc-status"]) == (_message(b"2200000"), "0")
    finally:
        client.close()


def test_a_client_that_shrinks_its_header_table_can_decode_the_answers(server: Server) -> None:
    client = RawClient(server.port)
    try:
        client.conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
        client.flush()
        stream_id = client.request(f"/{_SERVICE}/Echo", _message(b"hi"))
        _, body, trailers = client.answer(stream_id)
        assert (body, trailers["grpc-status"]) == (_message(b"hi"), "0")
    finally:
        client.close()


def test_an_endless_header_block_ends_the_connection(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(3) + b"\x04\x00" + bytes(4))
        sock.sendall(b"\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82")  # HEADERS without END_HEADERS
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(20):  # 320 KiB of CONTINUATION frames, never END_HEADERS
                sock.sendall(b"\x00\x40\x00\x09\x00\x00\x00\x00\x01" + bytes(16_384))
        received = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65_536):
                received += chunk
    goaways = []
    while len(received) >= 9:
        size = int.from_bytes(received[:3], "big")
        if received[3] == 0x7:
            goaways.append(received[9 : 9 + size])
        received = received[9 + size :]
    assert [int.from_bytes(goaway[4:8], "big") for goaway in goaways] == [0xB]  # ENHANCE_YOUR_CALM
