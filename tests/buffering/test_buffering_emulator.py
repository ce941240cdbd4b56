"""Buffered mode end to end: uvicorn on 127.0.0.1, httpx, the official clients and our emulator over gRPC."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from google.api_core.exceptions import NotFound

from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.exception import BufferRequiredError, SendError
from tests._databases import postgres_conninfo
from tests._support import TIMEOUT, free_port, listening_socket, serve_asgi, wait_for
from tests._support.ports import url_of

from ._app import QUEUE, Recorded, make_app

Served = tuple[str, Recorded, Emulator]


def connect() -> psycopg.Connection[Any]:
    return psycopg.connect(postgres_conninfo(), connect_timeout=5)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator(queues=[QUEUE]) as emu:
        yield emu


def _serve(emulator: Emulator, flush: Any) -> Iterator[Served]:
    recorded = Recorded()
    sock = listening_socket()
    base = url_of(sock)
    client = emulator.tasks_client()

    def probe(payload: str) -> None:
        """Record whether the request's tasks had been created (still queued, or already delivered)."""
        delivered = {record.source for record in emulator.deliveries}
        for name in recorded.names.get(payload, []):
            try:
                client.get_task(name=name)
                recorded.events.append(f"exists at commit {name}")
            except NotFound:
                if name in delivered:
                    recorded.events.append(f"exists at commit {name}")

    app = make_app(
        base_url=base, emulator_address=emulator.address, flush=flush, recorded=recorded, database=connect, probe=probe
    )
    # Keep-alive connections stay open well past a loaded machine's pauses: a server closing an idle one just as
    # the client reuses it answers nothing ("Server disconnected without sending a response").
    with serve_asgi(app, sock, lifespan="on", timeout_keep_alive=300, timeout_graceful_shutdown=30):
        yield base, recorded, emulator


@pytest.fixture(scope="module")
def after(emulator: Emulator) -> Iterator[Served]:
    yield from _serve(emulator, "after_response")


@pytest.fixture(scope="module")
def before(emulator: Emulator) -> Iterator[Served]:
    yield from _serve(emulator, "before_response")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def assert_delivered_once(served: Served, payload: str, name: str) -> None:
    """Wait for the delivery, then for the emulator to be idle: a second delivery would have come by then."""
    _, recorded, emu = served
    wait_for(lambda: recorded.delivered(payload), f"the delivery of {payload}")
    emu.wait_until_idle(timeout=TIMEOUT)
    assert recorded.delivered(payload) == [short(name)]


def assert_never_created(served: Served, payload: str, discarded_before: int) -> None:
    _, recorded, emu = served
    wait_for(lambda: recorded.stats.discarded > discarded_before, f"the tasks of {payload} discarded")
    emu.wait_until_idle(timeout=TIMEOUT)
    names = recorded.names[payload]
    assert names
    sources = {record.source for record in emu.deliveries}
    assert not sources & set(names)
    assert recorded.delivered(payload) == []
    listed = {task.name for task in emu.tasks_client().list_tasks(parent=QUEUE)}
    assert not listed & set(names)


@pytest.mark.parametrize("path", ["/async", "/sync", "/sync-route-in-async", "/sub/inner"])
def test_a_successful_request_creates_its_task_once(after: Served, path: str) -> None:
    base, _, _ = after
    payload = unique("ok")
    response = httpx.post(f"{base}{path}", params={"payload": payload})
    assert response.status_code == 200
    name = response.json()["name"]
    assert name.startswith(QUEUE + "/tasks/")
    assert_delivered_once(after, payload, name)


def test_an_exception_sends_nothing(after: Served) -> None:
    base, recorded, _ = after
    payload = unique("raise")
    discarded = recorded.stats.discarded
    assert httpx.post(f"{base}/raise", params={"payload": payload}).status_code == 500
    assert_never_created(after, payload, discarded)


@pytest.mark.parametrize("code", [500, 503])
def test_a_server_error_sends_nothing(after: Served, code: int) -> None:
    base, recorded, _ = after
    payload = unique("5xx")
    discarded = recorded.stats.discarded
    assert httpx.post(f"{base}/status/{code}", params={"payload": payload}).status_code == code
    assert_never_created(after, payload, discarded)


def test_a_client_error_still_sends_by_default(after: Served) -> None:
    base, recorded, _ = after
    payload = unique("404")
    assert httpx.post(f"{base}/status/404", params={"payload": payload}).status_code == 404
    assert_delivered_once(after, payload, recorded.names[payload][0])


@pytest.fixture(scope="module")
def commits_table() -> None:
    with connect() as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS buffering_commits (payload text PRIMARY KEY)")


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["after", "before"])
@pytest.mark.usefixtures("commits_table")
def test_tasks_are_created_after_the_dependency_commits(request: pytest.FixtureRequest, mode: str) -> None:
    served = request.getfixturevalue(mode)
    base, recorded, _ = served
    payload = unique("commit")
    response = httpx.post(f"{base}/commit", params={"payload": payload})
    assert response.status_code == 200
    name = response.json()["name"]
    assert_delivered_once(served, payload, name)
    assert f"commit {payload}" in recorded.events
    assert f"exists at commit {name}" not in recorded.events
    with connect() as connection:
        assert connection.execute(
            "SELECT count(*) FROM buffering_commits WHERE payload = %s", (payload,)
        ).fetchone() == (1,)


def test_dependencies_and_background_tasks_are_buffered(after: Served) -> None:
    base, recorded, _ = after
    payload = unique("dep")
    name = httpx.post(f"{base}/dependency", params={"payload": payload}).json()["name"]
    assert_delivered_once(after, payload + "-dep", name)
    payload = unique("bg")
    assert httpx.post(f"{base}/background", params={"payload": payload}).status_code == 200
    wait_for(lambda: len(recorded.names.get(payload, [])) == 2, "both background tasks delayed")
    async_name, sync_name = recorded.names[payload]
    assert_delivered_once(after, payload, async_name)
    assert_delivered_once(after, payload + "-sync", sync_name)


@pytest.mark.parametrize("mode", ["after", "before"])
def test_a_streamed_response_sends_every_task_once(request: pytest.FixtureRequest, mode: str) -> None:
    served = request.getfixturevalue(mode)
    base, recorded, _ = served
    payload = unique("stream")
    response = httpx.post(f"{base}/stream", params={"payload": payload, "chunks": 3})
    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"
    names = recorded.names[payload]
    assert len(names) == 3
    for i, name in enumerate(names):
        assert_delivered_once(served, f"{payload}-{i}", name)


def test_before_response_creates_tasks_before_the_client_has_the_end(before: Served) -> None:
    base, recorded, emu = before
    client = emu.tasks_client()
    payload = unique("before")
    response = httpx.post(f"{base}/stream", params={"payload": payload, "chunks": 2})
    assert response.status_code == 200
    created = 0
    for i, name in enumerate(recorded.names[payload]):
        try:
            client.get_task(name=name)
            created += 1
        except NotFound:
            # Already delivered and finished, which also means it was created before the response ended.
            created += bool(recorded.delivered(f"{payload}-{i}"))
    assert created == 2


def test_a_disconnected_client_keeps_what_the_finished_app_delayed(after: Served) -> None:
    base, recorded, _ = after
    payload = unique("gone")
    recorded.release_stream.clear()
    with (
        httpx.Client() as client,
        client.stream("POST", f"{base}/stream-until-released", params={"payload": payload}) as response,
    ):
        first = next(response.iter_bytes())
        assert first.startswith(b"first")
    # The stream waits for an event that is never set while the client is there: only the disconnect
    # (Starlette cancels the stream) lets the app finish, and only a finished app flushes its buffer.
    try:
        assert_delivered_once(after, payload + "-before", recorded.names[payload][0])
        wait_for(lambda: f"stream ended {payload}" in recorded.events, "the stream cancelled by the disconnect")
        assert len(recorded.names[payload]) == 1
    finally:
        recorded.release_stream.set()
    assert recorded.delivered(payload + "-after") == []


def test_require_buffer_keeps_inside_a_request_and_refuses_outside(after: Served) -> None:
    base, recorded, _ = after
    payload = unique("required")
    name = httpx.post(f"{base}/required", params={"payload": payload}).json()["name"]
    wait_for(lambda: (payload, "required") in recorded.received, "the required task delivered")
    assert recorded.names[payload] == [name]
    required = recorded.required
    with pytest.raises(BufferRequiredError):
        asyncio.run(required.delay(payload=unique("outside")))


def test_a_send_failure_goes_to_the_fallback_and_is_counted(after: Served) -> None:
    base, recorded, _ = after
    payload = unique("doomed")
    failed = recorded.stats.failed
    response = httpx.post(f"{base}/doomed", params={"payload": payload})
    assert response.status_code == 200
    name = response.json()["name"]
    wait_for(lambda: recorded.stats.failed > failed, "the send failure counted")
    lost = [item for item in recorded.lost if item.name == name]
    assert len(lost) == 1
    assert isinstance(lost[0].error, SendError)
    assert lost[0].error.retryable, "a missing queue (NOT_FOUND) is retried within the RetryPolicy, then handed over"
    assert "NOT_FOUND" in str(lost[0].error)


@pytest.mark.slow
def test_a_thousand_concurrent_requests_never_cross_talk(after: Served) -> None:
    """Every tenth request fails after delaying: its task must vanish and nobody else's may."""
    base, recorded, emu = after
    payloads = [unique(f"many{i}") for i in range(1000)]
    paths = ["/status/500" if i % 10 == 0 else "/async" if i % 2 else "/sync" for i in range(len(payloads))]

    async def fire() -> list[httpx.Response | BaseException]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        # 200 in flight at once, as many as connections: more would queue in httpcore's pool, whose assignment
        # of waiting requests to connections costs the client most of the run's CPU (quadratic in the queue).
        in_flight = asyncio.Semaphore(200)

        async def post(client: httpx.AsyncClient, path: str, payload: str) -> httpx.Response:
            async with in_flight:
                return await client.post(path, params={"payload": payload})

        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=TIMEOUT * 4) as client:
            # Every request runs to its end before the client closes its connections: none is left open.
            return await asyncio.gather(
                *(post(client, path, p) for path, p in zip(paths, payloads, strict=True)),
                return_exceptions=True,
            )

    discarded = recorded.stats.discarded
    outcomes = asyncio.run(fire())
    errors = [repr(outcome) for outcome in outcomes if isinstance(outcome, BaseException)]
    assert not errors, f"{len(errors)} requests failed, first: {errors[0]}"
    responses = [outcome for outcome in outcomes if isinstance(outcome, httpx.Response)]
    ok = {p: r.json()["name"] for path, p, r in zip(paths, payloads, responses, strict=True) if path != "/status/500"}
    failed = [p for path, p in zip(paths, payloads, strict=True) if path == "/status/500"]
    assert [r.status_code for r in responses] == [500 if path == "/status/500" else 200 for path in paths]
    assert len(set(ok.values())) == len(ok) == 900
    wait_for(
        lambda: all(recorded.delivered(p) for p in ok),
        lambda: f"900 deliveries; {sum(bool(recorded.delivered(p)) for p in ok)} arrived",
        timeout=TIMEOUT * 8,
    )
    wait_for(lambda: recorded.stats.discarded - discarded == len(failed), "the 100 failed requests' tasks discarded")
    emu.wait_until_idle(timeout=TIMEOUT * 2)
    for payload, name in ok.items():
        assert recorded.delivered(payload) == [short(name)]
        assert recorded.names[payload] == [name]
    for payload in failed:
        assert recorded.delivered(payload) == []
        assert len(recorded.names[payload]) == 1


async def test_an_unreachable_service_is_retried_then_every_task_logged_as_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fastapi import APIRouter

    from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
    from fastapi_gcp_tasks.buffering import BufferStats, RetryPolicy, task_buffer
    from fastapi_gcp_tasks.utils import async_emulator_client

    nowhere = f"127.0.0.1:{free_port()}"
    router = APIRouter(
        route_class=AsyncDelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url="http://127.0.0.1:9",
            client=lambda: async_emulator_client(host=nowhere),
            auto_create_queue=False,
            task_create_timeout=2,
        )
    )

    @router.post("/unreachable")
    async def unreachable(payload: str) -> None:
        pass

    stats = BufferStats()
    retry = RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.02)
    async with task_buffer(stats=stats, retry=retry, batch_from=2) as buffer:
        names = [(await unreachable.delay(payload=str(i))).name for i in range(3)]  # type: ignore[attr-defined]
    assert buffer.report is not None
    assert sorted(item.name for item in buffer.report.failed) == sorted(names)
    assert all(isinstance(item.error, SendError) and item.error.retryable for item in buffer.report.failed)
    assert stats.retried == 6
    assert stats.lost == 3
    for name in names:
        assert name in caplog.text
