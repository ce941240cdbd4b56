"""Delivery over real sockets against hand-written workers: interim answers, framing, reuse, redirects, encoding.

Each worker here is a raw asyncio server that writes exactly the bytes a test gives it, so the emulator's
HTTP deliverer meets the answers real servers and proxies send, right or wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from fastapi_gcp_tasks.emulator import AsyncASGIDeliverer, Emulator, HttpDeliverer, SystemClock, _http_pool
from fastapi_gcp_tasks.emulator._delivery import MAX_REDIRECTS, RecordingDeliverer
from fastapi_gcp_tasks.emulator._types import DeliveryRequest, DeliveryResult
from tests._support import eventually

from ._tasks_support import QUEUE, http_server, http_task


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int


Answer = Callable[[Seen], bytes]
"""What a raw worker writes back for one request (closing the connection after it when it ends with CLOSE)."""
CLOSE = b"\x00close"


@dataclass
class RawWorker:
    answer: Answer
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    handlers: list[asyncio.Task[None]] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                first, *lines = head.decode("latin-1").split("\r\n")
                method, target, _ = first.split(" ")
                headers = {}
                for line in lines:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(method, target, headers, body, number)
                self.seen.append(seen)
                reply = self.answer(seen)
                close = reply.endswith(CLOSE)
                writer.write(reply.removesuffix(CLOSE))
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()


Start = Callable[[Answer], Awaitable[RawWorker]]


@pytest.fixture
async def raw_worker() -> AsyncIterator[Start]:
    servers: list[tuple[asyncio.Server, RawWorker]] = []

    async def start(answer: Answer) -> RawWorker:
        worker = RawWorker(answer)
        server = await asyncio.start_server(worker.handle, "127.0.0.1", 0)
        worker.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        servers.append((server, worker))
        return worker

    yield start
    for server, worker in servers:
        server.close()
        for writer in worker.writers:
            writer.close()
        await asyncio.gather(*worker.handlers, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
async def deliverer() -> AsyncIterator[HttpDeliverer]:
    deliverer = HttpDeliverer()
    yield deliverer
    await deliverer.aclose()


def _request(
    url: str, *, method: str = "POST", body: bytes = b"{}", headers: dict[str, str] | None = None
) -> DeliveryRequest:
    return DeliveryRequest(method=method, url=url, headers=headers or {}, body=body, deadline=10.0, source="t")


def _response(status: int, body: bytes = b"", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def _by_path(answers: dict[str, bytes]) -> Answer:
    return lambda seen: answers[seen.target]


# -- one final answer per request, never another request's -------------------------------------------------------


async def test_interim_responses_are_skipped_and_the_next_task_gets_its_own_answer(
    raw_worker: Start, deliverer: HttpDeliverer
) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    worker = await raw_worker(
        _by_path({"/first": interim + _response(500, b"failed"), "/second": interim + _response(202, b"ok")})
    )
    first = await deliverer.deliver(_request(worker.url + "/first"))
    second = await deliverer.deliver(_request(worker.url + "/second"))
    assert (first.status, second.status) == (500, 202)
    assert worker.connections == 1


async def test_bytes_beyond_the_declared_length_never_answer_the_next_task(
    raw_worker: Start, deliverer: HttpDeliverer
) -> None:
    worker = await raw_worker(
        _by_path({"/long": _response(503, b"0123456789") + b"HTTP/1.1 200 OK\r\n\r\n", "/next": _response(500)})
    )
    long = await deliverer.deliver(_request(worker.url + "/long"))
    following = await deliverer.deliver(_request(worker.url + "/next"))
    assert (long.status, following.status) == (503, 500)
    assert worker.connections == 2


async def test_bytes_arriving_on_an_idle_connection_retire_it(raw_worker: Start, deliverer: HttpDeliverer) -> None:
    worker = await raw_worker(_by_path({"/a": _response(204), "/b": _response(500)}))
    assert (await deliverer.deliver(_request(worker.url + "/a"))).status == 204
    worker.writers[0].write(_response(200))
    await worker.writers[0].drain()
    await eventually(lambda: not _idle_usable(deliverer), "the idle connection to be dropped")
    assert (await deliverer.deliver(_request(worker.url + "/b"))).status == 500
    assert worker.connections == 2


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234" + CLOSE, "RemoteProtocolError"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n01234\r\n" + CLOSE, "RemoteProtocolError"),
        (b"HTTP/1.1 200 OK\r\nContent-Le" + CLOSE, "RemoteProtocolError"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + CLOSE, "RemoteProtocolError"),
        (CLOSE, "without answering"),
    ],
    ids=["short-body", "unfinished-chunks", "cut-head", "only-interim", "no-answer"],
)
async def test_a_worker_that_closes_mid_response_does_not_acknowledge(
    raw_worker: Start, deliverer: HttpDeliverer, reply: bytes, problem: str
) -> None:
    worker = await raw_worker(lambda seen: reply)
    result = await deliverer.deliver(_request(worker.url + "/x"))
    assert result.status is None
    assert result.error is not None
    assert problem in result.error


async def test_an_answer_sent_before_the_body_was_read_is_the_answer(raw_worker: Start) -> None:
    answered = asyncio.Event()

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(_response(201) if b"/early" in head else _response(500))
        await writer.drain()
        answered.set()
        writer.close()

    server = await asyncio.start_server(early, "127.0.0.1", 0)
    deliverer = HttpDeliverer()
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/early"
        result = await deliverer.deliver(_request(url, body=b"x" * 4_000_000))
        assert answered.is_set()
        assert result.status == 201
    finally:
        await deliverer.aclose()
        server.close()
        await server.wait_closed()


async def test_keep_alive_reuses_connections_and_counts_them(raw_worker: Start, deliverer: HttpDeliverer) -> None:
    worker = await raw_worker(lambda seen: _response(200, b"done"))
    for index in range(20):
        assert (await deliverer.deliver(_request(f"{worker.url}/t?i={index}"))).status == 200
    assert worker.connections == deliverer.connections_opened == 1
    results = await asyncio.gather(*(deliverer.deliver(_request(worker.url + "/c")) for _ in range(5)))
    assert [result.status for result in results] == [200] * 5
    assert worker.connections == deliverer.connections_opened <= 5
    assert [seen.target for seen in worker.seen[:2]] == ["/t?i=0", "/t?i=1"]


async def test_connection_close_http_1_0_and_a_server_closing_idle_connections(
    raw_worker: Start, deliverer: HttpDeliverer
) -> None:
    closing = await raw_worker(lambda seen: _response(200, extra="Connection: close\r\n") + CLOSE)
    old = await raw_worker(lambda seen: b"HTTP/1.0 202 Accepted\r\n\r\nuntil close" + CLOSE)
    kept = await raw_worker(lambda seen: _response(200))
    for worker, status in ((closing, 200), (old, 202)):
        for _ in range(2):
            assert (await deliverer.deliver(_request(worker.url))).status == status
        assert worker.connections == 2
    assert (await deliverer.deliver(_request(kept.url, body=b"1"))).status == 200
    kept.writers[0].close()
    await eventually(lambda: not _idle_usable(deliverer), "the idle connection to be dropped")
    assert (await deliverer.deliver(_request(kept.url, body=b"2"))).status == 200
    assert [seen.body for seen in kept.seen] == [b"1", b"2"]
    assert kept.connections == 2


async def test_framings_and_the_headers_a_result_keeps(raw_worker: Start, deliverer: HttpDeliverer) -> None:
    answers = iter(
        [
            b"HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\nRetry-After: 7\r\nX-GCP-Tasks-Gave-Up: 3\r\n"
            b"X-Other: 1\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        ]
    )
    worker = await raw_worker(lambda seen: next(answers))
    busy = await deliverer.deliver(_request(worker.url + "/a"))
    assert busy.status == 503
    assert dict(busy.headers) == {"retry-after": "7", "x-gcp-tasks-gave-up": "3"}
    assert (await deliverer.deliver(_request(worker.url + "/b", method="GET", body=b""))).status == 204
    assert (await deliverer.deliver(_request(worker.url + "/c", method="HEAD", body=b""))).status == 200
    assert worker.connections == 1
    assert "content-length" not in worker.seen[1].headers
    assert worker.seen[0].headers["content-length"] == "2"


async def test_a_huge_response_body_is_cut_and_its_status_stands(
    raw_worker: Start, deliverer: HttpDeliverer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_http_pool, "MAX_RESPONSE_BODY", 1000)
    worker = await raw_worker(lambda seen: _response(200, b"x" * 5000))
    for _ in range(2):
        assert (await deliverer.deliver(_request(worker.url))).status == 200
    assert worker.connections == 2


async def test_header_injection_and_bad_urls_become_errors_not_crashes(
    raw_worker: Start, deliverer: HttpDeliverer
) -> None:
    worker = await raw_worker(lambda seen: _response(200))
    injected = await deliverer.deliver(_request(worker.url, headers={"X-A": "1\r\nEvil: yes"}))
    assert injected.status is None
    assert injected.error is not None
    assert "cannot be sent" in injected.error
    bad = await deliverer.deliver(_request("ftp://host/"))
    assert bad.status is None
    assert bad.error is not None
    assert "absolute http(s) URL" in bad.error
    assert (await deliverer.deliver(_request(worker.url))).status == 200
    assert len(worker.seen) == 1


async def test_header_names_are_checked_on_every_request_and_framing_is_the_pools(
    raw_worker: Start, deliverer: HttpDeliverer
) -> None:
    worker = await raw_worker(lambda seen: _response(200))
    for _ in range(2):  # a refused name is refused again: only names that passed are remembered
        refused = await deliverer.deliver(_request(worker.url, headers={"Bad Name": "1"}))
        assert refused.status is None
        assert refused.error is not None
        assert "cannot be sent" in refused.error
    framing = {"Content-Length": "999", "Transfer-Encoding": "chunked", "Host": "evil", "Connection": "close"}
    for body in (b"first", b"second"):
        result = await deliverer.deliver(_request(worker.url, body=body, headers={"X-Kept": "yes", **framing}))
        assert result.status == 200
    assert [seen.body for seen in worker.seen] == [b"first", b"second"]
    for seen in worker.seen:
        assert seen.headers["x-kept"] == "yes"
        assert seen.headers["content-length"] == str(len(seen.body))
        assert seen.headers["host"] == worker.url.removeprefix("http://")
        assert "transfer-encoding" not in seen.headers
        assert "connection" not in seen.headers
    assert worker.seen[0].connection == worker.seen[1].connection


async def test_a_server_that_speaks_before_the_request_is_not_waited_for() -> None:
    """Bytes that arrive on a fresh connection before the request are parsed, not left to the deadline."""
    release = asyncio.Event()

    async def early_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_response(204))
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()  # the connection stays open: only the early bytes can answer
        writer.close()

    server = await asyncio.start_server(early_answer, "127.0.0.1", 0)
    target = _http_pool.target_of(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
    pool = _http_pool.ConnectionPool()
    try:
        connection = await pool._connect(target)
        await eventually(lambda: connection.received, "the early answer to arrive")
        answer = await asyncio.wait_for(connection.exchange("POST", target, {}, b""), 5)
        connection.close()
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert answer.status == 204


# -- redirects ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "method", "expected"),
    [
        (301, "POST", ("GET", b"")),
        (302, "POST", ("GET", b"")),
        (303, "POST", ("GET", b"")),
        (303, "PUT", ("GET", b"")),
        (307, "POST", ("POST", b"payload")),
        (308, "PUT", ("PUT", b"payload")),
        (301, "PUT", ("PUT", b"payload")),
        (302, "DELETE", ("DELETE", b"")),
    ],
)
async def test_redirects_are_followed_with_the_method_and_body_http_clients_use(
    raw_worker: Start, deliverer: HttpDeliverer, status: int, method: str, expected: tuple[str, bytes]
) -> None:
    worker = await raw_worker(
        _by_path({"/old": _response(status, extra="Location: /new?x=1\r\n"), "/new?x=1": _response(201)})
    )
    body = b"payload" if method in ("POST", "PUT") else b""
    headers = {"Content-Type": "application/json", "Authorization": "Bearer token", "X-CloudTasks-TaskName": "t"}
    result = await deliverer.deliver(_request(worker.url + "/old", method=method, body=body, headers=headers))
    assert result.status == 201
    assert result.error is None
    final = worker.seen[-1]
    assert (final.method, final.body) == expected
    assert final.headers["authorization"] == "Bearer token"
    assert final.headers["x-cloudtasks-taskname"] == "t"
    assert ("content-type" in final.headers) == (final.method == method)
    assert worker.connections == 1


async def test_authorization_is_not_sent_to_another_origin(raw_worker: Start, deliverer: HttpDeliverer) -> None:
    other = await raw_worker(lambda seen: _response(200))
    first = await raw_worker(lambda seen: _response(307, extra=f"Location: {other.url}/there\r\n"))
    headers = {"Authorization": "Bearer secret", "X-CloudTasks-QueueName": "q"}
    result = await deliverer.deliver(_request(first.url + "/here", headers=headers))
    assert result.status == 200
    assert first.seen[0].headers["authorization"] == "Bearer secret"
    assert "authorization" not in other.seen[0].headers
    assert other.seen[0].headers["x-cloudtasks-queuename"] == "q"
    assert (other.seen[0].method, other.seen[0].body) == ("POST", b"{}")


async def test_redirects_stop_after_the_bound_and_the_last_3xx_is_the_answer(
    raw_worker: Start, deliverer: HttpDeliverer, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await raw_worker(lambda seen: _response(302, extra=f"Location: /loop{len(worker.seen)}\r\n"))
    recorder = RecordingDeliverer(deliverer, SystemClock())
    with caplog.at_level(logging.WARNING, logger="fastapi_gcp_tasks.emulator"):
        result = await recorder.deliver(_request(worker.url + "/start"))
    assert result.status == 302
    assert not result.ok
    assert result.error == f"stopped after {MAX_REDIRECTS} redirects"
    assert len(worker.seen) == MAX_REDIRECTS + 1
    assert f"-> 302 (stopped after {MAX_REDIRECTS} redirects) in " in caplog.records[-1].getMessage()


async def test_the_deadline_covers_the_whole_redirect_chain(raw_worker: Start, deliverer: HttpDeliverer) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    hanging = await asyncio.start_server(hang, "127.0.0.1", 0)
    slow = f"http://127.0.0.1:{hanging.sockets[0].getsockname()[1]}/slow"
    worker = await raw_worker(lambda seen: _response(307, extra=f"Location: {slow}\r\n"))
    request = DeliveryRequest(method="POST", url=worker.url + "/start", headers={}, body=b"", deadline=0.3)
    try:
        result = await deliverer.deliver(request)
    finally:
        hanging.close()
    assert result.timed_out
    assert result.status is None
    assert len(worker.seen) == 1


@pytest.mark.parametrize(
    "reply",
    [
        _response(300, extra="Location: /elsewhere\r\n"),
        _response(304, extra="Location: /elsewhere\r\n"),
        _response(302),
        _response(302, extra="Location: ftp://files.test/x\r\n"),
    ],
    ids=["300", "304", "no-location", "not-http"],
)
async def test_other_3xx_answers_are_not_followed(raw_worker: Start, deliverer: HttpDeliverer, reply: bytes) -> None:
    worker = await raw_worker(lambda seen: reply)
    result: DeliveryResult = await deliverer.deliver(_request(worker.url + "/x"))
    assert result.status == int(reply[9:12])
    assert len(worker.seen) == 1


async def test_the_asgi_deliverer_follows_redirects_the_same_way() -> None:
    seen: list[tuple[str, str, bytes]] = []

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Any]) -> None:
        message = await receive()
        seen.append((scope["method"], scope["path"], message.get("body", b"")))
        if scope["path"] == "/old":
            await send({"type": "http.response.start", "status": 302, "headers": [(b"location", b"/new")]})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    deliverer = AsyncASGIDeliverer(app)
    result = await deliverer.deliver(_request("http://app.test/old", body=b"data"))
    await deliverer.aclose()
    assert result.status == 200
    assert seen == [("POST", "/old", b"data"), ("GET", "/new", b"")]


# -- URLs are percent-encoded ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("/a b/c", "/a%20b/c"),
        ("/caf\u00e9/\u65e5\u672c", "/caf%C3%A9/%E6%97%A5%E6%9C%AC"),
        ("/x?q=Zo\u00eb v&r=a+b&s=%41&t=100%", "/x?q=Zo%C3%AB%20v&r=a+b&s=%41&t=100%25"),
        ("/p;m=1/@user:x?a=/b?c#fragment", "/p;m=1/@user:x?a=/b?c"),
        ('/q"<>`{}|\\^', "/q%22%3C%3E%60%7B%7D%7C%5C%5E"),
        ("", "/"),
    ],
)
async def test_urls_are_percent_encoded_as_the_services_do(
    raw_worker: Start, deliverer: HttpDeliverer, path: str, sent: str
) -> None:
    worker = await raw_worker(lambda seen: _response(200))
    assert (await deliverer.deliver(_request(worker.url + path))).status == 200
    assert worker.seen[0].target == sent


async def test_a_location_with_spaces_and_non_ascii_is_encoded_too(raw_worker: Start, deliverer: HttpDeliverer) -> None:
    worker = await raw_worker(
        lambda seen: _response(200) if seen.target != "/" else _response(308, extra="Location: /d\u00e9j\u00e0 vu\r\n")
    )
    assert (await deliverer.deliver(_request(worker.url + "/"))).status == 200
    assert worker.seen[1].target == "/d%C3%A9j%C3%A0%20vu"


def test_non_ascii_hosts_are_sent_in_their_idna_form() -> None:
    target = _http_pool.target_of("https://b\u00fccher.example:8443/x")
    assert (target.host, target.host_header) == ("xn--bcher-kva.example", b"xn--bcher-kva.example:8443")
    assert _http_pool.target_of("http://[::1]/").host_header == b"[::1]"


class _PathWorker(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    paths: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.paths.append(self.path)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_task_with_a_non_ascii_url_reaches_the_worker_through_the_official_client() -> None:
    _PathWorker.paths = []
    with http_server(_PathWorker) as base, Emulator(queues=[QUEUE]) as emu:
        emu.tasks_client().create_task(parent=QUEUE, task=http_task(url=f"{base}/caf\u00e9?name=Zo\u00eb"))
        emu.wait_until_idle()
        assert [record.status for record in emu.deliveries] == [204]
    assert _PathWorker.paths == ["/caf%C3%A9?name=Zo%C3%AB"]


# -- helpers --------------------------------------------------------------------------------------------------------


def _idle_usable(deliverer: HttpDeliverer) -> bool:
    pool = deliverer._pool
    assert pool is not None
    return any(connection.usable for idle in pool._idle.values() for connection in idle)
