"""Concurrent writers and relays on the servers that support them (PostgreSQL and MariaDB)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.orm import Session

from fastapi_gcp_tasks.dispatch._sink import PreparedTask
from fastapi_gcp_tasks.outbox import NOTIFY_CHANNEL, OutboxSink, Relay
from fastapi_gcp_tasks.outbox._engine import relay_engine
from tests._support import TIMEOUT
from tests.outbox.proxy import OutageProxy
from tests.outbox.support import (
    ClaimCounter,
    OutboxDb,
    RecordingCloudTasks,
    eventually,
    fast_settings,
    insert_tasks,
    prepared,
)

OUTBOX_BACKENDS = ("postgres", "mariadb")


async def test_reverse_commit_order_with_one_rollback_delivers_each_committed_row_once(db: OutboxDb) -> None:
    cloud = RecordingCloudTasks()
    relay = Relay(db.url, cloud, fast_settings(poll_interval=0.02))
    claims = ClaimCounter.attach(relay)
    sessions = [Session(db.engine) for _ in range(4)]
    tasks = [prepared() for _ in range(4)]
    try:
        async with relay.running():
            for session, task in zip(sessions, tasks, strict=True):
                session.begin()
                OutboxSink(session).submit(task)
                session.flush()  # ids 1..4 are taken in this order; commits come in reverse
            await claims.another()
            assert cloud.created == []  # nothing committed yet
            sessions[3].commit()
            await eventually(lambda: cloud.created == [tasks[3].name])
            sessions[2].commit()
            await eventually(lambda: len(cloud.created) == 2)
            sessions[1].rollback()
            sessions[0].commit()
            await eventually(lambda: len(cloud.created) == 3)
            await claims.another()  # the relay looked again after the last commit: a duplicate would show now
    finally:
        for session in sessions:
            session.close()
        relay.engine.dispose()
    assert cloud.created == [tasks[3].name, tasks[2].name, tasks[0].name]
    assert cloud.already_existed == []
    assert db.count() == 0


def test_concurrent_claims_never_share_a_row(db: OutboxDb) -> None:
    insert_tasks(db.engine, 600)
    claimed: list[list[int]] = [[], [], []]
    engines = [relay_engine(db.url) for _ in claimed]

    def claimer(index: int) -> None:
        from fastapi_gcp_tasks.outbox import OutboxStore

        store = OutboxStore(engines[index])
        while True:
            _, rows = store.claim(7, lease_seconds=60)
            if not rows:
                return
            claimed[index].extend(r.id for r in rows)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(len(claimed))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.dispose()
    everything = [row_id for ids in claimed for row_id in ids]
    assert len(everything) == len(set(everything)) == 600
    assert all(claimed), "each claimer got some rows"


async def test_two_relays_at_once_send_each_row_once(db: OutboxDb) -> None:
    tasks = insert_tasks(db.engine, 1000)
    cloud = RecordingCloudTasks()
    relays = [Relay(db.url, cloud, fast_settings(batch_size=25, concurrency=2)) for _ in range(2)]
    try:
        stats = await asyncio.gather(*(relay.run(until_idle=True) for relay in relays))
    finally:
        for relay in relays:
            relay.engine.dispose()
    assert sorted(cloud.created) == sorted(t.name for t in tasks)
    assert cloud.already_existed == []
    assert stats[0].delivered + stats[1].delivered == 1000
    assert stats[0].delivered > 0
    assert stats[1].delivered > 0


def _cut_connections(db: OutboxDb) -> int:
    """Kill every other connection to the test database, as a restart or a network cut would."""
    database = db.engine.url.database
    with db.engine.connect() as conn:
        if db.backend == "postgres":
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).all()
            )
        ids = (
            conn.execute(
                text("SELECT id FROM information_schema.processlist WHERE db = :db AND id <> connection_id()"),
                {"db": database},
            )
            .scalars()
            .all()
        )
        for connection_id in ids:
            conn.execute(text(f"KILL CONNECTION {int(connection_id)}"))
        return len(ids)


async def test_relay_recovers_when_its_connections_are_cut(db: OutboxDb) -> None:
    cloud = RecordingCloudTasks()
    relay = Relay(db.url, cloud, fast_settings(poll_interval=0.05))
    tasks: list[PreparedTask] = []
    try:
        async with relay.running():
            for round_ in range(1, 5):
                tasks += insert_tasks(db.engine, 30)
                await eventually(lambda n=30 * round_: len(cloud.created) == n, timeout=15)  # type: ignore[misc]
                if round_ < 4:
                    assert await asyncio.to_thread(_cut_connections, db) >= 1
    finally:
        relay.engine.dispose()
    assert sorted(cloud.created) == sorted(t.name for t in tasks)
    assert db.count() == 0


@pytest.mark.backends("postgres")
async def test_notify_wakes_an_idle_relay(db: OutboxDb) -> None:
    """A listening relay is woken by the commit; beside it, one that does not listen sleeps on (the control).

    Both poll every 30 s, so only a notification can make either claim again before the test ends.
    """
    listening, deaf = RecordingCloudTasks(), RecordingCloudTasks()
    relays = [
        Relay(db.url, listening, fast_settings(poll_interval=30, listen=True)),
        Relay(db.url, deaf, fast_settings(poll_interval=30, listen=False)),
    ]
    counters = [ClaimCounter.attach(relay) for relay in relays]
    try:
        async with relays[0].running(), relays[1].running():
            await eventually(lambda: all(c.finished >= 1 for c in counters), message="first, empty claims")
            deaf_claims = counters[1].finished
            insert_tasks(db.engine, 1)
            await eventually(lambda: len(listening.created) == 1, message="the listening relay woken")
            assert counters[1].finished == deaf_claims
            assert deaf.created == []
    finally:
        for relay in relays:
            relay.engine.dispose()


async def test_relay_recovers_when_the_database_is_unreachable_for_a_while(db: OutboxDb) -> None:
    url = make_url(db.url)
    with OutageProxy(f"{url.host}:{url.port or (5432 if db.backend == 'postgres' else 3306)}") as proxy:
        through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        cloud = RecordingCloudTasks()
        relay = Relay(through_proxy, cloud, fast_settings(poll_interval=0.05))
        tasks: list[PreparedTask] = []
        try:
            async with relay.running():
                tasks += insert_tasks(db.engine, 10)
                await eventually(lambda: len(cloud.created) == 10)
                proxy.cut()  # as a restart looks from the relay: connections drop, new ones are refused
                tasks += insert_tasks(db.engine, 10)
                await eventually(lambda: relay.stats.database_errors >= 2, timeout=15)
                assert len(cloud.created) == 10
                proxy.restore()
                await eventually(lambda: len(cloud.created) == 20, timeout=20)
        finally:
            relay.engine.dispose()
    assert sorted(cloud.created) == sorted(t.name for t in tasks)
    assert db.count() == 0


@pytest.mark.backends("postgres")
def test_one_notification_per_transaction(db: OutboxDb) -> None:
    import psycopg

    conninfo = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        insert_tasks(db.engine, 50)  # 50 INSERT statements, one transaction
        insert_tasks(db.engine, 1)
        # Notifications arrive in commit order: once this sentinel is in, every earlier one is too.
        with db.engine.begin() as conn:
            conn.execute(text("SELECT pg_notify(:channel, 'sentinel')"), {"channel": NOTIFY_CHANNEL})
        received = []
        notifies = listener.notifies(timeout=TIMEOUT)
        try:
            for notify in notifies:
                if notify.payload == "sentinel":
                    break
                received.append(notify)
            else:
                pytest.fail(f"the sentinel notification did not arrive within {TIMEOUT:g}s")
        finally:
            notifies.close()
    assert len(received) == 2
