"""`TaskHistory`: durable task history in the application's SQL database, written off the request path.

Recording (`record_created`, `record_attempt`) appends to an in-memory queue and returns: it never raises and never
waits for the database. A daemon thread writes batches (`_writer.py`) and, with a retention, prunes once an hour.
Queries are plain blocking calls on the same engine; the console runs them in a thread pool.

The tables come from the migrations shared with the outbox: `fastapi-gcp-tasks history migrate` (or `migrate()`).
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, get_args

from pydantic_core import to_jsonable_python
from sqlalchemy import URL, Engine

from fastapi_gcp_tasks.history import _metrics
from fastapi_gcp_tasks.history._engine import history_engine
from fastapi_gcp_tasks.history._errors import HistoryArgumentError, check_limit, schema_errors
from fastapi_gcp_tasks.history._letters import DeadLetterStore
from fastapi_gcp_tasks.history._sql import BadCursorError, counts, endpoints, find_tasks, get_task, throughput, to_db
from fastapi_gcp_tasks.history._types import (
    AttemptEvent,
    CreatedEvent,
    HistoryStats,
    Page,
    TaskRecord,
    TaskStatus,
    TaskSummary,
    ThroughputPoint,
)
from fastapi_gcp_tasks.history._writer import Deferred, HistoryWriter, prune
from fastapi_gcp_tasks.outbox._schema import db_now

__all__ = ["REDACTED", "TaskHistory"]

REDACTED = "[redacted]"
_STATUSES = frozenset(get_args(TaskStatus))


def _redact(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if k in keys else _redact(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(item, keys) for item in value]
    return value


class TaskHistory:
    """Durable task history: what was created, every attempt, and the dead letters, in one SQL database.

    `database` is a SQLAlchemy URL or Engine (PostgreSQL, MySQL/MariaDB, SQLite; an async URL is used through its
    blocking driver). `redact` names argument keys, at any depth, whose values are never stored;
    `store_arguments=False` stores none. Up to `max_queue` events wait in memory and are written `batch_size` per
    transaction every `flush_interval` seconds. With a `retention`, attempts and tasks older than that are pruned
    by the writer every `prune_interval` seconds. Call `close()` at shutdown (the application's lifespan) to write
    what is queued.
    """

    def __init__(
        self,
        database: str | URL | Engine,
        *,
        redact: Iterable[str] = (),
        store_arguments: bool = True,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.25,
        retention: dt.timedelta | None = dt.timedelta(days=30),
        prune_interval: float = 3600.0,
    ) -> None:
        if isinstance(redact, str):
            raise HistoryArgumentError("redact must be a collection of key names, not one string", param="redact")
        for name, value, minimum in (("max_queue", max_queue, 1), ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise HistoryArgumentError(f"{name} must be a whole number >= {minimum}, not {value!r}", param=name)
        for name, number in (("flush_interval", flush_interval), ("prune_interval", prune_interval)):
            if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
                raise HistoryArgumentError(f"{name} must be a positive number of seconds, not {number!r}", param=name)
        if retention is not None and (not isinstance(retention, dt.timedelta) or retention <= dt.timedelta(0)):
            raise HistoryArgumentError(
                f"retention must be a positive timedelta or None, not {retention!r}", param="retention"
            )
        self._engine, self._owns_engine = history_engine(database)
        self._redact = frozenset(redact)
        self._store_arguments = store_arguments
        self._retention = retention
        self._writer = HistoryWriter(
            self._engine,
            max_queue=max_queue,
            batch_size=batch_size,
            flush_interval=float(flush_interval),
            retention=None if retention is None else retention.total_seconds(),
            prune_interval=float(prune_interval),
        )
        self._letters = DeadLetterStore(self._engine)
        self._closed = False
        # a history dropped without close(): its thread writes what is queued and ends (it holds no reference here)
        weakref.finalize(self, self._writer.finish)
        _metrics.track(self)

    def __repr__(self) -> str:
        return f"TaskHistory({self._engine.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> TaskHistory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine the history writes to and reads from."""
        return self._engine

    # recording ---------------------------------------------------------------------------------------------

    def record_created(self, event: CreatedEvent) -> None:
        """Queue a task creation; returns at once, never raises (a full queue drops and counts it)."""
        self._writer.submit(event)

    def record_attempt(self, event: AttemptEvent) -> None:
        """Queue one attempt; returns at once, never raises (a full queue drops and counts it)."""
        self._writer.submit(event)

    def record_attempt_later(self, build: Callable[[], AttemptEvent | None]) -> None:
        """Queue an attempt that the writer thread builds with `build()` (None: nothing to record).

        For the worker's request path: the costly part of an event (rebuilding and redacting the arguments)
        runs off the event loop. A `build` that raises is logged and counted as dropped.
        """
        self._writer.submit(Deferred(build))

    def arguments_for_storage(self, arguments: Mapping[str, Any]) -> dict[str, Any] | None:
        """`arguments` as they may be stored: JSON-compatible, every key named in `redact` (at any depth)
        replaced by `"[redacted]"`; None when arguments are not stored. Callers apply it before building events.
        """
        if not self._store_arguments:
            return None
        jsonable = to_jsonable_python(dict(arguments), fallback=repr)
        return dict(_redact(jsonable, self._redact))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded before the call is written or dropped; False if `timeout` ran out."""
        return self._writer.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for up to `timeout` seconds, then count the rest as dropped) and stop the writer.

        Idempotent. An engine created from a URL is disposed; an engine given by the caller is left open.
        """
        if self._closed:
            return
        self._closed = True
        self._writer.close(timeout)
        _metrics.untrack(self)
        if self._owns_engine:
            self._engine.dispose()

    @property
    def stats(self) -> HistoryStats:
        """Events written, dropped, failed writes and events waiting, since this history was created."""
        return self._writer.stats

    # queries -----------------------------------------------------------------------------------------------

    def get(self, task_name: str) -> TaskRecord | None:
        """The task with this full name, or else the newest with this short id; its attempts oldest first."""
        with schema_errors(), self._engine.connect() as connection:
            return get_task(connection, task_name)

    def find(
        self,
        *,
        endpoint: str | None = None,
        queue: str | None = None,
        status: TaskStatus | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        search: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[TaskSummary]:
        """Tasks newest first (by their first event), filtered; pass `next_cursor` back for the next page.

        `search` matches a full task name, the start of a short task id, or part of an endpoint.
        """
        check_limit(limit)
        if status is not None and status not in _STATUSES:
            raise HistoryArgumentError(f"status must be one of {sorted(_STATUSES)}, not {status!r}", param="status")
        try:
            with schema_errors(), self._engine.connect() as connection:
                items, next_cursor = find_tasks(
                    connection,
                    endpoint=endpoint,
                    queue=queue,
                    status=status,
                    since=since,
                    until=until,
                    search=search,
                    limit=limit,
                    cursor=cursor,
                )
        except BadCursorError as exc:
            raise HistoryArgumentError(str(exc), param="cursor") from None
        return Page(items=tuple(items), next_cursor=next_cursor)

    def endpoints(self) -> list[str]:
        """Every endpoint with recorded tasks, sorted."""
        with schema_errors(), self._engine.connect() as connection:
            return endpoints(connection)

    def throughput(
        self, *, since: dt.datetime, bucket: dt.timedelta, endpoint: str | None = None
    ) -> list[ThroughputPoint]:
        """Succeeded and failed attempts per endpoint in `bucket`-long slices from `since`, oldest first.

        Buckets without attempts are absent. Counted by the database over the attempts' time index.
        """
        if not isinstance(bucket, dt.timedelta) or bucket.total_seconds() < 1:
            raise HistoryArgumentError(
                f"bucket must be a timedelta of 1 second or more, not {bucket!r}", param="bucket"
            )
        with schema_errors(), self._engine.connect() as connection:
            return throughput(connection, since=since, bucket=bucket, endpoint=endpoint)

    def prune(self, older_than: dt.timedelta | dt.datetime | None = None) -> int:
        """Delete attempts started, and tasks last written, before the cutoff; returns the rows deleted.

        `older_than` is an age (measured by the database clock) or a point in time; the default is the retention.
        """
        if older_than is None:
            if self._retention is None:
                raise HistoryArgumentError("give older_than: this history has no retention", param="older_than")
            older_than = self._retention
        if isinstance(older_than, dt.timedelta):
            with schema_errors():
                return prune(self._engine, db_now(-older_than.total_seconds()))
        if isinstance(older_than, dt.datetime):
            with schema_errors():
                return prune(self._engine, to_db(older_than))
        raise HistoryArgumentError(
            f"older_than must be a timedelta, a datetime or None, not {older_than!r}", param="older_than"
        )

    def counts(self) -> dict[str, Any]:
        """Rows stored: tasks (and per status), attempts, open dead letters, oldest and newest task."""
        with schema_errors(), self._engine.connect() as connection:
            return counts(connection)

    @property
    def dead_letters(self) -> DeadLetterStore:
        """The dead-letter store in the same database (usable as a `DeadLetterSink`)."""
        return self._letters
