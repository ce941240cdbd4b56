"""`fastapi-gcp-tasks emulator` as a process: options from flags and environment, queues, clean stop on signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from google.cloud import tasks_v2

from fastapi_gcp_tasks.utils import emulator_client
from tests._support import free_port, listening_socket

from ._tasks_support import QUEUE


@contextmanager
def _emulator(args: list[str], env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "fastapi_gcp_tasks.emulator", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "export FASTAPI_GCP_TASKS_EMULATOR_HOST=" in line:
                break
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        process.stderr.close()


def _address(lines: list[str]) -> str:
    # stderr is not a terminal here: the log lines are JSON, the address ends before the closing quote
    match = re.search(r"FASTAPI_GCP_TASKS_EMULATOR_HOST=([^\s\"]+)", "".join(lines))
    assert match, "".join(lines)
    return match.group(1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_the_given_queues_and_stops_cleanly_on_a_signal(signum: signal.Signals) -> None:
    port = free_port()
    with _emulator(["--port", str(port), "--http-port", "0", "--queue", QUEUE]) as (process, lines):
        address = _address(lines)
        assert address == f"127.0.0.1:{port}"
        client = emulator_client(host=address)
        assert client.get_queue(name=QUEUE).state == tasks_v2.Queue.State.RUNNING
        client.transport.close()  # type: ignore[no-untyped-call, unused-ignore]
        process.send_signal(signum)
        assert process.wait(10) == 0


def test_options_come_from_the_environment_too() -> None:
    port = free_port()
    env = {
        "FASTAPI_GCP_TASKS_EMULATOR_PORT": str(port),
        "FASTAPI_GCP_TASKS_EMULATOR_HTTP_PORT": "0",
        "FASTAPI_GCP_TASKS_EMULATOR_QUEUES": f"{QUEUE},{QUEUE}-2",
    }
    with _emulator([], env) as (process, lines):
        client = emulator_client(host=_address(lines))
        assert client.get_queue(name=QUEUE + "-2").name == QUEUE + "-2"
        client.transport.close()  # type: ignore[no-untyped-call, unused-ignore]
        process.terminate()
        assert process.wait(10) == 0


def test_binding_beyond_loopback_warns() -> None:
    with _emulator(["--host", "0.0.0.0", "--port", "0", "--http-port", "0"]) as (process, lines):
        process.terminate()
        assert process.wait(10) == 0
    assert any("anyone who can reach this address" in line for line in lines), lines


def test_a_bad_queue_path_is_refused_with_exit_code_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fastapi_gcp_tasks.emulator", "--port", "0", "--queue", "queues/bad"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "queues/bad" in result.stderr


@pytest.mark.parametrize("busy", ["grpc", "http"])
def test_a_busy_port_is_reported(busy: str) -> None:
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        ports = (
            ["--port", str(port), "--http-port", "0"] if busy == "grpc" else ["--port", "0", "--http-port", str(port)]
        )
        result = subprocess.run(
            [sys.executable, "-m", "fastapi_gcp_tasks.emulator", *ports],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    expected = "cannot listen on" if busy == "grpc" else "cannot serve its OIDC documents on"
    assert f"{expected} 127.0.0.1:{port}" in result.stderr
