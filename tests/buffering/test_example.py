"""The buffered-mode example runs on the emulator as its docstring says."""

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
from fastapi_gcp_tasks.testing import assert_task_created, wait_for_tasks

from ._server import bind, serve, url_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def example(
    gcp_tasks_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, str, Emulator]]:
    sock = bind()
    base = url_of(sock)
    monkeypatch.setenv("EXAMPLE_BASE_URL", base)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("examples.buffered.app", None)
    module = importlib.import_module("examples.buffered.app")
    with serve(module.app, sock):
        yield module, base, gcp_tasks_emulator
    sys.modules.pop("examples.buffered.app", None)


def test_a_signup_sends_its_welcome_after_the_commit_and_a_refused_one_nothing(
    example: tuple[ModuleType, str, Emulator],
) -> None:
    module, base, emu = example
    ok = httpx.post(f"{base}/signup", params={"email": "ada@example.com"})
    assert ok.status_code == 200
    assert ok.json()["welcome_task"].startswith(module.QUEUE + "/tasks/")
    wait_for_tasks(emu)
    assert module.db.mails_sent == ["ada@example.com"]
    again = httpx.post(f"{base}/signup", params={"email": "ada@example.com"})
    assert again.status_code == 409
    wait_for_tasks(emu)  # a wrongly kept task would be created after the response: this waits for it too
    assert module.db.mails_sent == ["ada@example.com"]
    assert [record.status for record in emu.deliveries] == [200]
    assert_task_created(emu, module.send_welcome, email="ada@example.com")


def test_the_example_runs_as_a_script() -> None:
    sock = bind()  # a free port for the script's server
    port = sock.getsockname()[1]
    sock.close()
    result = subprocess.run(
        [sys.executable, "-m", "examples.buffered", "--once", "--port", str(port)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-> 409" in result.stderr
    assert "welcome mails sent: ['ada@example.com']" in result.stderr
