"""The relay against a recording Cloud Tasks stand-in, on PostgreSQL, MariaDB and SQLite.

The same scenarios run against the emulator over real gRPC in test_outbox_emulator.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import insert, select, update

from fastapi_gcp_tasks.exception import SendError
from fastapi_gcp_tasks.outbox import Relay, outbox_table
from fastapi_gcp_tasks.outbox._schema import db_now
from tests._support import TIMEOUT, wait_for
from tests.outbox.support import (
    ClaimCounter,
    OutboxDb,
    RecordingCloudTasks,
    awaiting,
    eventually,
    fast_settings,
    insert_tasks,
)

_o = outbox_table.c


async def test_delivers_every_row_once_and_deletes_it(db: OutboxDb) -> None:
    tasks = insert_tasks(db.engine, 250)
    cloud = RecordingCloudTasks()
    stats = await Relay(db.engine, cloud, fast_settings(batch_size=40)).run(until_idle=True)
    assert sorted(cloud.created) == sorted(t.name for t in tasks)
    assert cloud.bodies[tasks[7].name] == b'{"n": 7}'
    assert (stats.delivered, stats.retried, stats.dead_lettered) == (250, 0, 0)
    assert db.count() == 0


async def test_retention_keeps_delivered_rows_without_resending(db: OutboxDb) -> None:
    insert_tasks(db.engine, 3)
    cloud = RecordingCloudTasks()
    relay = Relay(db.engine, cloud, fast_settings(retention_seconds=3600))
    await relay.run(until_idle=True)
    await relay.run(until_idle=True)
    assert len(cloud.created) == 3
    assert cloud.already_existed == []
    assert db.store.stats().retained == 3
    assert db.store.purge_delivered(3600) == 0
    assert db.store.purge_delivered(0.0) == 3


def test_expired_lease_is_reclaimed_and_the_stale_write_changes_nothing(db: OutboxDb) -> None:
    insert_tasks(db.engine, 3)
    stale_token, stale = db.store.claim(10, lease_seconds=0.3)
    assert len(stale) == 3
    assert db.store.claim(10, lease_seconds=30)[1] == []  # leased: nobody else gets them
    reclaimed: list[tuple[str, list[Any]]] = []

    def reclaim() -> bool:
        token, rows = db.store.claim(10, lease_seconds=30)
        if rows:
            reclaimed.append((token, rows))
        return bool(rows)

    wait_for(reclaim, "the expired lease's rows claimed again")
    [(token, rows)] = reclaimed
    assert sorted(r.id for r in rows) == sorted(r.id for r in stale)
    assert all(r.attempts == 2 for r in rows)
    ids = [r.id for r in stale]
    counts = db.store.finish(stale_token, delivered=ids[:1], retries=[(ids[1], 0, "x")], dead=[(ids[2], "y")])
    assert (counts.delivered, counts.retried, counts.dead_lettered) == (0, 0, 0)
    assert db.count() == 3
    assert db.store.finish(token, delivered=ids).delivered == 3
    assert db.count() == 0


async def test_retryable_error_backs_off_then_delivers(db: OutboxDb) -> None:
    [task] = insert_tasks(db.engine, 1)
    cloud = RecordingCloudTasks()
    cloud.failures[task.name] = SendError("ServiceUnavailable: try later", retryable=True)
    relay = Relay(db.engine, cloud, fast_settings(backoff_initial=30, backoff_max=60))
    stats = await relay.run(until_idle=True)
    assert stats.retried == 1
    with db.engine.connect() as conn:
        row = conn.execute(select(_o.attempts, _o.lease_token, _o.last_error, _o.available_at > db_now(10))).one()
    assert row[0] == 1
    assert row[1] is None
    assert "try later" in row[2]
    assert row[3]
    assert db.store.stats().ready == 0
    del cloud.failures[task.name]
    with db.engine.begin() as conn:
        conn.execute(update(outbox_table).values(available_at=db_now()))
    stats = await relay.run(until_idle=True)
    assert cloud.created == [task.name]
    assert db.count() == 0


async def test_permanent_error_dead_letters_with_the_reason_and_requeue_brings_it_back(db: OutboxDb) -> None:
    bad, good = insert_tasks(db.engine, 2)
    cloud = RecordingCloudTasks()
    cloud.failures[bad.name] = SendError("InvalidArgument: Task.schedule_time is too far ahead", retryable=False)
    stats = await Relay(db.engine, cloud, fast_settings()).run(until_idle=True)
    assert (stats.delivered, stats.dead_lettered) == (1, 1)
    [letter] = db.store.dead_letters()
    assert letter.task_name == bad.name
    assert "InvalidArgument: Task.schedule_time is too far ahead" in letter.reason
    assert db.count() == 0
    del cloud.failures[bad.name]
    assert db.store.requeue([letter.id]) == 1
    assert db.store.dead_letters() == []
    await Relay(db.engine, cloud, fast_settings()).run(until_idle=True)
    assert sorted(cloud.created) == sorted([bad.name, good.name])


async def test_gives_up_after_max_attempts(db: OutboxDb) -> None:
    [task] = insert_tasks(db.engine, 1)
    cloud = RecordingCloudTasks()
    cloud.failures[task.name] = SendError("Unavailable", retryable=True)
    relay = Relay(db.engine, cloud, fast_settings(max_attempts=3, backoff_initial=0.01, backoff_max=0.01))
    async with relay.running():
        await eventually(lambda: relay.stats.dead_lettered == 1)
    assert relay.stats.retried == 2
    [letter] = db.store.dead_letters()
    assert letter.attempts == 3
    assert letter.reason.startswith("gave up after 3 attempts")


async def test_undecodable_row_is_dead_lettered(db: OutboxDb) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            insert(outbox_table).values(
                queue_path="q",
                task_name="q/tasks/x",
                request=b"\xff\xfe not a protobuf",
                created_at=db_now(),
                available_at=db_now(),
            )
        )
    stats = await Relay(db.engine, RecordingCloudTasks(), fast_settings()).run(until_idle=True)
    assert stats.dead_lettered == 1
    assert db.store.dead_letters()[0].reason.startswith("undecodable request")


async def test_outage_grows_the_backlog_the_relay_backs_off_and_recovers(db: OutboxDb) -> None:
    cloud = RecordingCloudTasks()
    cloud.down = True
    relay = Relay(db.engine, cloud, fast_settings(backoff_initial=0.2, backoff_max=0.4))
    async with relay.running():
        tasks = insert_tasks(db.engine, 20)
        await eventually(lambda: relay.stats.retried >= 20)
        tasks += insert_tasks(db.engine, 20)
        await eventually(lambda: relay.stats.retried >= 40, message="the relay retrying through the outage")
        assert cloud.created == []
        assert db.store.stats().pending == 40
        cloud.down = False
        await eventually(lambda: len(cloud.created) == 40)
    assert sorted(cloud.created) == sorted(t.name for t in tasks)
    assert db.count() == 0


async def test_stop_finishes_in_flight_work(db: OutboxDb) -> None:
    insert_tasks(db.engine, 5)
    gate = asyncio.Event()
    cloud = RecordingCloudTasks()

    class Slow(RecordingCloudTasks):
        async def send_batch_async(self, requests, *, timeout):  # type: ignore[no-untyped-def]
            await gate.wait()
            return await cloud.send_batch_async(requests, timeout=timeout)

    relay = Relay(db.engine, Slow(), fast_settings(shutdown_timeout=5))
    task = asyncio.create_task(relay.run())
    await eventually(lambda: relay.stats.claimed == 5)
    relay.stop()
    await eventually(lambda: awaiting(task, "_drain"), message="the stopped relay waiting for its sends")
    assert not task.done()
    gate.set()
    stats = await task
    assert stats.delivered == 5
    assert db.count() == 0


async def test_stop_after_the_shutdown_timeout_releases_leases(db: OutboxDb) -> None:
    insert_tasks(db.engine, 5)

    class Stuck(RecordingCloudTasks):
        async def send_batch_async(self, requests, *, timeout):  # type: ignore[no-untyped-def]
            await asyncio.sleep(3600)

    relay = Relay(db.engine, Stuck(), fast_settings(shutdown_timeout=0.2))
    task = asyncio.create_task(relay.run())
    await eventually(lambda: relay.stats.claimed == 5)
    relay.stop()
    await task
    with db.engine.connect() as conn:
        rows = conn.execute(select(_o.lease_token, _o.attempts, _o.available_at <= db_now())).all()
    assert rows == [(None, 0, True)] * 5


async def test_a_lifespan_that_ends_at_once_still_stops_the_relay(db: OutboxDb) -> None:
    relay = Relay(db.engine, RecordingCloudTasks(), fast_settings(poll_interval=3600))
    claims = ClaimCounter.attach(relay)
    async with asyncio.timeout(TIMEOUT):  # a relay that did not stop would wait out its hour-long poll
        async with relay.running():
            pass  # stop() comes before run() had a chance to start
        async with relay.running():  # and the relay can run again afterwards
            await eventually(lambda: claims.finished >= 1, message="the second run's first claim")
