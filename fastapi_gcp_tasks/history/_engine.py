"""The engine of a `TaskHistory` or `DeadLetterStore`: the outbox relay's engine, or the caller's own."""

from __future__ import annotations

from sqlalchemy import URL, Engine

from fastapi_gcp_tasks.history._errors import HistoryArgumentError
from fastapi_gcp_tasks.outbox._engine import relay_engine

__all__ = ["history_engine"]


def history_engine(database: str | URL | Engine) -> tuple[Engine, bool]:
    """The engine for `database` and whether it was created here (and is therefore the caller's to dispose)."""
    if isinstance(database, Engine):
        return database, False
    if not isinstance(database, str | URL):
        raise HistoryArgumentError(
            f"database must be a SQLAlchemy URL (str or URL) or Engine, not {type(database).__name__}",
            param="database",
        )
    return relay_engine(database), True
