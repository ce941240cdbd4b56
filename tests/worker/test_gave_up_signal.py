"""A task that `max_retries` gave up on is acknowledged (2xx) but must not pass for a success.

The worker marks the acknowledgement with `GAVE_UP_HEADER` (the retry count); the emulator logs that delivery as
a warning, "max_retries gave up after N retries", instead of its normal success line. Checked through the
emulator over real gRPC (the official client creates the task) delivering into the app in-process and over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from google.cloud import tasks_v2
from google.protobuf import duration_pb2

from fastapi_gcp_tasks.dependencies import CloudTasksHeaders, PrivateEndpoint, max_retries
from fastapi_gcp_tasks.emulator import Emulator, ManualClock
from fastapi_gcp_tasks.receive._retries import GAVE_UP_HEADER
from tests._support.servers import serve_asgi

QUEUE = "projects/test-project/locations/europe-west1/queues/gave-up"
PRIVATE = PrivateEndpoint("tests: reached through the local emulator only")


class Records(logging.Handler):
    """The emulator's log records, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.records.append(record)

    def about(self, needle: str) -> list[logging.LogRecord]:
        with self.guard:
            return [r for r in self.records if needle in r.getMessage()]


def make_app(runs: list[int]) -> FastAPI:
    app = FastAPI(dependencies=[Depends(PRIVATE)])

    @app.post("/work", dependencies=[Depends(max_retries(2))])
    async def work(meta: CloudTasksHeaders = Depends()) -> None:
        runs.append(meta.retry_count)
        raise HTTPException(500, "always fails")

    @app.post("/fine")
    async def fine() -> dict[str, bool]:
        return {"ok": True}

    return app


@contextlib.contextmanager
def captured() -> Iterator[Records]:
    logger = logging.getLogger("fastapi_gcp_tasks.emulator")
    handler = Records()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def emulator(transport: str, app: FastAPI, clock: ManualClock) -> Iterator[tuple[Emulator, str]]:
    if transport == "asgi":
        with Emulator(clock=clock, deliver_to=app) as emu:
            yield emu, "http://worker.test"
    else:
        with serve_asgi(app) as url, Emulator(clock=clock) as emu:
            yield emu, url


def make_queue(emu: Emulator) -> None:
    retry = tasks_v2.RetryConfig(max_attempts=10, min_backoff=duration_pb2.Duration(seconds=1))
    emu.tasks_client().create_queue(
        parent=QUEUE.rsplit("/queues/", 1)[0], queue=tasks_v2.Queue(name=QUEUE, retry_config=retry)
    )


def create(emu: Emulator, url: str, task_id: str) -> str:
    task = emu.tasks_client().create_task(
        parent=QUEUE,
        task=tasks_v2.Task(
            name=f"{QUEUE}/tasks/{task_id}",
            http_request=tasks_v2.HttpRequest(http_method=tasks_v2.HttpMethod.POST, url=url),
        ),
    )
    return str(task.name)


def give_up(transport: str) -> tuple[Records, str, list[int], list[int | None]]:
    """Deliver a task whose handler always fails until `max_retries(2)` gives up on it (the third attempt)."""
    runs: list[int] = []
    clock = ManualClock()
    with captured() as logs, emulator(transport, make_app(runs), clock) as (emu, base):
        make_queue(emu)
        name = create(emu, f"{base}/work", "given-up")
        for _ in range(2):  # attempts 0 and 1 reach the handler and fail; each advance makes the next one due
            emu.wait_until_idle(timeout=30)
            clock.advance(60)
        emu.wait_until_idle(timeout=30)  # the third attempt is answered and settled
        statuses = [d.status for d in emu.deliveries]
    return logs, name, runs, statuses


@pytest.mark.parametrize("transport", ["asgi", "http"])
def test_a_given_up_task_is_logged_as_a_warning(transport: str) -> None:
    logs, name, runs, statuses = give_up(transport)
    assert runs == [0, 1]
    assert statuses == [500, 500, 200]
    warnings = logs.about("max_retries gave up after 2 retries")
    assert [r.levelno for r in warnings] == [logging.WARNING], [r.getMessage() for r in logs.records]
    assert name.rsplit("/", 1)[-1] in warnings[0].getMessage()  # the line names the task


@pytest.mark.parametrize("transport", ["asgi", "http"])
def test_a_given_up_task_has_no_success_line(transport: str) -> None:
    logs, _, _, statuses = give_up(transport)
    assert statuses == [500, 500, 200]
    successes = [r for r in logs.about("-> 200") if r.levelno < logging.WARNING]
    assert successes == [], [r.getMessage() for r in successes]


def test_a_plain_success_is_not_marked() -> None:
    clock = ManualClock()
    with captured() as logs, emulator("asgi", make_app([]), clock) as (emu, base):
        make_queue(emu)
        create(emu, f"{base}/fine", "fine")
        emu.wait_until_idle(timeout=30)
        oks = [d for d in emu.deliveries if d.status == 200]
    assert len(oks) == 1
    assert logs.about("-> 200")  # the normal success line
    assert logs.about("gave up") == []


def test_the_worker_marks_its_acknowledgement_with_the_retry_count() -> None:
    app = FastAPI(dependencies=[Depends(PRIVATE)])

    @app.post("/work", dependencies=[Depends(max_retries(3))])
    async def work() -> None:
        raise HTTPException(500, "always fails")

    async def post(retry: int) -> httpx.Response:
        headers = {
            "X-CloudTasks-TaskName": "t",
            "X-CloudTasks-QueueName": "q",
            "X-CloudTasks-TaskRetryCount": str(retry),
        }
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as client:
            return await client.post("/work", headers=headers)

    failed, given_up = asyncio.run(post(2)), asyncio.run(post(7))
    assert failed.status_code == 500
    assert GAVE_UP_HEADER not in failed.headers
    assert given_up.status_code == 200
    assert given_up.headers[GAVE_UP_HEADER] == "7"
