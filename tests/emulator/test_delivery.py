"""The deliverers: real HTTP with deadlines and pooled connections, ASGI without sockets, the delivery log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from fastapi_gcp_tasks.emulator import AsyncASGIDeliverer, Emulator, HttpDeliverer, ManualClock
from fastapi_gcp_tasks.emulator._delivery import RecordingDeliverer
from fastapi_gcp_tasks.emulator._types import DeliveryRequest
from tests._support import wait_for

from ._tasks_support import QUEUE, ScriptedWorker, http_server, http_task


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, dict[str, str], bytes, int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append((self.command, self.path, dict(self.headers), body, self.client_address[1]))
        status = 500 if self.path == "/fail" else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_worker() -> Iterator[str]:
    _Handler.seen = []
    with http_server(_Handler) as url:
        yield url


@pytest.fixture
async def hanging_server() -> AsyncIterator[str]:
    writers: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/slow"
    server.close()
    for writer in writers:
        writer.close()
    await server.wait_closed()


def _request(url: str, deadline: float = 5.0) -> DeliveryRequest:
    return DeliveryRequest(method="POST", url=url, headers={"X-A": "1"}, body=b"hi", deadline=deadline, source="t")


def test_tasks_reach_a_real_http_worker_over_kept_alive_connections(http_worker: str) -> None:
    with Emulator(queues=[QUEUE]) as emu:
        client = emu.tasks_client()
        for _ in range(5):
            client.create_task(parent=QUEUE, task=http_task(url=f"{http_worker}/ok", body=b"{}"))
        client.create_task(parent=QUEUE, task=http_task(url=f"{http_worker}/fail"))
        emu.wait_until_idle()
        wait_for(lambda: len(_Handler.seen) >= 6, lambda: f"6 requests at the worker, saw {len(_Handler.seen)}")
    ok = [seen for seen in _Handler.seen if seen[1] == "/ok"]
    assert len(ok) == 5
    assert all(seen[2]["User-Agent"] == "Google-Cloud-Tasks" and seen[3] == b"{}" for seen in ok)
    statuses = sorted(record.status or 0 for record in emu.deliveries)
    assert statuses[:5] == [204] * 5
    assert 500 in statuses


async def test_http_deliverer_enforces_the_deadline(hanging_server: str) -> None:
    deliverer = HttpDeliverer()
    started = time.perf_counter()
    result = await deliverer.deliver(_request(hanging_server, deadline=0.2))
    elapsed = time.perf_counter() - started
    await deliverer.aclose()
    assert result.status is None
    assert result.error is not None
    assert "deadline" in result.error
    assert 0.19 <= elapsed < 2


async def test_http_deliverer_reports_a_refused_connection_without_raising() -> None:
    deliverer = HttpDeliverer()
    result = await deliverer.deliver(_request("http://127.0.0.1:1/nothing"))
    await deliverer.aclose()
    assert result.status is None
    assert result.error is not None
    assert "Connect" in result.error


async def test_asgi_deliverer_turns_an_app_crash_into_a_500() -> None:
    async def crashing(scope: object, receive: object, send: object) -> None:
        raise RuntimeError("boom")

    deliverer = AsyncASGIDeliverer(crashing)
    result = await deliverer.deliver(_request("http://app.test/x"))
    await deliverer.aclose()
    assert result.status == 500


async def test_asgi_deliverer_enforces_the_deadline() -> None:
    worker = ScriptedWorker()
    deliverer = AsyncASGIDeliverer(worker)
    result = await deliverer.deliver(_request("http://app.test/hang", deadline=0.1))
    await deliverer.aclose()
    assert result.status is None
    assert result.error is not None
    assert "deadline" in result.error


async def test_every_delivery_is_recorded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    worker = ScriptedWorker(script={"/bad": [503]})
    clock = ManualClock()
    recorder = RecordingDeliverer(AsyncASGIDeliverer(worker), clock, keep=2)
    with caplog.at_level(logging.INFO, logger="fastapi_gcp_tasks.emulator"):
        await recorder.deliver(_request("http://app.test/good"))
        await recorder.deliver(_request("http://app.test/bad"))
        await recorder.deliver(_request("http://app.test/third"))
    await recorder.aclose()
    assert [record.url for record in recorder.records] == ["http://app.test/bad", "http://app.test/third"]
    assert recorder.records[0].status == 503
    assert recorder.records[0].time == clock.now()
    messages = [record.getMessage() for record in caplog.records if record.name == "fastapi_gcp_tasks.emulator"]
    assert messages[0].startswith("POST http://app.test/good -> 200 in ")
    assert "(attempt 1) t" in messages[0]
    assert [record.levelname for record in caplog.records if record.name == "fastapi_gcp_tasks.emulator"] == [
        "INFO",
        "WARNING",
        "INFO",
    ]
