"""The errors of the task history and the dead-letter store, and the argument checks they share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fastapi_gcp_tasks.exception import FastAPIGCPTasksError

__all__ = [
    "MAX_PAGE",
    "MIGRATE_HINT",
    "HistoryArgumentError",
    "HistoryError",
    "HistorySchemaError",
    "check_limit",
    "is_missing_table",
    "schema_errors",
]

MIGRATE_HINT = "run `fastapi-gcp-tasks history migrate --database URL` (or `history.migrate(engine)`) first"
_TABLE_PREFIXES = ("fastapi_gcp_tasks_history_", "fastapi_gcp_tasks_dead_letters")
_MISSING_TABLE_PHRASES = ("does not exist", "doesn't exist", "no such table", "undefined table")

MAX_PAGE = 1000
"""The largest page a query returns."""


class HistoryError(FastAPIGCPTasksError):
    """The task history or the dead-letter store cannot do what was asked; the message says why."""


class HistoryArgumentError(HistoryError, ValueError):
    """An argument of `TaskHistory` or `DeadLetterStore` that cannot work; `param` names it."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


class HistorySchemaError(HistoryError):
    """The history tables are missing: the database needs `history migrate`."""


def check_limit(limit: int) -> None:
    """Refuse a page size that is not a whole number from 1 to `MAX_PAGE`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise HistoryArgumentError(f"limit must be a whole number from 1 to {MAX_PAGE}, not {limit!r}", param="limit")


def is_missing_table(exc: BaseException) -> bool:
    """Whether `exc` is a database error about a history table that does not exist."""
    from sqlalchemy.exc import DBAPIError  # here: the errors import without SQLAlchemy, like the records

    if not isinstance(exc, DBAPIError):
        return False
    message = str(exc.orig if exc.orig is not None else exc).lower()
    return any(table in message for table in _TABLE_PREFIXES) and any(
        phrase in message for phrase in _MISSING_TABLE_PHRASES
    )


@contextlib.contextmanager
def schema_errors() -> Iterator[None]:
    """Turn a missing history table into a `HistorySchemaError` that names the command creating it."""
    try:
        yield
    except Exception as exc:
        if is_missing_table(exc):
            raise HistorySchemaError(f"the history tables do not exist in this database: {MIGRATE_HINT}") from exc
        raise
