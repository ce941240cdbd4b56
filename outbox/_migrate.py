"""Running the outbox's alembic migrations, with their own version table.

The scripts live in the repository's `migrations/` and are shipped inside the wheel as `outbox/_migrations`.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine

from fastapi_gcp_tasks.outbox._engine import relay_engine

__all__ = ["VERSION_TABLE", "current_revision", "head_revision", "migrate", "migrations_dir"]

VERSION_TABLE = "fastapi_gcp_tasks_outbox_version"


def migrations_dir() -> Path:
    """Where the migration scripts are: inside the installed package, or the repository's `migrations/`."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"the outbox migrations are missing (looked in {package / '_migrations'})")


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


def migrate(database: str | URL | Engine, revision: str = "head") -> str | None:
    """Upgrade (or downgrade, to an older `revision`) the outbox schema; returns the revision reached."""
    engine = database if isinstance(database, Engine) else relay_engine(database)
    try:
        with engine.begin() as connection:
            current = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            config = _config(connection)
            if revision in {"base", "-1"} or _is_older(config, current.get_current_revision(), revision):
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)
        return current_revision(engine)
    finally:
        if engine is not database:
            engine.dispose()


def _is_older(config: Config, current: str | None, target: str) -> bool:
    if current is None or target == "head":
        return False
    scripts = ScriptDirectory.from_config(config)
    return any(rev.revision == target for rev in scripts.iterate_revisions(current, "base") if rev.revision != current)


def current_revision(engine: Engine) -> str | None:
    """The outbox schema revision of the database (None before the first migration)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with this version of the library."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return ScriptDirectory.from_config(config).get_current_head()
