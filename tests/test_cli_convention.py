"""The convention every `fastapi-gcp-tasks` command follows (docs/cli.md), checked on the real command.

Exit 0 success, 1 failure, 2 usage or configuration error; one line of stderr and no traceback for a user
error (`--debug` adds it); `--version`; every option also an environment variable; readable logs on a
terminal, JSON otherwise; `--help` and `--version` import no subcommand and nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter
from google.auth.exceptions import DefaultCredentialsError

from fastapi_gcp_tasks import DelayedRouteBuilder, SendError, queue_path
from fastapi_gcp_tasks._cli_options import JsonFormatter, TextFormatter, setup_logging
from fastapi_gcp_tasks.cli import build_parser, main
from fastapi_gcp_tasks.transport._clients import EMULATOR_HOST_ENV, TASKS
from tests._support import free_port, listening_socket

ROOT = Path(__file__).resolve().parents[1]
PROG = "fastapi-gcp-tasks"


def cli(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FASTAPI_GCP_TASKS_")}
    environment.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "fastapi_gcp_tasks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )


def error_line(result: subprocess.CompletedProcess[str], status: int, prefix: str) -> str:
    """The last line of stderr, after checking the status and that no traceback was printed."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{prefix}: "), line
    return line


# --version, --help and what they import ---------------------------------------------------------------------


def test_version_and_help() -> None:
    from importlib.metadata import version

    shown = cli("--version")
    assert (shown.returncode, shown.stdout.strip()) == (0, f"{PROG} {version('fastapi-gcp-tasks')}")
    helped = cli("--help")
    assert helped.returncode == 0
    for command in ("emulator", "schedules", "relay", "outbox"):
        assert command in helped.stdout
    assert "0 success, 1 failure, 2 usage or configuration error" in " ".join(helped.stdout.split())
    bare = cli()
    assert bare.returncode == 2
    assert "COMMAND" in bare.stdout


IMPORTED = """
import sys
import fastapi_gcp_tasks
before = set(sys.modules)
from fastapi_gcp_tasks.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
added = sorted(set(sys.modules) - before)
print("\\n".join(added), file=sys.stderr)
"""

HEAVY = ("sqlalchemy", "alembic", "uvicorn", "psycopg", "pymysql", "fastapi_gcp_tasks.outbox")


def imported_by(*argv: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTED, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    return result.stderr.split()


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["schedules", "--help"], ["emulator", "--help"]])
def test_help_and_version_import_no_other_subcommand_and_nothing_heavy(argv: list[str]) -> None:
    added = imported_by(*argv)
    heavy = [name for name in added if name.split(".")[0] in HEAVY or name.startswith(HEAVY)]
    assert heavy == []
    others = {"--help": "", "--version": "", "schedules": "emulator._cli", "emulator": "schedules._cli"}[argv[0]]
    assert not any(name.endswith("._cli") and (not others or name.endswith(others)) for name in added), added


def test_help_imports_no_grpc_fastapi_or_sqlalchemy_at_all() -> None:
    """The package loads its public names lazily, so `--help` stays cheap (0.06 s of CPU measured here)."""
    code = (
        "import sys\nfrom fastapi_gcp_tasks.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    )
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'sqlalchemy', 'fastapi', 'pydantic')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


# exit status and one-line errors ----------------------------------------------------------------------------


def test_a_bad_option_value_is_a_usage_error_naming_its_variable() -> None:
    flagged = cli("emulator", "--port", "99999")
    assert "argument --port: a port is 0 to 65535, not 99999" in error_line(flagged, 2, f"{PROG} emulator")
    from_env = cli("emulator", FASTAPI_GCP_TASKS_EMULATOR_PORT="eighty")
    assert "[env: FASTAPI_GCP_TASKS_EMULATOR_PORT]" in error_line(from_env, 2, f"{PROG} emulator")
    unknown = cli("relay", "--database-url", "sqlite://", "--batch-size", "0")
    assert error_line(unknown, 2, f"{PROG} relay") == f"{PROG} relay: batch_size=0 must be at least 1"


def test_outbox_status_before_migrate_says_to_migrate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    before = cli("outbox", "status", "--database-url", url)
    line = error_line(before, 2, f"{PROG} outbox")
    assert "the outbox tables are missing" in line
    assert line.endswith("create them with: fastapi-gcp-tasks outbox migrate")
    assert len(before.stderr.strip().splitlines()) == 1

    debug = cli("outbox", "status", FASTAPI_GCP_TASKS_DATABASE_URL=url, FASTAPI_GCP_TASKS_DEBUG="1")
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == line

    assert cli("outbox", "migrate", "--database-url", url).returncode == 0
    after = cli("outbox", "status", "--database-url", url)
    assert (after.returncode, after.stderr) == (0, "")
    assert after.stdout.startswith("pending 0")


def test_database_errors_are_configuration_or_failure() -> None:
    bad_url = cli("outbox", "status", "--database-url", "nodb://x")
    assert "bad --database-url" in error_line(bad_url, 2, f"{PROG} outbox")
    closed = free_port()
    unreachable = cli("outbox", "dead-letters", "--database-url", f"postgresql+psycopg://u@127.0.0.1:{closed}/db")
    assert "database error: OperationalError" in error_line(unreachable, 1, f"{PROG} outbox")


def test_a_relay_that_cannot_reach_its_database_exits_with_1_when_told_to_give_up() -> None:
    closed = free_port()
    result = cli(
        "relay",
        "--database-url",
        f"postgresql+psycopg://u@127.0.0.1:{closed}/db",
        "--emulator-host",
        f"127.0.0.1:{closed}",
        "--max-database-failures",
        "2",
        FASTAPI_GCP_TASKS_RELAY_LOG_LEVEL="critical",
    )
    assert "2 claims in a row failed" in error_line(result, 1, f"{PROG} relay")


def test_a_missing_extra_is_a_configuration_error_with_the_install_hint() -> None:
    code = (
        "import sys\nsys.modules['sqlalchemy'] = None\nfrom fastapi_gcp_tasks.cli import main\n"
        "sys.exit(main(['outbox', 'status']))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "pip install 'fastapi-gcp-tasks[outbox]'" in result.stderr
    assert "Traceback" not in result.stderr


# environment variables --------------------------------------------------------------------------------------

WITHOUT_VARIABLE = {("requeue", "--id"), ("requeue", "--all")}


def leaf_parsers(parser: argparse.ArgumentParser, name: str = "") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    subcommands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subcommands:
        yield name, parser
    for action in subcommands:
        for sub_name, sub in action.choices.items():
            yield from leaf_parsers(sub, sub_name)


def test_every_option_of_every_command_has_an_environment_variable() -> None:
    leaves = dict(leaf_parsers(build_parser()))
    assert {"emulator", "plan", "sync", "pause", "relay", "migrate", "status", "dead-letters", "requeue"} <= set(leaves)
    for name, parser in leaves.items():
        for action in parser._actions:
            if action.dest == "help" or (name, (action.option_strings or [""])[-1]) in WITHOUT_VARIABLE:
                continue
            if action.option_strings or action.dest == "app":
                assert "[env: FASTAPI_GCP_TASKS_" in (action.help or ""), (name, action.option_strings)


def test_log_level_takes_any_case_on_the_command_line_and_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(["emulator", "--log-level", "debug"]).log_level == "DEBUG"
    monkeypatch.setenv("FASTAPI_GCP_TASKS_RELAY_LOG_LEVEL", "Warning")
    assert build_parser().parse_args(["relay", "--database-url", "sqlite://"]).log_level == "WARNING"


# logs -------------------------------------------------------------------------------------------------------


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_logs_are_json_when_stderr_is_not_a_terminal(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("auto", "info")
    logging.getLogger("outbox.relay").info("claimed %d rows", 3, extra={"event": "claimed"})
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (entry["level"], entry["logger"], entry["message"], entry["event"]) == (
        "INFO",
        "outbox.relay",
        "claimed 3 rows",
        "claimed",
    )
    assert isinstance(root_logger.handlers[0].formatter, JsonFormatter)


def test_text_logs_are_readable_and_colored_on_request() -> None:
    record = logging.LogRecord("outbox.relay", logging.WARNING, __file__, 1, "send failed %s", ("x",), None)
    record.event = "send_failed"
    plain = TextFormatter().format(record)
    assert plain.endswith("WARNING send failed x event=send_failed")
    assert "\033[" not in plain
    assert "\033[33mWARNING\033[0m" in TextFormatter(color=True).format(record)


# .delay() without credentials --------------------------------------------------------------------------------


def test_delay_without_credentials_is_a_send_error_naming_the_emulator_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import google.auth

    def no_credentials(*args: object, **kwargs: object) -> object:
        raise DefaultCredentialsError("Your default credentials were not found.")  # type: ignore[no-untyped-call]

    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)
    monkeypatch.setattr(google.auth, "default", no_credentials)
    router = APIRouter(
        route_class=DelayedRouteBuilder(
            queue_path=queue_path(project="p", location="l", queue="q"),
            callback_base_url="http://127.0.0.1:1",
            client=TASKS.default,
        )
    )

    @router.post("/hello")
    def hello(name: str) -> None:
        pass

    with pytest.raises(SendError, match=EMULATOR_HOST_ENV) as raised:
        hello.delay(name="Ada")  # type: ignore[attr-defined]
    assert not raised.value.retryable
    assert isinstance(raised.value.__cause__, DefaultCredentialsError)
    assert "gcloud auth application-default login" in str(raised.value)


# the quickstart ---------------------------------------------------------------------------------------------


def test_the_quickstart_fails_fast_when_its_port_is_taken() -> None:
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "examples.simple", "--port", str(port), "--once"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"port {port} on 127.0.0.1 is taken (Address already in use): choose another with --port N (or PORT=N)"
    )


def test_main_in_process_reports_instead_of_raising(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["outbox", "status", "--database-url", "nodb://x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG} outbox: bad --database-url")
    assert "Traceback" not in err
