"""The relay as a process: SIGTERM drains and gives leases back; metrics; options from the environment."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from fastapi_gcp_tasks.cli import build_parser
from fastapi_gcp_tasks.outbox import NullRelayClient, Relay, outbox_table
from fastapi_gcp_tasks.outbox._metrics import serve_metrics
from tests._support import free_port, wait_for
from tests.outbox.support import OutboxDb, World, fast_settings, insert_tasks

OUTBOX_BACKENDS = ("postgres", "mariadb")


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: every send hangs until its deadline."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for sock in accepted:
        sock.close()


def _relay(db: OutboxDb, host: str, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "fastapi_gcp_tasks", "relay", "--emulator-host", host, *extra]
    env = {**os.environ, "FASTAPI_GCP_TASKS_DATABASE_URL": db.url, "FASTAPI_GCP_TASKS_RELAY_POLL_INTERVAL": "0.05"}
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)


def _leases(db: OutboxDb) -> list[str | None]:
    with db.engine.connect() as conn:
        return list(conn.scalars(select(outbox_table.c.lease_token)))


def _stop(process: subprocess.Popen[str]) -> list[dict[str, object]]:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_sigterm_gives_the_leases_of_stuck_sends_back(db: OutboxDb, black_hole: str) -> None:
    insert_tasks(db.engine, 5)
    process = _relay(db, black_hole, "--send-timeout", "20", "--lease-seconds", "60", "--shutdown-timeout", "0.5")
    wait_for(lambda: all(_leases(db)), "the relay to claim every row")
    logs = _stop(process)
    assert process.returncode == 0
    assert _leases(db) == [None] * 5, "released at once, not after 60 s"
    assert db.store.stats().ready == 5
    assert logs[-1]["event"] == "relay_stopped"


def test_sigterm_finishes_work_and_exits_cleanly(db: OutboxDb, world: World) -> None:
    process = _relay(db, world.emulator.address, "--stats-interval", "0.2")
    try:
        insert_tasks(db.engine, 20)
        wait_for(lambda: db.count() == 0, lambda: f"the outbox emptied; {db.count()} rows left")
    finally:
        logs = _stop(process)
    assert process.returncode == 0
    assert db.count() == 0
    stopped = logs[-1]
    assert stopped["event"] == "relay_stopped"
    assert stopped["delivered"] == 20
    assert any(entry["event"] == "outbox_snapshot" and "oldest_age_seconds" in entry for entry in logs)


async def test_prometheus_metrics(db: OutboxDb) -> None:
    insert_tasks(db.engine, 3)
    relay = Relay(db.engine, NullRelayClient(), fast_settings(stats_interval=0.01))
    port = free_port()
    serve_metrics(relay, port, addr="127.0.0.1")
    await relay.run(until_idle=True)
    await relay.run(until_idle=True)  # a fresh snapshot, taken after the first run delivered
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert "outbox_relay_delivered_total 3.0" in text
    assert "outbox_backlog 0.0" in text
    assert "outbox_oldest_age_seconds" in text


def test_metrics_without_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'fastapi-gcp-tasks\[prometheus\]'"):
        serve_metrics(object(), 0)  # type: ignore[arg-type]


def test_every_option_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTAPI_GCP_TASKS_DATABASE_URL", "sqlite:///x.db")
    monkeypatch.setenv("FASTAPI_GCP_TASKS_RELAY_BATCH_SIZE", "7")
    monkeypatch.setenv("FASTAPI_GCP_TASKS_RELAY_NO_LISTEN", "true")
    monkeypatch.setenv("FASTAPI_GCP_TASKS_RELAY_SEND_MODE", "batch")
    args = build_parser().parse_args(["relay"])
    assert (args.database_url, args.batch_size, args.no_listen, args.send_mode) == ("sqlite:///x.db", 7, True, "batch")
    relay_parser = build_parser()._subparsers._group_actions[0].choices["relay"]  # type: ignore[union-attr, index]
    for action in relay_parser._actions:
        if action.option_strings and action.dest != "help":
            assert "[env: FASTAPI_GCP_TASKS_" in (action.help or ""), action.option_strings
