"""A failure to create the queue (`auto_create_queue`) is read by the one error table on every path of the
transport: one `create_task`, `batch_create_tasks`, and the sync sender. So a retryable one is retried by
the buffer whichever path its tasks took, and a task that is lost is named once, under its own name.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
from fastapi import APIRouter
from google.api_core import exceptions as core

from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
from fastapi_gcp_tasks.buffering import BufferStats, RetryPolicy, task_buffer
from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.utils import async_emulator_client, emulator_client

FAST_RETRY = RetryPolicy(attempts=3, initial_backoff=0.001, max_backoff=0.002)


class FlakyQueues:
    """A Cloud Tasks client whose `create_queue` raises the given errors first, then works."""

    def __init__(self, client: Any, errors: list[Exception]) -> None:
        self._client = client
        self.errors = errors

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _next_error(self) -> None:
        if self.errors:
            raise self.errors.pop(0)


class AsyncFlakyQueues(FlakyQueues):
    async def create_queue(self, **kwargs: Any) -> Any:
        self._next_error()
        return await self._client.create_queue(**kwargs)


class SyncFlakyQueues(FlakyQueues):
    def create_queue(self, **kwargs: Any) -> Any:
        self._next_error()
        return self._client.create_queue(**kwargs)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


def queue() -> str:
    return f"projects/test/locations/here/queues/made-{uuid.uuid4().hex[:10]}"


def async_route(emulator: Emulator, errors: list[Exception]) -> Any:
    address = emulator.address
    router = APIRouter(
        route_class=AsyncDelayedRouteBuilder(
            queue_path=queue(),
            callback_base_url="http://127.0.0.1:9",
            client=lambda: cast(Any, AsyncFlakyQueues(async_emulator_client(host=address), errors)),
            auto_create_queue=True,
        )
    )

    @router.post("/work")
    async def work(n: int) -> None:
        pass

    return work


def sync_route(emulator: Emulator, errors: list[Exception]) -> Any:
    address = emulator.address
    router = APIRouter(
        route_class=DelayedRouteBuilder(
            queue_path=queue(),
            callback_base_url="http://127.0.0.1:9",
            client=lambda: cast(Any, SyncFlakyQueues(emulator_client(host=address), errors)),
            auto_create_queue=True,
        )
    )

    @router.post("/work")
    def work(n: int) -> None:
        pass

    return work


@pytest.mark.parametrize("count", [1, 3], ids=["create_task", "batch_create_tasks"])
async def test_a_retryable_queue_creation_error_is_retried_on_either_path(emulator: Emulator, count: int) -> None:
    errors: list[Exception] = [core.ServiceUnavailable("queue backend busy")]  # type: ignore[no-untyped-call]
    work = async_route(emulator, errors)
    stats = BufferStats()
    async with task_buffer(stats=stats, retry=FAST_RETRY, batch_from=3) as buffer:
        names = [(await work.delay(n=n)).name for n in range(count)]
    assert errors == [], "the queue creation was tried"
    assert buffer.report is not None
    assert (buffer.report.created, buffer.report.failed) == (count, ())
    assert (stats.retried, stats.calls) == (count, 2), "one call, then its retry"
    listed = {task.name for task in emulator.tasks_client().list_tasks(parent=names[0].rsplit("/tasks/", 1)[0])}
    assert listed == set(names)


def test_the_sync_sender_retries_it_too(emulator: Emulator) -> None:
    errors: list[Exception] = [core.ServiceUnavailable("queue backend busy")]  # type: ignore[no-untyped-call]
    work = sync_route(emulator, errors)
    stats = BufferStats()
    with task_buffer(stats=stats, retry=FAST_RETRY) as buffer:
        names = [work.delay(n=n).name for n in range(3)]
    assert errors == []
    assert buffer.report is not None
    assert buffer.report.created == 3
    assert stats.retried >= 1
    listed = {task.name for task in emulator.tasks_client().list_tasks(parent=names[0].rsplit("/tasks/", 1)[0])}
    assert listed == set(names)


async def test_a_bug_in_queue_creation_names_each_task_of_the_batch(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[Exception] = [ZeroDivisionError("not a call error")]
    work = async_route(emulator, errors)
    stats = BufferStats()
    async with task_buffer(stats=stats, retry=FAST_RETRY, batch_from=3):
        names = [(await work.delay(n=n)).name for n in range(3)]
    assert (stats.retried, stats.lost) == (0, 3), "a bug is not retried"
    errors_logged = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    for name in names:
        mentions = [line for line in errors_logged if name in line]
        assert len(mentions) == 2, mentions  # the unexpected error (once per call), and the task's own loss
        assert sum(line.startswith(f"task {name} was not created") for line in mentions) == 1
