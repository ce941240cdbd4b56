"""`fastapi-gcp-tasks relay --auto-create-queue` (the default) and `--no-auto-create-queue`, end to end.

The relay command runs in a subprocess against a real PostgreSQL database and the emulator over real gRPC, with
the outbox's queue missing: by default the relay creates it and the rows are delivered; with the flag off (or its
environment variable saying no) the queue stays missing and the rows wait with a NOT_FOUND error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as core

from fastapi_gcp_tasks.emulator import Emulator
from tests._support import wait_for
from tests.outbox.support import QUEUE, OutboxDb, insert_tasks

OUTBOX_BACKENDS = ("postgres",)
ROOT = Path(__file__).resolve().parents[2]


async def accept(scope: Any, receive: Any, send: Any) -> None:
    """A worker that acknowledges every delivery."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(deliver_to=accept) as emu:  # no queue exists
        yield emu


def relay(db: OutboxDb, emulator: Emulator, *args: str, **env: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTAPI_GCP_TASKS_")}
    environment.update(
        env,
        PYTHONPATH=str(ROOT),
        FASTAPI_GCP_TASKS_DATABASE_URL=db.url,
        FASTAPI_GCP_TASKS_RELAY_POLL_INTERVAL="0.05",
        FASTAPI_GCP_TASKS_RELAY_BACKOFF_INITIAL="0.1",
        FASTAPI_GCP_TASKS_RELAY_BACKOFF_MAX="0.5",
        FASTAPI_GCP_TASKS_RELAY_OUTAGE_PAUSE_MAX="0.5",
    )
    command = [sys.executable, "-m", "fastapi_gcp_tasks", "relay", "--emulator-host", emulator.address, *args]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment)


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    return stderr


def queue_exists(emulator: Emulator) -> bool:
    try:
        emulator.tasks_client().get_queue(name=QUEUE)
    except core.NotFound:
        return False
    return True


def test_by_default_the_relay_creates_the_missing_queue(db: OutboxDb, emulator: Emulator) -> None:
    insert_tasks(db.engine, 3)
    process = relay(db, emulator)
    try:
        wait_for(lambda: db.count() == 0, "the relay to send every row", timeout=60)
    finally:
        stop(process)
    assert queue_exists(emulator)
    assert len(list(emulator.tasks_client().list_tasks(parent=QUEUE))) + len(emulator.deliveries) >= 3


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_turned_off_the_queue_stays_missing_and_the_rows_wait(db: OutboxDb, emulator: Emulator, how: str) -> None:
    insert_tasks(db.engine, 3)
    if how == "flag":
        process = relay(db, emulator, "--no-auto-create-queue")
    else:
        process = relay(db, emulator, FASTAPI_GCP_TASKS_RELAY_AUTO_CREATE_QUEUE="no")
    try:
        wait_for(
            lambda: "NOT_FOUND" in (db.store.stats().last_error or ""), "the rows to fail with NOT_FOUND", timeout=60
        )
    finally:
        stderr = stop(process)
    assert not queue_exists(emulator)
    assert db.count() == 3
    assert QUEUE in stderr  # the warning names the queue
