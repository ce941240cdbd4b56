"""The pytest plugin: its fixtures work, and importing it starts nothing."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from google.cloud import tasks_v2

from fastapi_gcp_tasks.emulator import Emulator

from ._tasks_support import LOCATION


def test_function_fixture_is_a_running_emulator(gcp_tasks_emulator: Emulator) -> None:
    client = gcp_tasks_emulator.tasks_client()
    queue = client.create_queue(parent=LOCATION, queue=tasks_v2.Queue(name=f"{LOCATION}/queues/plugin"))
    assert queue.state == tasks_v2.Queue.State.RUNNING
    assert gcp_tasks_emulator.address.startswith("127.0.0.1:")


def test_session_fixture_is_shared(gcp_tasks_emulator_session: Emulator, gcp_tasks_emulator: Emulator) -> None:
    assert gcp_tasks_emulator_session is not gcp_tasks_emulator
    assert gcp_tasks_emulator_session.address != gcp_tasks_emulator.address


def test_importing_the_plugin_loads_no_emulator_module() -> None:
    code = (
        "import sys, fastapi_gcp_tasks.testing.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.startswith('fastapi_gcp_tasks.emulator')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


PLUGIN_USER_TESTS = """
import os

from fastapi_gcp_tasks.transport import _clients

ENV = "FASTAPI_GCP_TASKS_EMULATOR_HOST"
seen = {}


def test_function_scoped(gcp_tasks_emulator):
    assert os.environ[ENV] == gcp_tasks_emulator.address
    seen["function"] = _clients._shared_tasks.get()


def test_then_the_variable_and_the_clients_are_as_before():
    assert os.environ.get(ENV) == "before:1"
    assert _clients._shared_tasks._created is None


def test_shared(gcp_tasks_shared_emulator, gcp_tasks_emulator_session):
    assert gcp_tasks_shared_emulator is gcp_tasks_emulator_session
    assert os.environ[ENV] == gcp_tasks_shared_emulator.address
    assert _clients._shared_tasks.get() is not seen["function"]
"""


def test_the_fixtures_point_the_default_clients_at_their_emulator_and_undo_it(tmp_path: pathlib.Path) -> None:
    (tmp_path / "test_user.py").write_text(PLUGIN_USER_TESTS)
    env = {**os.environ, "FASTAPI_GCP_TASKS_EMULATOR_HOST": "before:1"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
        "-W",
        "error",
        "test_user.py",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
