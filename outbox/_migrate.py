"""Running the outbox's alembic migrations, with their own version table, and telling a missing schema apart.

The scripts live in the repository's `migrations/` and are shipped inside the wheel as `outbox/_migrations`.
A database that was never migrated answers a `.delay()` with the driver's "relation does not exist"; the
helpers here turn that into an `OutboxSchemaError` naming the command that fixes it.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from sqlalchemy import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from fastapi_gcp_tasks.exception import FastAPIGCPTasksError
from fastapi_gcp_tasks.outbox._engine import relay_engine
from fastapi_gcp_tasks.outbox._schema import DEAD_LETTER_TABLE, OUTBOX_TABLE

__all__ = [
    "MIGRATE_HINT",
    "VERSION_TABLE",
    "OutboxError",
    "OutboxSchemaError",
    "current_revision",
    "head_revision",
    "is_missing_schema",
    "migrate",
    "migrations_dir",
    "reaches",
    "require_schema",
    "schema_error",
]

VERSION_TABLE = "fastapi_gcp_tasks_outbox_version"
MIGRATE_HINT = "run `fastapi-gcp-tasks outbox migrate --database-url URL` (or `outbox.migrate(engine)`) first"

# How each supported database says that a table is missing, whatever the driver wrapping it.
_MISSING_TABLE_PHRASES = ("does not exist", "doesn't exist", "no such table", "undefined table")


class OutboxError(FastAPIGCPTasksError):
    """The outbox cannot be used as configured: the message says what to change."""


class OutboxSchemaError(OutboxError):
    """The outbox tables are missing (or older than this library): the database needs `outbox migrate`."""


def is_missing_schema(exc: BaseException) -> bool:
    """Whether `exc` is a database error about an outbox table that does not exist."""
    if not isinstance(exc, DBAPIError):
        return False
    message = str(exc.orig if exc.orig is not None else exc).lower()
    return any(table in message for table in (OUTBOX_TABLE, DEAD_LETTER_TABLE)) and any(
        phrase in message for phrase in _MISSING_TABLE_PHRASES
    )


def schema_error(exc: DBAPIError) -> OutboxSchemaError:
    """The `OutboxSchemaError` to raise from `exc` (a missing outbox table), naming the fix."""
    return OutboxSchemaError(f"the outbox tables do not exist in this database: {MIGRATE_HINT} ({exc.orig})")


OUTBOX_REVISION = "0001"
"""The revision that created the outbox tables; later revisions (the task history's) leave them as they are."""


def require_schema(engine: Engine) -> None:
    """Raise `OutboxSchemaError` unless the database holds the outbox schema (revision 0001 or a later one).

    For processes that only use the outbox (the relay, the `outbox` commands): one query at start-up turns a
    database that was never migrated into one clear error instead of a failure on every claim. A database
    migrated further (the task history's tables) serves the outbox as it is.
    """
    current = current_revision(engine)
    if not reaches(current, OUTBOX_REVISION):
        state = "has no outbox schema" if current is None else f"has outbox schema {current}, not {head_revision()}"
        raise OutboxSchemaError(f"the database {state}: {MIGRATE_HINT}")


def reaches(current: str | None, minimum: str) -> bool:
    """Whether revision `current` is `minimum` or one of the revisions after it in the shipped chain."""
    if current is None:
        return False
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    scripts = ScriptDirectory.from_config(config)
    try:
        return any(rev.revision == minimum for rev in scripts.iterate_revisions(current, "base"))
    except RevisionError:  # a revision this library does not ship (a newer one): nothing is known of it
        return False


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
