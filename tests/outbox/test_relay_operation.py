"""The relay in operation: every client failure recorded, no busy loop in an outage, sends bounded by the lease,
queues created (or their absence explained), quiet logs, and an exit on a database it cannot reach.

On PostgreSQL (LISTEN/NOTIFY) and MariaDB (polling), with Cloud Tasks stand-ins for foreign exceptions and hangs,
the emulator over real gRPC for queue creation, and a relay subprocess whose CPU time is read from /proc.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as core
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import tasks_v2
from sqlalchemy import func, make_url, select

from fastapi_gcp_tasks import emulator_client
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.exception import FastAPIGCPTasksError
from fastapi_gcp_tasks.outbox import CloudTasksRelayClient, Relay, dead_letter_table, outbox_table
from fastapi_gcp_tasks.outbox._relay import RelayDatabaseError
from tests._support import free_port
from tests.outbox.support import OutboxDb, RecordingCloudTasks, drain, eventually, fast_settings, insert_tasks

OUTBOX_BACKENDS = ("postgres", "mariadb")
REPO = Path(__file__).resolve().parents[2]
_o = outbox_table.c
_d = dead_letter_table.c


def _min_attempts(db: OutboxDb) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.min(_o.attempts), 0))).scalar_one())


def _dead(db: OutboxDb) -> list[tuple[int, str]]:
    with db.engine.connect() as conn:
        return [(row.attempts, row.reason) for row in conn.execute(select(_d.attempts, _d.reason))]


def _events(caplog: pytest.LogCaptureFixture, event: str, level: int | None = None) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event and (level is None or r.levelno == level)]


class BrokenClient:
    """A custom client with a bug: it raises an exception that is none of the library's."""

    def __init__(self) -> None:
        self.calls = 0

    async def send_batch_async(
        self, requests: Sequence[tasks_v2.CreateTaskRequest], *, timeout: float
    ) -> list[tasks_v2.Task | FastAPIGCPTasksError]:
        self.calls += 1
        raise RuntimeError("custom client bug")


async def test_a_foreign_exception_is_recorded_counted_and_dead_lettered_at_max_attempts(
    db: OutboxDb, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="outbox.relay")
    insert_tasks(db.engine, 2)
    client = BrokenClient()
    relay = Relay(db.engine, client, fast_settings(max_attempts=3))
    await drain(db, relay)
    dead = _dead(db)
    assert [attempts for attempts, _ in dead] == [3, 3]
    assert all(
        "gave up after 3 attempts" in reason and "RuntimeError: custom client bug" in reason for _, reason in dead
    )
    assert client.calls <= 6  # never more attempts than max_attempts per row
    assert relay.stats.retried == 4
    assert relay.stats.dead_lettered == 2
    explained = _events(caplog, "send_failed", logging.ERROR)
    assert len(explained) == 1, "the cause is explained once, then only counted"
    assert "custom client bug" in explained[0].getMessage()
    assert "Hint:" in explained[0].getMessage()
    assert explained[0].exc_info is not None
    assert not [r for r in caplog.records if r.name == "asyncio"]


async def test_missing_credentials_show_in_status_with_a_hint(db: OutboxDb, caplog: pytest.LogCaptureFixture) -> None:
    def no_credentials() -> tasks_v2.CloudTasksAsyncClient:
        raise DefaultCredentialsError("Your default credentials were not found.")  # type: ignore[no-untyped-call]

    insert_tasks(db.engine, 3)
    relay = Relay(db.engine, CloudTasksRelayClient(no_credentials), fast_settings())
    async with relay.running():
        await eventually(lambda: _min_attempts(db) >= 2, message="every row attempted twice")
    snapshot = db.store.stats()
    assert snapshot.pending == 3
    assert snapshot.retrying == 3
    assert snapshot.last_error is not None
    assert "DefaultCredentialsError" in snapshot.last_error
    assert "GOOGLE_APPLICATION_CREDENTIALS" in snapshot.last_error
    [explained] = _events(caplog, "send_failed", logging.ERROR)
    assert "gcloud auth application-default login" in explained.getMessage()


class SlowCloudTasks:
    """Stands in for `CloudTasksAsyncClient`: each create_task hangs for `hang` seconds (by default, until its own
    deadline), then fails with DEADLINE_EXCEEDED. It records sends of one name that overlap: a double claim."""

    def __init__(self, hang: float | None = None) -> None:
        self.hang = hang
        self.in_flight: set[str] = set()
        self.starts: collections.Counter[str] = collections.Counter()
        self.overlaps: list[str] = []

    async def create_task(self, *, request: tasks_v2.CreateTaskRequest, timeout: float) -> tasks_v2.Task:
        name = request.task.name
        if name in self.in_flight:
            self.overlaps.append(name)
        self.in_flight.add(name)
        self.starts[name] += 1
        try:
            await asyncio.sleep(timeout if self.hang is None else self.hang)
            raise core.DeadlineExceeded("Deadline Exceeded")  # type: ignore[no-untyped-call]
        finally:
            self.in_flight.discard(name)


@pytest.mark.parametrize("hang", [None, 3600.0], ids=["per-call-deadline", "hangs-forever"])
async def test_sends_end_before_their_lease_so_rows_are_never_claimed_twice(
    db: OutboxDb, hang: float | None, caplog: pytest.LogCaptureFixture
) -> None:
    # A batch of 3 sent one call at a time with a 1 s deadline each takes 3 s (or forever); the lease is 2 s.
    # Relay A claims the rows, then relay B waits for them: a send of A outliving its lease would let B claim and
    # send the same rows while A is still sending them, and A's late outcome would find its lease lost.
    insert_tasks(db.engine, 3)
    cloud = SlowCloudTasks(hang)
    settings = fast_settings(lease_seconds=2.0, send_timeout=1.0, batch_size=3, concurrency=1)
    first, second = (
        Relay(db.engine, CloudTasksRelayClient(lambda: cloud, concurrency=1, auto_create_queue=False), settings)  # type: ignore[arg-type, return-value]
        for _ in range(2)
    )
    async with first.running():
        await eventually(lambda: first.stats.claimed == 3, message="relay A claimed every row")
        async with second.running():
            await eventually(lambda: _min_attempts(db) >= 2, timeout=30, message="every row attempted twice")
    assert cloud.overlaps == []
    assert [first.stats.lease_lost, second.stats.lease_lost] == [0, 0]
    assert _dead(db) == []
    assert db.store.stats().retrying == 3
    cutoffs = [r for r in _events(caplog, "send_failed", logging.ERROR) if getattr(r, "kind", "") == "lease_cutoff"]
    assert 1 <= len(cutoffs) <= 2  # sends were cut off; one explanation per relay


def _ok_app() -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    return app


async def test_the_relay_creates_a_missing_queue_by_default(db: OutboxDb, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="outbox.relay")
    queue = f"projects/test-project/locations/us-central1/queues/fresh-{db.backend}"
    with Emulator(deliver_to=_ok_app()) as emulator:
        insert_tasks(db.engine, 3, queue=queue)
        client = CloudTasksRelayClient.for_emulator(emulator.address, mode="batch")
        try:
            stats = await drain(db, Relay(db.engine, client, fast_settings()))
        finally:
            await client.close()
        assert stats.delivered == 3
        assert stats.retried == 0
        assert emulator_client(host=emulator.address).get_queue(name=queue).name == queue
    assert len(_events(caplog, "queue_ensured")) == 1


async def test_without_auto_create_not_found_names_the_queue_and_the_fix_once(
    db: OutboxDb, caplog: pytest.LogCaptureFixture
) -> None:
    queue = f"projects/test-project/locations/us-central1/queues/absent-{db.backend}"
    with Emulator(deliver_to=_ok_app()) as emulator:
        insert_tasks(db.engine, 2, queue=queue)
        client = CloudTasksRelayClient.for_emulator(emulator.address, auto_create_queue=False)
        try:
            async with Relay(db.engine, client, fast_settings()).running():
                await eventually(lambda: _min_attempts(db) >= 3, timeout=20, message="rows retried")
        finally:
            await client.close()
    [warning] = _events(caplog, "queue_not_found", logging.WARNING)
    assert queue in warning.getMessage()
    assert "auto_create_queue=True" in warning.getMessage()
    assert "NOT_FOUND" in str(db.store.stats().last_error)


async def test_logs_each_task_at_debug_and_a_summary_only_when_something_changed(
    db: OutboxDb, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="outbox.relay")
    relay = Relay(db.engine, RecordingCloudTasks(), fast_settings(stats_interval=0.05))
    snapshots = 0
    read_stats = relay.store.stats

    def counting_stats() -> Any:
        nonlocal snapshots
        snapshots += 1
        return read_stats()

    relay.store.stats = counting_stats  # type: ignore[method-assign]
    async with relay.running():
        await eventually(lambda: snapshots >= 8, message="idle snapshots")
        assert len(_events(caplog, "outbox_snapshot")) == 1, "an idle relay logs its state once"
        tasks = insert_tasks(db.engine, 3)
        await eventually(lambda: relay.stats.delivered == 3)
        seen = snapshots
        await eventually(lambda: snapshots >= seen + 8, message="snapshots after the work")
    summaries = _events(caplog, "outbox_snapshot")
    assert 2 <= len(summaries) <= 4  # the start, then what the delivery changed (pending and counters)
    created = {r.getMessage() for r in _events(caplog, "task_created", logging.DEBUG)}
    assert created == {f"created {task.name}" for task in tasks}


async def test_a_wrong_database_url_ends_run_after_the_given_number_of_failures(db: OutboxDb) -> None:
    url = make_url(db.url).set(database="fgt_no_such_database")
    relay = Relay(url, RecordingCloudTasks(), fast_settings())
    try:
        async with asyncio.timeout(30):
            with pytest.raises(RelayDatabaseError, match="3 claims in a row failed") as raised:
                await relay.run(max_database_failures=3)
    finally:
        relay.engine.dispose()
    assert "--database-url" in str(raised.value)
    assert relay.stats.database_errors == 3


def _cpu_seconds(pid: int) -> float:
    # utime and stime (fields 14 and 15 of /proc/PID/stat) cover every thread of the process.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _total_attempts(db: OutboxDb) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(_o.attempts), 0))).scalar_one())


@pytest.mark.slow
async def test_an_outage_while_the_app_keeps_committing_costs_the_relay_under_5_percent_of_a_core(
    db: OutboxDb, tmp_path: Path
) -> None:
    settings = {
        "poll_interval": 1.0,
        "lease_seconds": 10.0,
        "send_timeout": 2.0,
        "backoff_initial": 0.2,
        "backoff_max": 1.0,
        "outage_pause_max": 1.0,  # short pauses: the relay keeps trying through the window
        "stats_interval": 60.0,
    }
    log = tmp_path / "relay.log"
    with log.open("wb") as stderr:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.outbox.relay_child",
            db.url,
            f"127.0.0.1:{free_port()}",
            json.dumps(settings),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    committing = threading.Event()
    committing.set()

    def app() -> None:  # 50 commits a second, each one a NOTIFY on PostgreSQL
        while committing.is_set():
            insert_tasks(db.engine, 1)
            time.sleep(0.02)

    writer = threading.Thread(target=app, daemon=True)
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 60) == b"started\n"
        writer.start()
        await eventually(lambda: _total_attempts(db) > 0 and db.store.stats().retrying > 0, timeout=30)
        cpu_start, start, attempts_start, rows_start = (
            _cpu_seconds(child.pid),
            time.monotonic(),
            _total_attempts(db),
            db.count(),
        )
        # The window ends on a condition: at least 5 s, and the relay seen retrying several times meanwhile.
        await eventually(
            lambda: time.monotonic() - start >= 5.0 and _total_attempts(db) >= attempts_start + 3,
            timeout=60,
            message="the relay kept retrying",
        )
        cpu, elapsed = _cpu_seconds(child.pid) - cpu_start, time.monotonic() - start
        assert child.returncode is None, log.read_text()
        assert db.count() > rows_start + 100, "the app kept committing during the window"
        print(
            f"relay CPU during the outage ({db.backend}): {cpu:.3f}s in {elapsed:.1f}s = {cpu / elapsed:.1%}, "
            f"{_total_attempts(db) - attempts_start} attempts"
        )
        assert cpu / elapsed < 0.05, f"{cpu:.2f}s of CPU in {elapsed:.1f}s\n{log.read_text()[-3000:]}"
    finally:
        committing.clear()
        if writer.is_alive():
            writer.join(10)
        child.terminate()
        returncode = await asyncio.wait_for(child.wait(), 30)
    assert returncode == 0, log.read_text()[-3000:]
