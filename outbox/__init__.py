"""The transactional outbox of fastapi-gcp-tasks: a task exists if and only if its transaction commits.

`.delay()` in outbox mode stores the built `CreateTaskRequest` as a row in the caller's SQLAlchemy transaction;
the relay (`fastapi-gcp-tasks relay`, or `Relay` in an application's lifespan) turns committed rows into Cloud
Tasks, at least once, under names that Cloud Tasks deduplicates. Install with `pip install 'fastapi-gcp-tasks[outbox]'`.

Every public name is imported on first use (PEP 562), so that `fastapi-gcp-tasks outbox --help` and
`relay --help` do not load SQLAlchemy, alembic and Google's clients. A missing extra is still reported when
this package is imported: finding the two libraries costs a path lookup, not an import.
"""

import importlib.util as _importlib_util
from typing import TYPE_CHECKING as _TYPE_CHECKING

from fastapi_gcp_tasks._lazy import lazy_exports as _lazy_exports

_missing = [name for name in ("sqlalchemy", "alembic") if _importlib_util.find_spec(name) is None]
if _missing:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the outbox needs SQLAlchemy and alembic: pip install 'fastapi-gcp-tasks[outbox]' "
        f"(not installed: {', '.join(_missing)})"
    )

if _TYPE_CHECKING:
    from fastapi_gcp_tasks.outbox._client import BatchSender, CloudTasksRelayClient, NullRelayClient
    from fastapi_gcp_tasks.outbox._migrate import OutboxError, OutboxSchemaError, migrate, require_schema
    from fastapi_gcp_tasks.outbox._relay import Relay, RelayDatabaseError, RelaySettings, RelayStats
    from fastapi_gcp_tasks.outbox._schema import (
        DEAD_LETTER_TABLE,
        NOTIFY_CHANNEL,
        NOTIFY_TRIGGER_SQL,
        OUTBOX_TABLE,
        OutboxTables,
        add_outbox_tables,
        dead_letter_table,
        metadata,
        outbox_table,
    )
    from fastapi_gcp_tasks.outbox._sql import DeadLetter, OutboxStats, OutboxStore
    from fastapi_gcp_tasks.outbox._writer import OutboxSink, outbox_session, outbox_sink, use_outbox

_LAZY: dict[str, str] = {
    "BatchSender": "fastapi_gcp_tasks.outbox._client",
    "CloudTasksRelayClient": "fastapi_gcp_tasks.outbox._client",
    "DEAD_LETTER_TABLE": "fastapi_gcp_tasks.outbox._schema",
    "DeadLetter": "fastapi_gcp_tasks.outbox._sql",
    "NOTIFY_CHANNEL": "fastapi_gcp_tasks.outbox._schema",
    "NOTIFY_TRIGGER_SQL": "fastapi_gcp_tasks.outbox._schema",
    "NullRelayClient": "fastapi_gcp_tasks.outbox._client",
    "OUTBOX_TABLE": "fastapi_gcp_tasks.outbox._schema",
    "OutboxError": "fastapi_gcp_tasks.outbox._migrate",
    "OutboxSchemaError": "fastapi_gcp_tasks.outbox._migrate",
    "OutboxSink": "fastapi_gcp_tasks.outbox._writer",
    "OutboxStats": "fastapi_gcp_tasks.outbox._sql",
    "OutboxStore": "fastapi_gcp_tasks.outbox._sql",
    "OutboxTables": "fastapi_gcp_tasks.outbox._schema",
    "Relay": "fastapi_gcp_tasks.outbox._relay",
    "RelayDatabaseError": "fastapi_gcp_tasks.outbox._relay",
    "RelaySettings": "fastapi_gcp_tasks.outbox._relay",
    "RelayStats": "fastapi_gcp_tasks.outbox._relay",
    "add_outbox_tables": "fastapi_gcp_tasks.outbox._schema",
    "dead_letter_table": "fastapi_gcp_tasks.outbox._schema",
    "metadata": "fastapi_gcp_tasks.outbox._schema",
    "migrate": "fastapi_gcp_tasks.outbox._migrate",
    "outbox_session": "fastapi_gcp_tasks.outbox._writer",
    "outbox_sink": "fastapi_gcp_tasks.outbox._writer",
    "outbox_table": "fastapi_gcp_tasks.outbox._schema",
    "require_schema": "fastapi_gcp_tasks.outbox._migrate",
    "use_outbox": "fastapi_gcp_tasks.outbox._writer",
}
"""Public name -> the module that defines it."""


__getattr__, __dir__ = _lazy_exports(__name__, _LAZY)


__all__ = [
    "DEAD_LETTER_TABLE",
    "NOTIFY_CHANNEL",
    "NOTIFY_TRIGGER_SQL",
    "OUTBOX_TABLE",
    "BatchSender",
    "CloudTasksRelayClient",
    "DeadLetter",
    "NullRelayClient",
    "OutboxError",
    "OutboxSchemaError",
    "OutboxSink",
    "OutboxStats",
    "OutboxStore",
    "OutboxTables",
    "Relay",
    "RelayDatabaseError",
    "RelaySettings",
    "RelayStats",
    "add_outbox_tables",
    "dead_letter_table",
    "metadata",
    "migrate",
    "outbox_session",
    "outbox_sink",
    "outbox_table",
    "require_schema",
    "use_outbox",
]
