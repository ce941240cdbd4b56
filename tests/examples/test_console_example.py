"""The console example runs on the emulator as its docstring says, and its console shows what happened."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.history import migrate
from tests._support import listening_socket, serve_asgi, wait_for
from tests._support.ports import url_of

ROOT = Path(__file__).resolve().parents[2]
MODULE = "examples.console.app"


@pytest.fixture
def example(
    gcp_tasks_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[ModuleType, str, Emulator]]:
    sock = listening_socket()
    database = f"sqlite:///{tmp_path / 'history.db'}"
    migrate(database)
    monkeypatch.setenv("APP_URL", url_of(sock))
    monkeypatch.setenv("CONSOLE_DATABASE_URL", database)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop(MODULE, None)
    module = importlib.import_module(MODULE)
    try:
        with serve_asgi(module.app, sock) as url:
            yield module, url, gcp_tasks_emulator
    finally:
        module.history.close()
        sys.modules.pop(MODULE, None)


def test_the_demo_fills_the_console_with_successes_a_retry_and_a_dead_letter(
    example: tuple[ModuleType, str, Emulator],
) -> None:
    module, url, emulator = example
    created = httpx.post(f"{url}/demo").json()["tasks"]
    assert len(created) == 6
    wait_for(lambda: module.letters.count() == 1, "the feed import to be given up into the dead-letter store")
    wait_for(lambda: [r.status for r in emulator.deliveries].count(200) == 6, "every task to come to its end")
    assert module.history.flush()
    overview = httpx.get(f"{url}/console/")
    assert overview.status_code == 200
    assert "/tasks/charge" in overview.text
    letters = httpx.get(f"{url}/console/dead-letters")
    assert "/tasks/import-feed" in letters.text
    assert "max_retries" in letters.text
    charge = module.history.find(endpoint="/tasks/charge").items
    assert sorted(task.status for task in charge) == ["succeeded", "succeeded"]
    [stored] = [module.history.get(task.task_name) for task in charge[:1]]
    assert stored is not None
    assert stored.arguments is not None
    assert stored.arguments["order"]["card_token"] == "[redacted]"
    assert [attempt.status_code for attempt in stored.attempts] == [503, 200]


def test_the_console_refuses_a_remote_client(example: tuple[ModuleType, str, Emulator]) -> None:
    _, url, _ = example
    response = httpx.get(f"{url}/console/", headers={"host": "console.example.com"})
    assert response.status_code == 403


@pytest.mark.slow
def test_the_example_runs_as_a_script() -> None:
    sock = listening_socket()  # a free port for the script's server
    port = sock.getsockname()[1]
    sock.close()
    result = subprocess.run(
        [sys.executable, "-m", "examples.console", "--once", "--port", str(port)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"console: http://127.0.0.1:{port}/console/" in result.stdout
    assert "emulator console: http://127.0.0.1:" in result.stdout
    assert "1 dead letter(s) open" in result.stderr
