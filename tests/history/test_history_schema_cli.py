"""The history's migration (0002, after the outbox's 0001) and the `history` commands, on every backend."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from fastapi_gcp_tasks.cli import main as cli
from fastapi_gcp_tasks.history import HistorySchemaError, TaskHistory, migrate, require_schema
from fastapi_gcp_tasks.history._schema import ATTEMPTS_TABLE, LETTERS_TABLE, TASKS_TABLE
from fastapi_gcp_tasks.outbox import metadata
from fastapi_gcp_tasks.outbox import require_schema as require_outbox_schema
from fastapi_gcp_tasks.outbox._migrate import VERSION_TABLE, current_revision
from tests.history.conftest import HistoryDb
from tests.history.support import attempt

ROOT = Path(__file__).resolve().parents[2]
HISTORY = {TASKS_TABLE, ATTEMPTS_TABLE, LETTERS_TABLE}


def test_the_migration_creates_exactly_the_tables_and_indexes(db: HistoryDb) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    assert current_revision(db.engine) == "0002"
    indexes = {index["name"] for index in inspect(db.engine).get_indexes(TASKS_TABLE)}
    assert {f"ix_{TASKS_TABLE}_endpoint", f"ix_{TASKS_TABLE}_status", f"ix_{TASKS_TABLE}_seen"} <= indexes


def test_down_to_the_outbox_and_up_again(db: HistoryDb) -> None:
    engine = create_engine(db.url)
    try:
        assert migrate(engine, "0001") == "0001"
        assert not HISTORY & set(inspect(engine).get_table_names())
        require_outbox_schema(engine)  # the outbox works at 0001
        with pytest.raises(HistorySchemaError, match="history migrate"):
            require_schema(engine)
        assert migrate(engine) == "0002"
        assert set(inspect(engine).get_table_names()) >= HISTORY
        require_outbox_schema(engine)  # and at 0002
        require_schema(engine)
    finally:
        engine.dispose()


def test_the_commands(db: HistoryDb, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["history", "migrate", "--database", db.url, "--revision", "base"]) == 0
    assert capsys.readouterr().out.strip() == "history schema at revision base"
    assert cli(["history", "stats", "--database", db.url]) == 2
    assert "fastapi-gcp-tasks history migrate" in capsys.readouterr().err
    assert cli(["history", "migrate", "--database", db.url]) == 0
    assert capsys.readouterr().out.strip() == "history schema at revision 0002"
    with TaskHistory(db.url, retention=None) as history:
        history.record_attempt(attempt("a", status_code=500))
        assert history.flush()
    assert cli(["history", "stats", "--database", db.url, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["tasks"], stats["attempts"], stats["by_status"]) == (1, 1, {"retrying": 1})
    assert cli(["history", "stats", "--database", db.url]) == 0
    assert capsys.readouterr().out.startswith("tasks 1 (retrying 1), attempts 1, open dead letters 0")
    assert cli(["history", "prune", "--database", db.url, "--older-than", "1d"]) == 0
    assert capsys.readouterr().out.strip() == "pruned 1 row(s) older than 1 day, 0:00:00"  # the old attempt


def test_bad_options_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli(["history", "prune", "--database", "sqlite://", "--older-than", "soon"])
    assert exited.value.code == 2
    assert "not a duration" in capsys.readouterr().err
    assert cli(["history", "stats", "--database", "nonsense://x"]) == 2
    assert "bad --database" in capsys.readouterr().err


@pytest.mark.slow
def test_the_package_is_lazy_and_every_public_name_resolves() -> None:
    code = (
        "import sys\nimport fastapi_gcp_tasks.history as history\n"
        "assert 'sqlalchemy' not in sys.modules, 'imported eagerly'\n"
        "history.CreatedEvent, history.AttemptEvent, history.Page\n"
        "assert 'sqlalchemy' not in sys.modules, 'the records need no SQLAlchemy'\n"
        "assert set(history.__all__) <= set(dir(history))\n"
        "missing = [name for name in history.__all__ if getattr(history, name, None) is None]\n"
        "assert not missing, missing\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.slow
def test_a_missing_extra_names_it() -> None:
    code = (
        "import sys\nsys.modules['sqlalchemy'] = None\n"
        "import fastapi_gcp_tasks.history as history\n"
        "history.CreatedEvent\n"
        "try:\n    history.TaskHistory\nexcept ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pip install 'fastapi-gcp-tasks[history]'" in result.stdout


def test_an_unmigrated_database_is_a_schema_error_naming_the_command(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with TaskHistory(url, flush_interval=0.01, retention=None) as history:
        with pytest.raises(HistorySchemaError, match="history migrate"):
            history.find()
        with pytest.raises(HistorySchemaError, match="history migrate"):
            history.dead_letters.count()
        history.record_attempt(attempt("lost"))
        assert history.flush(timeout=30)
        assert history.stats.dropped == 1
    assert "fastapi-gcp-tasks history migrate" in caplog.text
