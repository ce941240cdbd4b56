"""The commands' help imports nothing heavy, and `python -m fastapi_gcp_tasks.emulator` follows the convention.

`fastapi_gcp_tasks.outbox` loads its public names on first use (PEP 562), so `outbox --help` and `relay --help`
import neither SQLAlchemy, alembic nor Google's clients; the names themselves all still resolve. The emulator's
`python -m` entry reports errors through the command line's one handler (one line, `--debug` for the traceback).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sqlalchemy", "alembic", "grpc", "google.cloud", "google.api_core", "fastapi", "pydantic")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTAPI_GCP_TASKS_")}
    environment.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=environment, timeout=120
    )


def heavy_modules_after(argv: list[str]) -> list[str]:
    code = (
        "import sys\nfrom fastapi_gcp_tasks.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {HEAVY!r})))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    return list(eval(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "argv",
    [
        ["outbox", "--help"],
        ["relay", "--help"],
        ["outbox", "requeue", "--help"],
        ["history", "--help"],
        ["history", "prune", "--help"],
        ["schedules", "--help"],
        ["schedules", "sync", "--help"],
        ["emulator", "--help"],
    ],
)
def test_help_of_the_commands_imports_nothing_heavy(argv: list[str]) -> None:
    assert heavy_modules_after(argv) == []


def test_the_outbox_package_is_lazy_and_every_public_name_resolves() -> None:
    code = (
        "import sys\nimport fastapi_gcp_tasks.outbox as outbox\n"
        "assert 'sqlalchemy' not in sys.modules, 'imported eagerly'\n"
        "assert set(outbox.__all__) <= set(dir(outbox))\n"
        "missing = [name for name in outbox.__all__ if getattr(outbox, name, None) is None]\n"
        "assert not missing, missing\n"
        "from fastapi_gcp_tasks.outbox._sql import OutboxStore\n"
        "assert outbox.OutboxStore is OutboxStore\n"
        "try:\n    outbox.nothing_here\nexcept AttributeError as exc:\n    print('refused', exc)\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "refused module 'fastapi_gcp_tasks.outbox' has no attribute 'nothing_here'" in result.stdout


def test_the_emulator_variable_is_written_the_same_in_both_places() -> None:
    from fastapi_gcp_tasks import _cli_options
    from fastapi_gcp_tasks.transport import _clients

    assert _cli_options.EMULATOR_HOST_ENV == _clients.EMULATOR_HOST_ENV


def test_relay_auto_create_queue_flag_and_variable() -> None:
    from fastapi_gcp_tasks.cli import build_parser

    parse = build_parser("relay").parse_args
    assert parse(["relay", "--database-url", "sqlite://"]).auto_create_queue is True
    assert parse(["relay", "--database-url", "sqlite://", "--no-auto-create-queue"]).auto_create_queue is False
    env = "FASTAPI_GCP_TASKS_RELAY_AUTO_CREATE_QUEUE"
    os.environ[env] = "off"
    try:
        assert build_parser("relay").parse_args(["relay", "--database-url", "sqlite://"]).auto_create_queue is False
        os.environ[env] = "YES"
        assert build_parser("relay").parse_args(["relay", "--database-url", "sqlite://"]).auto_create_queue is True
    finally:
        del os.environ[env]


def test_a_bad_auto_create_queue_variable_is_a_usage_error_naming_it() -> None:
    code = (
        "import sys\nfrom fastapi_gcp_tasks.cli import main\nsys.exit(main(['relay', '--database-url', 'sqlite://']))"
    )
    result = run_python(code, FASTAPI_GCP_TASKS_RELAY_AUTO_CREATE_QUEUE="maybe")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "not a yes/no value: 'maybe'" in result.stderr
    assert "[env: FASTAPI_GCP_TASKS_RELAY_AUTO_CREATE_QUEUE]" in result.stderr


def emulator_module(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTAPI_GCP_TASKS_")}
    return subprocess.run(
        [sys.executable, "-m", "fastapi_gcp_tasks.emulator", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**environment, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )


def test_python_m_emulator_reports_a_busy_port_through_the_shared_handler() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        plain = emulator_module("--port", str(port), "--http-port", "0")
        debug = emulator_module("--port", str(port), "--http-port", "0", "--debug")
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr
    last = plain.stderr.strip().splitlines()[-1]
    assert last.startswith("fastapi-gcp-tasks emulator: "), plain.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in last
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr  # --debug works as on every other command
    assert debug.stderr.strip().splitlines()[-1] == last


def test_python_m_emulator_usage_errors_exit_2() -> None:
    bad_port = emulator_module("--port", "99999")
    assert bad_port.returncode == 2
    assert "argument --port: a port is 0 to 65535, not 99999" in bad_port.stderr
    bad_queue = emulator_module("--port", "0", "--queue", "queues/bad")
    assert bad_queue.returncode == 2
    assert bad_queue.stderr.strip().splitlines()[-1].startswith("fastapi-gcp-tasks emulator: ")
    assert "queues/bad" in bad_queue.stderr
    assert "Traceback" not in bad_queue.stderr
