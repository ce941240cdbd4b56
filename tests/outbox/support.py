"""Helpers shared by the outbox tests: hand-built tasks and a recording Cloud Tasks stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from google.cloud import tasks_v2
from sqlalchemy import Engine, delete, text
from sqlalchemy.orm import Session

from fastapi_gcp_tasks.build._naming import new_task_id, task_name
from fastapi_gcp_tasks.dispatch._sink import PreparedTask
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, SendError, TaskAlreadyExistsError
from fastapi_gcp_tasks.outbox import (
    CloudTasksRelayClient,
    OutboxSink,
    OutboxStore,
    Relay,
    RelaySettings,
    RelayStats,
    dead_letter_table,
    outbox_table,
)
from tests._support import TIMEOUT
from tests._support import eventually as _eventually


@dataclass
class OutboxDb:
    """A migrated database of its own, with an engine and the relay's store on it."""

    backend: str
    url: str
    engine: Engine
    store: OutboxStore

    def clean(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(outbox_table))
            conn.execute(delete(dead_letter_table))

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {outbox_table.name}")).scalar_one())


QUEUE = "projects/test-project/locations/us-central1/queues/outbox-test"


class RefusingSender:
    """A route sender that must never be used: a sink takes the task instead."""

    def send(self, request: tasks_v2.CreateTaskRequest, *, timeout: float) -> tasks_v2.Task:
        raise AssertionError("the sink must not send")

    async def send_async(self, request: tasks_v2.CreateTaskRequest, *, timeout: float) -> tasks_v2.Task:
        raise AssertionError("the sink must not send")

    async def send_batch_async(
        self, requests: Sequence[tasks_v2.CreateTaskRequest], *, timeout: float
    ) -> list[tasks_v2.Task | FastAPIGCPTasksError]:
        raise AssertionError("the sink must not send")


def prepared(queue: str = QUEUE, *, body: bytes = b"{}", task_id: str | None = None) -> PreparedTask:
    """A named task as a route builder would hand it to a sink."""
    request = tasks_v2.CreateTaskRequest(
        parent=queue,
        task=tasks_v2.Task(
            name=task_name(queue, task_id or new_task_id()),
            http_request=tasks_v2.HttpRequest(
                url="http://127.0.0.1:9/work", http_method=tasks_v2.HttpMethod.POST, body=body
            ),
        ),
    )
    return PreparedTask(request, 10.0, RefusingSender())


class RecordingCloudTasks:
    """Creates tasks in memory like Cloud Tasks: names are unique, a reused name gets ALREADY_EXISTS.

    `failures` maps a task name to the error it gets (every time); `down` makes every call fail as UNAVAILABLE.
    """

    def __init__(self) -> None:
        self.created: list[str] = []
        self.bodies: dict[str, bytes] = {}
        self.already_existed: list[str] = []
        self.failures: dict[str, FastAPIGCPTasksError] = {}
        self.down = False
        self.calls = 0

    async def send_batch_async(
        self, requests: Sequence[tasks_v2.CreateTaskRequest], *, timeout: float
    ) -> list[tasks_v2.Task | FastAPIGCPTasksError]:
        self.calls += 1
        if self.down:
            raise SendError("ServiceUnavailable: connection refused", retryable=True)
        results: list[tasks_v2.Task | FastAPIGCPTasksError] = []
        for request in requests:
            name = request.task.name
            if name in self.failures:
                results.append(self.failures[name])
            elif name in self.bodies:
                self.already_existed.append(name)
                results.append(TaskAlreadyExistsError(name))
            else:
                self.created.append(name)
                self.bodies[name] = request.task.http_request.body
                results.append(request.task)
        return results


def insert_tasks(engine: Engine, count: int, *, queue: str = QUEUE) -> list[PreparedTask]:
    """Commit `count` outbox rows in one transaction, as `.delay()` in outbox mode would."""
    tasks = [prepared(queue, body=f'{{"n": {i}}}'.encode()) for i in range(count)]
    with Session(engine) as session, session.begin():
        sink = OutboxSink(session)
        for task in tasks:
            sink.submit(task)
    return tasks


async def eventually(condition: Callable[[], bool], *, timeout: float = TIMEOUT, message: str = "") -> None:
    """Wait until `condition()` holds, failing after `timeout` seconds (the suite's `eventually`, keyword style)."""
    await _eventually(condition, message or "the condition to hold", timeout=timeout)


def awaiting(task: asyncio.Task[Any], function: str) -> bool:
    """Whether `task` is suspended inside a coroutine function named `function`: where a relay is waiting."""
    coroutine: Any = task.get_coro()
    while coroutine is not None:
        code = getattr(coroutine, "cr_code", None)
        if code is not None and code.co_name == function:
            return True
        coroutine = getattr(coroutine, "cr_await", None)
    return False


@dataclass
class ClaimCounter:
    """Counts the claims a relay has finished, empty ones included: a positive signal that it looked.

    Waiting for two more claims than seen now proves that one whole claim started after now.
    """

    finished: int = 0

    @classmethod
    def attach(cls, relay: Relay) -> ClaimCounter:
        counter = cls()
        claim = relay.store.claim

        def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return claim(*args, **kwargs)
            finally:
                counter.finished += 1

        relay.store.claim = counted  # type: ignore[method-assign]
        return counter

    async def another(self, count: int = 1) -> None:
        """Wait until `count` claims have run that started after this call."""
        target = self.finished + count + 1
        await _eventually(lambda: self.finished >= target, f"{count} more claims by the relay")


async def drain(db: OutboxDb, relay: Relay, *, timeout: float = 30.0) -> RelayStats:
    """Run `relay` until the outbox is empty (delivered or dead-lettered), retries included."""
    async with relay.running():
        await eventually(lambda: db.count() == 0, timeout=timeout, message=f"{db.count()} rows left")
    return relay.stats


def fast_settings(**overrides: Any) -> RelaySettings:
    """Relay settings for tests: short leases, timeouts and backoffs."""
    values: dict[str, Any] = {
        "poll_interval": 0.05,
        "lease_seconds": 10.0,
        "send_timeout": 4.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "shutdown_timeout": 2.0,
        "stats_interval": 60.0,
    }
    values.update(overrides)
    return RelaySettings(**values)


@dataclass
class World:
    emulator: Emulator
    hello: Any
    hello_async: Any
    direct: Any
    received: list[str] = field(default_factory=list)

    def relay(self, db: OutboxDb, mode: Literal["batch", "concurrent"] = "batch", **settings: Any) -> Relay:
        client = CloudTasksRelayClient.for_emulator(self.emulator.address, mode=mode)
        return Relay(db.engine, client, fast_settings(**settings))
