"""`fastapi-gcp-tasks outbox requeue` of many dead letters: batches, progress on stderr, a safe rerun after a crash.

Each test runs the real command in a subprocess against a real PostgreSQL or MariaDB database.
"""

from __future__ import annotations

import datetime as dt
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, insert
from sqlalchemy import select as sql_select

from fastapi_gcp_tasks.outbox import dead_letter_table, outbox_table
from fastapi_gcp_tasks.outbox._failpoints import ENV_VAR as FAILPOINT_ENV
from tests.outbox.support import QUEUE, OutboxDb

OUTBOX_BACKENDS = ("postgres", "mariadb")
ROOT = Path(__file__).resolve().parents[2]
PROG = "fastapi-gcp-tasks outbox requeue"
DEADLINE = 120.0


def bury(db: OutboxDb, count: int, *, queue: str = QUEUE, first_id: int = 1) -> None:
    """`count` dead letters with ids `first_id`, `first_id + 1`, ..."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).replace(tzinfo=None)
    rows = [
        {
            "id": first_id + i,
            "queue_path": queue,
            "task_name": f"{queue}/tasks/dead-{first_id + i}",
            "request": b"\x0a\x00",
            "created_at": now,
            "attempts": 25,
            "reason": "test",
            "dead_at": now,
        }
        for i in range(count)
    ]
    with db.engine.begin() as conn:
        conn.execute(insert(dead_letter_table), rows)


def counts(db: OutboxDb) -> tuple[int, int]:
    """(rows in the outbox, dead letters)."""
    with db.engine.connect() as conn:
        pending = conn.execute(sql_select(func.count()).select_from(outbox_table)).scalar_one()
        dead = conn.execute(sql_select(func.count()).select_from(dead_letter_table)).scalar_one()
    return int(pending), int(dead)


def environment(db: OutboxDb, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTAPI_GCP_TASKS_")}
    env.update(extra, PYTHONPATH=str(ROOT), FASTAPI_GCP_TASKS_DATABASE_URL=db.url)
    return env


def requeue(db: OutboxDb, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastapi_gcp_tasks", "outbox", "requeue", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=environment(db, **env),
        cwd=ROOT,
        check=False,
    )


def test_requeue_moves_every_dead_letter_in_batches_and_logs_each_batch(db: OutboxDb) -> None:
    bury(db, 2500)
    result = requeue(db, "--all", "--batch-size", "1000")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "requeued 2500 dead letter(s)"
    assert result.stderr.splitlines() == [
        f"{PROG}: requeued 1000 of 2500 dead letters",
        f"{PROG}: requeued 2000 of 2500 dead letters",
        f"{PROG}: requeued 2500 of 2500 dead letters",
    ]
    assert counts(db) == (2500, 0)


def test_the_batch_size_comes_from_the_environment_and_a_bad_one_is_a_usage_error(db: OutboxDb) -> None:
    bury(db, 5)
    result = requeue(db, "--all", FASTAPI_GCP_TASKS_OUTBOX_BATCH_SIZE="2")
    assert result.returncode == 0, result.stderr
    assert len(result.stderr.splitlines()) == 3  # 2 + 2 + 1
    assert result.stderr.splitlines()[-1] == f"{PROG}: requeued 5 of 5 dead letters"
    refused = requeue(db, "--all", "--batch-size", "0")
    assert refused.returncode == 2
    assert "--batch-size: must be at least 1" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_only_the_given_queue_and_ids_are_requeued(db: OutboxDb) -> None:
    other = QUEUE.replace("outbox-test", "other")
    bury(db, 30)
    bury(db, 10, queue=other, first_id=1000)
    result = requeue(db, "--all", "--queue", other, "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == f"{PROG}: requeued 10 of 10 dead letters"
    assert counts(db) == (10, 30)
    by_id = requeue(db, "--id", "3", "--id", "4", "--id", "999")
    assert by_id.returncode == 0, by_id.stderr
    assert by_id.stdout.strip() == "requeued 2 dead letter(s)"
    assert counts(db) == (12, 28)


def test_a_run_killed_between_batches_leaves_a_prefix_requeued_and_a_rerun_finishes(db: OutboxDb) -> None:
    bury(db, 2500)
    process = subprocess.Popen(
        [sys.executable, "-m", "fastapi_gcp_tasks", "outbox", "requeue", "--all", "--batch-size", "1000"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=environment(db, **{FAILPOINT_ENV: "requeued-batch"}),
        cwd=ROOT,
    )
    assert process.stderr is not None
    try:
        seen = []
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("failpoint requeued-batch"):
                break
        assert seen[-1:] == ["failpoint requeued-batch\n"], seen
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        process.stderr.close()

    assert counts(db) == (1000, 1500)
    with db.engine.connect() as conn:
        requeued = sorted(conn.scalars(sql_select(outbox_table.c.id)))
    assert requeued == list(range(1, 1001))  # the oldest ids first: a prefix

    rerun = requeue(db, "--all", "--batch-size", "1000")
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip() == "requeued 1500 dead letter(s)"
    assert counts(db) == (2500, 0)


@pytest.mark.backends("postgres")
def test_on_a_terminal_the_progress_is_one_line_rewritten_in_place(db: OutboxDb) -> None:
    bury(db, 30)
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "fastapi_gcp_tasks", "outbox", "requeue", "--all", "--batch-size", "10"],
            stderr=follower,
            stdout=subprocess.PIPE,
            env=environment(db),
            cwd=ROOT,
        )
        os.close(follower)
        follower = -1
        output = b""
        while True:
            ready, _, _ = select.select([leader], [], [], DEADLINE)
            assert ready, "no output from the command"
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the command exited
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(DEADLINE) == 0
        assert process.stdout is not None
        assert process.stdout.read().strip() == b"requeued 30 dead letter(s)"
        process.stdout.close()
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    text = output.decode().replace("\r\n", "\n")  # the terminal turns the final newline into CRLF
    steps = [f"\r\x1b[Krequeued {n} of 30 dead letters" for n in (10, 20, 30)]
    assert text == "".join(steps) + "\n"
    assert PROG not in text
