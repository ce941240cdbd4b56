"""The relay CLI killed with SIGKILL at each dangerous point: nothing is lost, and the redelivery is deduplicated.

Each test starts `fastapi-gcp-tasks relay` in a subprocess with a failpoint (see `outbox/_failpoints.py`) that
freezes it right after claiming, right after Cloud Tasks created the tasks, or inside the uncommitted terminal
write; kills it there; then lets a fresh relay take the rows over once their lease has expired.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fastapi_gcp_tasks.outbox import outbox_table, use_outbox
from fastapi_gcp_tasks.outbox._failpoints import ENV_VAR
from tests.outbox.support import OutboxDb, World, eventually

LEASE_SECONDS = 2.0


def _start_relay(db: OutboxDb, world: World, failpoint: str) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "fastapi_gcp_tasks", "relay",
        "--database-url", db.url,
        "--emulator-host", world.emulator.address,
        "--send-mode", "batch",
        "--lease-seconds", str(LEASE_SECONDS),
        "--send-timeout", "1",
        "--poll-interval", "0.05",
        "--log-format", "json",
    ]  # fmt: skip
    env = {**os.environ, ENV_VAR: failpoint}
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)


def _wait_for_line(process: subprocess.Popen[str], wanted: str, timeout: float = 30.0) -> list[str]:
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if line.strip() == wanted:
            return seen
    process.kill()
    raise AssertionError(f"the relay never printed {wanted!r}; stderr:\n{''.join(seen)}")


def _leased(db: OutboxDb) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(outbox_table.c.lease_token.is_not(None))).scalar_one())


@pytest.mark.parametrize(
    ("failpoint", "created_before_kill"), [("claimed", False), ("sent", True), ("finishing", True)]
)
async def test_sigkill_loses_nothing(db: OutboxDb, world: World, failpoint: str, created_before_kill: bool) -> None:
    with Session(db.engine) as session, session.begin(), use_outbox(session):
        names = [world.hello.delay(name=f"k{i}").name for i in range(10)]

    process = _start_relay(db, world, failpoint)
    try:
        _wait_for_line(process, f"failpoint {failpoint}")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    assert db.count() == 10, "the killed relay changed no row for good"
    assert _leased(db) == 10, "its lease still holds the rows"
    await world.emulator.wait_until_idle_async(timeout=10)
    assert len(world.received) == (10 if created_before_kill else 0)

    relay = world.relay(db, lease_seconds=5.0)
    async with relay.running():
        await eventually(lambda: db.count() == 0, timeout=LEASE_SECONDS + 10)
    await world.emulator.wait_until_idle_async(timeout=10)
    assert sorted(world.received) == sorted(f"k{i}" for i in range(10)), "each task ran exactly once"
    assert relay.stats.delivered == 10
    assert relay.stats.already_existed == (10 if created_before_kill else 0)
    assert len(set(names)) == 10
