"""The transactional outbox of fastapi-gcp-tasks: a task exists if and only if its transaction commits.

`.delay()` in outbox mode stores the built `CreateTaskRequest` as a row in the caller's SQLAlchemy transaction;
the relay (`fastapi-gcp-tasks relay`, or `Relay` in an application's lifespan) turns committed rows into Cloud
Tasks, at least once, under names that Cloud Tasks deduplicates. Install with `pip install 'fastapi-gcp-tasks[outbox]'`.
"""

from __future__ import annotations

try:
    import alembic  # noqa: F401
    import sqlalchemy  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"the outbox needs SQLAlchemy and alembic: pip install 'fastapi-gcp-tasks[outbox]' ({exc})"
    ) from exc

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
