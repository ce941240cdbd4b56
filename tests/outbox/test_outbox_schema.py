"""The migrations create exactly the schema of the Table objects, on every backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from fastapi_gcp_tasks import outbox
from fastapi_gcp_tasks.cli import main as cli
from fastapi_gcp_tasks.outbox import metadata, migrate
from fastapi_gcp_tasks.outbox._migrate import VERSION_TABLE, current_revision, head_revision, migrations_dir
from tests.outbox.support import OutboxDb


def test_migrations_match_the_tables(db: OutboxDb) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": VERSION_TABLE})
        diff = compare_metadata(context, metadata)
    assert diff == []
    assert current_revision(db.engine) == head_revision()


def test_own_version_table_only(db: OutboxDb) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert {"fastapi_gcp_tasks_outbox", "fastapi_gcp_tasks_outbox_dead", VERSION_TABLE} <= tables
    assert "alembic_version" not in tables


def test_downgrade_and_upgrade_again(db: OutboxDb) -> None:
    engine = create_engine(db.url)
    try:
        assert migrate(engine, "base") is None
        assert "fastapi_gcp_tasks_outbox" not in inspect(engine).get_table_names()
        assert migrate(engine) == head_revision()
        assert migrate(engine) == head_revision()  # idempotent
    finally:
        engine.dispose()


@pytest.mark.backends("postgres")
def test_postgres_queue_table_settings(db: OutboxDb) -> None:
    with db.engine.connect() as conn:
        options = conn.execute(
            text("SELECT reloptions FROM pg_class WHERE relname = 'fastapi_gcp_tasks_outbox'")
        ).scalar_one()
        triggers = (
            conn.execute(text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'fastapi_gcp_tasks_outbox'::regclass"))
            .scalars()
            .all()
        )
    assert "autovacuum_vacuum_scale_factor=0.01" in options
    assert "fillfactor=80" in options
    assert triggers == ["fastapi_gcp_tasks_outbox_notify"]


def test_migrate_command(db: OutboxDb, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["outbox", "migrate", "--database-url", db.url, "--revision", "base"]) == 0
    assert capsys.readouterr().out.strip() == "outbox schema at revision base"
    assert cli(["outbox", "migrate", "--database-url", db.url]) == 0
    assert capsys.readouterr().out.strip() == f"outbox schema at revision {head_revision()}"


def test_migrations_are_found_where_the_wheel_puts_them() -> None:
    assert migrations_dir() == Path(outbox.__file__).resolve().parents[1] / "migrations"
    assert (migrations_dir() / "versions").is_dir()
