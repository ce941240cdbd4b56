"""Recording end to end: tasks created through the emulator (immediate, buffered, outbox) and delivered into the
app in-process, with a real `TaskHistory` on SQLite reading back what both sides recorded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from fastapi_gcp_tasks.async_delayed_route import AsyncDelayedRouteBuilder
from fastapi_gcp_tasks.buffering import task_buffer
from fastapi_gcp_tasks.delayed_route import DelayedRouteBuilder
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.history._history import TaskHistory
from fastapi_gcp_tasks.history._migrate import migrate
from fastapi_gcp_tasks.history._types import TaskRecord
from fastapi_gcp_tasks.outbox import use_outbox
from fastapi_gcp_tasks.receive import PrivateEndpoint
from fastapi_gcp_tasks.testing import use_emulator
from tests._support import TIMEOUT

QUEUE = "projects/p/locations/europe-west1/queues/history"
PRIVATE = PrivateEndpoint("tests: the emulator delivers in-process")


class Order(BaseModel):
    item: str
    card: str


@dataclass
class Env:
    emu: Emulator
    history: TaskHistory
    endpoint: Any
    handled: list[str]
    database: str
    holder: dict[str, FastAPI]

    def record(self, name: str) -> TaskRecord:
        self.emu.wait_until_idle(timeout=TIMEOUT)
        assert self.history.flush(TIMEOUT)
        record = self.history.get(name)
        assert record is not None, f"{name} is not in the history"
        return record


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    database = f"sqlite:///{tmp_path / 'history.db'}"
    migrate(database)
    handled: list[str] = []
    with TaskHistory(database, redact=("card",), flush_interval=0.01) as history:
        holder: dict[str, FastAPI] = {}

        async def deliver_to(scope: Any, receive: Any, send: Any) -> None:
            await holder["app"](scope, receive, send)

        with Emulator(deliver_to=deliver_to, queues=[QUEUE]) as emu:
            builder = DelayedRouteBuilder(
                queue_path=QUEUE,
                callback_base_url="http://worker.test",
                client=emu.tasks_client(),
                auto_create_queue=False,
                history=history,
            )
            router = APIRouter(route_class=builder, dependencies=[Depends(PRIVATE)])

            @router.post("/orders/{shop}")
            async def ship(shop: str, order: Order) -> None:
                handled.append(f"{shop}:{order.item}")

            app = FastAPI()
            app.include_router(router)
            holder["app"] = app
            yield Env(emu, history, ship, handled, database, holder)


def test_an_immediate_task_is_recorded_on_both_sides(env: Env) -> None:
    task = env.endpoint.delay(shop="north", order=Order(item="tea", card="4111"))
    record = env.record(task.name)
    assert env.handled == ["north:tea"]
    assert record.summary.endpoint == "/orders/{shop}"
    assert (record.summary.status, record.summary.dispatch_mode, record.summary.attempts) == (
        "succeeded",
        "immediate",
        1,
    )
    assert record.arguments == {"shop": "north", "order": {"item": "tea", "card": "[redacted]"}}
    [attempt] = record.attempts
    assert (attempt.status_code, attempt.outcome, attempt.retry_count) == (200, "succeeded", 0)


def test_a_buffered_task_is_recorded_when_the_flush_created_it(env: Env) -> None:
    with task_buffer() as buffer:
        task = env.endpoint.delay(shop="south", order=Order(item="rice", card="5500"))
        assert env.history.flush(TIMEOUT)
        assert env.history.get(task.name) is None  # not created yet: nothing recorded
    assert buffer.report is not None
    assert buffer.report.created == 1
    record = env.record(task.name)
    assert (record.summary.dispatch_mode, record.summary.status) == ("buffered", "succeeded")
    assert env.handled == ["south:rice"]


def test_an_outbox_task_is_recorded_once_its_transaction_commits(env: Env) -> None:
    engine = create_engine(env.database)
    try:
        with Session(engine) as session:
            with session.begin(), use_outbox(session):
                kept = env.endpoint.delay(shop="east", order=Order(item="salt", card="1"))
            session.begin()
            with use_outbox(session):
                dropped = env.endpoint.delay(shop="west", order=Order(item="oil", card="2"))
            session.rollback()
        assert env.history.flush(TIMEOUT)
        record = env.history.get(kept.name)
        assert record is not None
        assert (record.summary.dispatch_mode, record.summary.status) == ("outbox", "pending")
        assert record.arguments == {"shop": "east", "order": {"item": "salt", "card": "[redacted]"}}
        assert env.history.get(dropped.name) is None
    finally:
        engine.dispose()


async def test_an_async_builders_delay_is_recorded(env: Env) -> None:
    builder = AsyncDelayedRouteBuilder(
        queue_path=QUEUE, callback_base_url="http://worker.test", auto_create_queue=False, history=env.history
    )
    router = APIRouter(route_class=builder, dependencies=[Depends(PRIVATE)])

    @router.post("/refunds/{shop}")
    async def refund(shop: str, order: Order) -> None:
        env.handled.append(f"refund:{shop}")

    app = FastAPI()
    app.include_router(router)
    with use_emulator(env.emu):
        task = await refund.delay(shop="north", order=Order(item="tea", card="4111"))  # type: ignore[attr-defined]
    assert env.history.flush(TIMEOUT)
    record = env.history.get(task.name)
    assert record is not None
    assert (record.summary.endpoint, record.summary.dispatch_mode) == ("/refunds/{shop}", "immediate")
    assert record.arguments == {"shop": "north", "order": {"item": "tea", "card": "[redacted]"}}


def test_tasks_run_and_answer_as_before_when_the_history_database_is_unusable(env: Env, tmp_path: Path) -> None:
    """A history whose tables are missing: every write fails, the worker answers 200 all the same, drops counted."""
    with TaskHistory(f"sqlite:///{tmp_path / 'empty.db'}", flush_interval=0.01) as broken:
        builder = DelayedRouteBuilder(
            queue_path=QUEUE,
            callback_base_url="http://worker.test",
            client=env.emu.tasks_client(),
            auto_create_queue=False,
            history=broken,
        )
        router = APIRouter(route_class=builder, dependencies=[Depends(PRIVATE)])

        @router.post("/broken/{shop}")
        async def broken_ship(shop: str, order: Order) -> None:
            env.handled.append(f"broken:{shop}")

        app = FastAPI()
        app.include_router(router)
        env.holder["app"] = app
        broken_ship.delay(shop="x", order=Order(item="a", card="1"))  # type: ignore[attr-defined]
        env.emu.wait_until_idle(timeout=TIMEOUT)
        assert [d.status for d in env.emu.deliveries] == [200]
        assert env.handled == ["broken:x"]
        broken.flush(TIMEOUT)
        assert broken.stats.dropped == 2  # the creation and the attempt
