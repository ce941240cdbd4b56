"""The whole path on real parts: `.delay()` in a SQL transaction, the relay, the emulator over gRPC, the worker."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

import pytest
from google.protobuf import duration_pb2
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from fastapi_gcp_tasks.cli import main as cli
from fastapi_gcp_tasks.outbox import CloudTasksRelayClient, OutboxSink, Relay, outbox_sink, use_outbox
from tests.outbox.proxy import OutageProxy
from tests.outbox.support import QUEUE, OutboxDb, World, drain, eventually, fast_settings, prepared

ASYNC_DRIVERS = {"postgres": "postgresql+asyncpg", "mariadb": "mysql+asyncmy", "sqlite": "sqlite+aiosqlite"}
OUTAGE_SECONDS = float(os.environ.get("FASTAPI_GCP_TASKS_TEST_OUTAGE_SECONDS", "3"))


@pytest.mark.parametrize("mode", ["batch", "concurrent"])
async def test_committed_delays_reach_the_worker_rolled_back_ones_never(
    db: OutboxDb, world: World, mode: Literal["batch", "concurrent"]
) -> None:
    with Session(db.engine) as session:
        with session.begin(), use_outbox(session):
            world.hello.delay(name="builder")
            world.direct.options(sink=outbox_sink(session)).delay(name="per-call")
        with session.begin(), use_outbox(session):
            world.hello.delay(name="rolled-back")
            session.rollback()
    assert world.received == []
    stats = await drain(db, world.relay(db, mode))
    await world.emulator.wait_until_idle_async(timeout=10)
    assert sorted(world.received) == ["builder", "per-call"]
    assert stats.delivered == 2
    assert db.count() == 0


async def test_async_builder_and_async_session(db: OutboxDb, world: World) -> None:
    engine = create_async_engine(db.engine.url.set(drivername=ASYNC_DRIVERS[db.backend]))
    try:
        async with AsyncSession(engine) as session, session.begin():
            with use_outbox(session):
                await world.hello_async.delay(name="async")
                world.hello.delay(name="sync-in-async")  # flushed with the transaction
    finally:
        await engine.dispose()
    await drain(db, world.relay(db))
    await world.emulator.wait_until_idle_async(timeout=10)
    assert sorted(world.received) == ["async", "sync-in-async"]


async def test_task_id_gives_the_direct_name_and_a_duplicate_counts_as_delivered(db: OutboxDb, world: World) -> None:
    sent = world.direct.options(task_id="order-7").delay(name="direct")
    with Session(db.engine) as session, session.begin(), use_outbox(session):
        stored = world.hello.options(task_id="order-7").delay(name="outbox")
    assert stored.name == sent.name == f"{QUEUE}/tasks/order-7"
    stats = await drain(db, world.relay(db))
    await world.emulator.wait_until_idle_async(timeout=10)
    assert (stats.delivered, stats.already_existed) == (1, 1)
    assert world.received == ["direct"]


def _invalid_task() -> Any:
    task = prepared()
    task.request.task.dispatch_deadline = duration_pb2.Duration(seconds=5)
    return task


async def test_invalid_argument_is_dead_lettered_and_requeue_brings_it_back(
    db: OutboxDb, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    with Session(db.engine) as session, session.begin():
        OutboxSink(session).submit(_invalid_task())
        world.hello.options(sink=outbox_sink(session)).delay(name="fine")
    stats = await drain(db, world.relay(db))
    assert (stats.delivered, stats.dead_lettered) == (1, 1)
    [letter] = db.store.dead_letters()
    assert "dispatch_deadline" in letter.reason
    assert letter.reason.startswith(
        (
            "SendError: create_task failed: INVALID_ARGUMENT: ",
            "SendError: batch_create_tasks failed: INVALID_ARGUMENT: ",
        )
    )

    capsys.readouterr()
    assert cli(["outbox", "dead-letters", "--database-url", db.url]) == 0
    assert "dispatch_deadline" in capsys.readouterr().out
    assert cli(["outbox", "requeue", "--all", "--database-url", db.url]) == 0
    assert capsys.readouterr().out.strip() == "requeued 1 dead letter(s)"
    assert cli(["outbox", "status", "--json", "--database-url", db.url]) == 0
    assert '"pending": 1' in capsys.readouterr().out
    assert db.store.dead_letters() == []
    stats = await drain(db, world.relay(db))
    assert stats.dead_lettered == 1  # still invalid: back in the dead letters, with a fresh attempt count
    assert db.store.dead_letters()[0].attempts == 1


async def _outage(db: OutboxDb, world: World, seconds: float) -> None:
    with OutageProxy(world.emulator.address) as proxy:
        client = CloudTasksRelayClient.for_emulator(proxy.address, mode="batch")
        relay = Relay(db.engine, client, fast_settings(send_timeout=1.0, backoff_initial=0.2, backoff_max=2.0))
        names: list[str] = []

        def delay(count: int) -> None:
            with Session(db.engine) as session, session.begin(), use_outbox(session):
                names.extend(world.hello.delay(name=f"t{len(names)}").name for _ in range(count))

        try:
            async with relay.running():
                delay(5)
                await eventually(lambda: len(world.received) == 5)
                proxy.cut()
                for _ in range(6):  # the app keeps committing through the outage, paced over `seconds`
                    await asyncio.to_thread(delay, 5)
                    await asyncio.sleep(seconds / 6)
                await eventually(lambda: relay.stats.retried > 0, message="the relay retrying through the outage")
                assert db.store.stats().pending >= 25, "the backlog grows while Cloud Tasks is unreachable"
                proxy.restore()
                await eventually(lambda: db.store.stats().pending == 0, timeout=30)
                await world.emulator.wait_until_idle_async(timeout=10)
        finally:
            await client.close()
    assert sorted(world.received) == sorted(f"t{i}" for i in range(len(names)))
    assert len(world.emulator.deliveries) == len(names)
    # each failed batch paused the relay: rows were tried about once a second or less, not at every 50 ms poll
    assert relay.stats.retried / len(names) / seconds < 2


@pytest.mark.slow
async def test_emulator_outage_backlog_grows_relay_backs_off_and_recovers(db: OutboxDb, world: World) -> None:
    await _outage(db, world, OUTAGE_SECONDS)


@pytest.mark.slow
async def test_emulator_down_for_30_seconds(db: OutboxDb, world: World) -> None:
    await _outage(db, world, 30.0)
