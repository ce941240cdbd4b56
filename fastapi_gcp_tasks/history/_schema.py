"""The task history and dead-letter tables, which share the outbox's migration chain and metadata.

`fastapi_gcp_tasks.outbox.metadata` holds these tables too (its module adds them with `add_history_tables`), so one
`alembic` chain (`migrations/`, revision 0002) creates both features' tables and one comparison proves that the
migrations and the Table objects agree. The column types are the outbox's (timestamps with microseconds on MySQL,
big ids except on SQLite); they are looked up when the tables are built, because the outbox module builds them
while it is itself being imported.

Every query of the console has an index: tasks newest first (alone, by endpoint, by status, by queue), attempts by
task and by time (alone and by endpoint, for the throughput chart), letters newest first (by status, endpoint,
reason). A task is ordered by `seen_at`, the time of its first event, which never changes, so that keyset pages
stay stable while tasks keep running.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.dialects import mysql

__all__ = ["ATTEMPTS_TABLE", "LETTERS_TABLE", "TASKS_TABLE", "HistoryTables", "add_history_tables", "history_tables"]

TASKS_TABLE = "fastapi_gcp_tasks_history_tasks"
ATTEMPTS_TABLE = "fastapi_gcp_tasks_history_attempts"
LETTERS_TABLE = "fastapi_gcp_tasks_dead_letters"

NAME_LENGTH = 700
"""Longest stored task name: within MySQL's 3072-byte index key at 4 bytes a character."""

_LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


class HistoryTables(NamedTuple):
    """The three tables, as bound to one `MetaData`."""

    tasks: Table
    attempts: Table
    letters: Table


def add_history_tables(metadata: MetaData) -> HistoryTables:
    """Define the history and dead-letter tables in `metadata` (fixed names, like the outbox's)."""
    from fastapi_gcp_tasks.outbox._schema import _Blob, _Id, _Timestamp

    tasks = Table(
        TASKS_TABLE,
        metadata,
        Column("id", _Id, primary_key=True, autoincrement=True),
        Column("task_name", String(NAME_LENGTH), nullable=False),
        Column("task_id", String(NAME_LENGTH), nullable=False, comment="the last segment of task_name"),
        Column("queue_name", String(100), nullable=True),
        Column("endpoint", String(500), nullable=False),
        Column("method", String(10), nullable=True),
        Column("status", String(16), nullable=False),
        Column("arguments", _LongText, nullable=True, comment="JSON, redacted before it was recorded"),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("last_status_code", Integer, nullable=True),
        Column("last_attempt_at", _Timestamp, nullable=True),
        Column("created_at", _Timestamp, nullable=True),
        Column("eta", _Timestamp, nullable=True),
        Column("dispatch_mode", String(16), nullable=True),
        Column("seen_at", _Timestamp, nullable=False, comment="time of the first event; the list order"),
        Column("updated_at", _Timestamp, nullable=False, comment="database time of the last write; retention"),
        Index(f"ux_{TASKS_TABLE}_name", "task_name", unique=True),
        Index(f"ix_{TASKS_TABLE}_task_id", "task_id"),
        Index(f"ix_{TASKS_TABLE}_seen", "seen_at", "id"),
        Index(f"ix_{TASKS_TABLE}_endpoint", "endpoint", "seen_at", "id"),
        Index(f"ix_{TASKS_TABLE}_status", "status", "seen_at", "id"),
        Index(f"ix_{TASKS_TABLE}_queue", "queue_name", "seen_at", "id"),
        Index(f"ix_{TASKS_TABLE}_updated", "updated_at"),
    )
    attempts = Table(
        ATTEMPTS_TABLE,
        metadata,
        Column("id", _Id, primary_key=True, autoincrement=True),
        Column("task_name", String(NAME_LENGTH), nullable=False),
        Column("endpoint", String(500), nullable=False),
        Column("status", String(16), nullable=False, comment="the task status this attempt led to"),
        Column("retry_count", Integer, nullable=False),
        Column("execution_count", Integer, nullable=False),
        Column("started_at", _Timestamp, nullable=False),
        Column("duration", Float, nullable=False, comment="seconds"),
        Column("status_code", Integer, nullable=False),
        Column("outcome", String(16), nullable=False),
        Column("error_type", String(200), nullable=True),
        Column("error_message", Text, nullable=True),
        Column("trace_id", String(64), nullable=True),
        Column("job_name", String(NAME_LENGTH), nullable=True),
        Index(f"ix_{ATTEMPTS_TABLE}_task", "task_name", "started_at"),
        Index(f"ix_{ATTEMPTS_TABLE}_started", "started_at", "endpoint", "status"),  # covers the throughput query
        Index(f"ix_{ATTEMPTS_TABLE}_endpoint", "endpoint", "started_at"),
    )
    letters = Table(
        LETTERS_TABLE,
        metadata,
        Column("id", _Id, primary_key=True, autoincrement=True),
        Column("letter_key", String(NAME_LENGTH), nullable=True, comment="DeadLetter.key; one row per task"),
        Column("reason", String(32), nullable=False),
        Column("task_name", String(NAME_LENGTH), nullable=True),
        Column("queue_name", String(100), nullable=True),
        Column("endpoint", String(500), nullable=False, comment="the request path as received"),
        Column("method", String(10), nullable=False),
        Column("body", _Blob, nullable=False),
        Column("headers", Text, nullable=False, comment="JSON object, credentials already redacted"),
        Column("errors", _LongText, nullable=False, comment="JSON list"),
        Column("received_at", _Timestamp, nullable=False),
        Column("deliveries", Integer, nullable=False, server_default="1"),
        Column("status", String(16), nullable=False),
        Column("replayed_as", String(NAME_LENGTH), nullable=True),
        Column("updated_at", _Timestamp, nullable=False),
        Index(f"ux_{LETTERS_TABLE}_key", "letter_key", unique=True),
        Index(f"ix_{LETTERS_TABLE}_status", "status", "id"),
        Index(f"ix_{LETTERS_TABLE}_endpoint", "endpoint", "id"),
        Index(f"ix_{LETTERS_TABLE}_reason", "reason", "id"),
    )
    return HistoryTables(tasks, attempts, letters)


def history_tables() -> HistoryTables:
    """The tables as defined in `fastapi_gcp_tasks.outbox.metadata`, the metadata the migrations create."""
    from fastapi_gcp_tasks.outbox import _schema

    return HistoryTables(
        _schema.metadata.tables[TASKS_TABLE],
        _schema.metadata.tables[ATTEMPTS_TABLE],
        _schema.metadata.tables[LETTERS_TABLE],
    )
