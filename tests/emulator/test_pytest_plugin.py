"""The pytest plugin: its fixtures work, and importing it starts nothing."""

from __future__ import annotations

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
