"""The history's schema: the migration chain shared with the outbox, and the check that it reached revision 0002."""

from __future__ import annotations

from sqlalchemy import URL, Engine

from fastapi_gcp_tasks.history._errors import MIGRATE_HINT, HistorySchemaError
from fastapi_gcp_tasks.outbox import _migrate as chain

__all__ = ["HISTORY_REVISION", "migrate", "require_schema"]

HISTORY_REVISION = "0002"
"""The revision that created the history and dead-letter tables."""


def migrate(database: str | URL | Engine, revision: str = "head") -> str | None:
    """Upgrade (or downgrade) the one schema of the outbox and the history; returns the revision reached."""
    return chain.migrate(database, revision)


def require_schema(engine: Engine) -> None:
    """Raise `HistorySchemaError` unless the database holds the history tables (revision 0002 or later)."""
    current = chain.current_revision(engine)
    if not chain.reaches(current, HISTORY_REVISION):
        state = "has no history schema" if current is None else f"is at schema revision {current}"
        raise HistorySchemaError(f"the database {state}, the task history needs {HISTORY_REVISION}: {MIGRATE_HINT}")
