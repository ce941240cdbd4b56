"""Task history and the dead-letter store of fastapi-gcp-tasks: every task, every attempt, every failure, in SQL.

`TaskHistory(database)` records what the route builders and workers report (off the request path, in batches) and
answers the console's queries; `DeadLetterStore` keeps the worker's dead letters for typed replay
(`replay_letter`). The tables come from the migrations shared with the outbox: `fastapi-gcp-tasks history migrate`.
Install with `pip install 'fastapi-gcp-tasks[history]'`.

Every public name is imported on first use (PEP 562): the records (`CreatedEvent`, `AttemptEvent`, ...) need
nothing but the standard library, so route builders can use them without SQLAlchemy; the names that need
SQLAlchemy and alembic say which extra to install when they are missing.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from fastapi_gcp_tasks._lazy import lazy_exports as _lazy_exports

if _TYPE_CHECKING:
    from fastapi_gcp_tasks.history._errors import HistoryArgumentError, HistoryError, HistorySchemaError
    from fastapi_gcp_tasks.history._history import REDACTED, TaskHistory
    from fastapi_gcp_tasks.history._letters import DeadLetterStore
    from fastapi_gcp_tasks.history._migrate import migrate, require_schema
    from fastapi_gcp_tasks.history._replay import (
        ReplayArgumentError,
        ReplayReport,
        replay_letter,
        replay_letter_async,
        replay_letters,
    )
    from fastapi_gcp_tasks.history._schema import HistoryTables, add_history_tables
    from fastapi_gcp_tasks.history._types import (
        AttemptEvent,
        AttemptRecord,
        CreatedEvent,
        DispatchMode,
        HistoryStats,
        LetterStatus,
        Page,
        StoredLetter,
        TaskRecord,
        TaskStatus,
        TaskSummary,
        ThroughputPoint,
    )

_TYPES = "fastapi_gcp_tasks.history._types"
_LAZY: dict[str, str] = {
    "AttemptEvent": _TYPES,
    "AttemptRecord": _TYPES,
    "CreatedEvent": _TYPES,
    "DeadLetterStore": "fastapi_gcp_tasks.history._letters",
    "DispatchMode": _TYPES,
    "HistoryArgumentError": "fastapi_gcp_tasks.history._errors",
    "HistoryError": "fastapi_gcp_tasks.history._errors",
    "HistorySchemaError": "fastapi_gcp_tasks.history._errors",
    "HistoryStats": _TYPES,
    "HistoryTables": "fastapi_gcp_tasks.history._schema",
    "LetterStatus": _TYPES,
    "Page": _TYPES,
    "REDACTED": "fastapi_gcp_tasks.history._history",
    "ReplayArgumentError": "fastapi_gcp_tasks.history._replay",
    "ReplayReport": "fastapi_gcp_tasks.history._replay",
    "StoredLetter": _TYPES,
    "TaskHistory": "fastapi_gcp_tasks.history._history",
    "TaskRecord": _TYPES,
    "TaskStatus": _TYPES,
    "TaskSummary": _TYPES,
    "ThroughputPoint": _TYPES,
    "add_history_tables": "fastapi_gcp_tasks.history._schema",
    "migrate": "fastapi_gcp_tasks.history._migrate",
    "replay_letter": "fastapi_gcp_tasks.history._replay",
    "replay_letter_async": "fastapi_gcp_tasks.history._replay",
    "replay_letters": "fastapi_gcp_tasks.history._replay",
    "require_schema": "fastapi_gcp_tasks.history._migrate",
}
"""Public name -> the module that defines it."""

_EXTRA_MODULES = ("sqlalchemy", "alembic")

_get_attribute, __dir__ = _lazy_exports(__name__, _LAZY)


def __getattr__(name: str) -> _Any:
    try:
        return _get_attribute(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in _EXTRA_MODULES:
            raise
        raise ImportError(
            f"fastapi_gcp_tasks.history.{name} needs SQLAlchemy and alembic: "
            f"pip install 'fastapi-gcp-tasks[history]' (not installed: {exc.name})"
        ) from exc


__all__ = [
    "REDACTED",
    "AttemptEvent",
    "AttemptRecord",
    "CreatedEvent",
    "DeadLetterStore",
    "DispatchMode",
    "HistoryArgumentError",
    "HistoryError",
    "HistorySchemaError",
    "HistoryStats",
    "HistoryTables",
    "LetterStatus",
    "Page",
    "ReplayArgumentError",
    "ReplayReport",
    "StoredLetter",
    "TaskHistory",
    "TaskRecord",
    "TaskStatus",
    "TaskSummary",
    "ThroughputPoint",
    "add_history_tables",
    "migrate",
    "replay_letter",
    "replay_letter_async",
    "replay_letters",
    "require_schema",
]
