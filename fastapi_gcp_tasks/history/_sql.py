"""Every statement the task history runs, in one place: the writer's batch, retention, and the queries.

A batch inserts the task rows it has not seen with each database's "insert or ignore" (the one dialect-specific
statement), then updates every task of the batch with one executemany of portable SQL whose SET clauses merge in
the database (counts added, the latest attempt wins by its start time), so that several processes recording
attempts of the same task never lose one another's counts.

Timestamps are bound as aware UTC datetimes and read back as aware UTC datetimes whatever the backend returns
(PostgreSQL aware, MySQL and SQLite naive UTC).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from fastapi_gcp_tasks.history._schema import history_tables
from fastapi_gcp_tasks.history._types import (
    AttemptEvent,
    AttemptRecord,
    CreatedEvent,
    TaskRecord,
    TaskStatus,
    TaskSummary,
    ThroughputPoint,
)
from fastapi_gcp_tasks.outbox._schema import db_now

__all__ = [
    "BadCursorError",
    "attempt_status",
    "decode_cursor",
    "encode_cursor",
    "from_db",
    "to_db",
    "write_batch",
]

TABLES = history_tables()
_t = TABLES.tasks.c
_a = TABLES.attempts.c


class BadCursorError(ValueError):
    """A `cursor` that no page of this query returned."""


def to_db(value: dt.datetime) -> dt.datetime:
    """`value` in UTC, for binding (a naive value is taken as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def from_db(value: dt.datetime | None) -> dt.datetime | None:
    """A timestamp read from any backend, as an aware UTC datetime."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    result = from_db(value)
    assert result is not None
    return result


def encode_cursor(at: dt.datetime, row_id: int) -> str:
    """The opaque cursor after the row (`at`, `row_id`) of a newest-first listing."""
    raw = json.dumps([to_db(at).isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    """The (time, id) inside `cursor`; `BadCursorError` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = json.loads(raw)
        return dt.datetime.fromisoformat(at), int(row_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadCursorError(f"not a cursor of this listing: {cursor!r}") from exc


def attempt_status(event: AttemptEvent) -> TaskStatus:
    """The task status an attempt leads to: its outcome first, then its HTTP status."""
    if event.outcome == "dead_letter":
        return "dead_letter"
    if event.outcome == "gave_up":
        return "failed"
    return "succeeded" if 200 <= event.status_code < 300 else "retrying"


def task_id_of(task_name: str) -> str:
    """The last segment of a task name (the short id Cloud Tasks sends in `X-CloudTasks-TaskName`)."""
    return task_name.rsplit("/", 1)[-1]


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


# Writing ------------------------------------------------------------------------------------------------------


@dataclass
class _TaskDelta:
    """What one batch changes in one task row."""

    endpoint: str
    seen_at: dt.datetime
    queue_name: str | None = None
    method: str | None = None
    arguments: str | None = None
    created_at: dt.datetime | None = None
    eta: dt.datetime | None = None
    dispatch_mode: str | None = None
    attempts: int = 0
    last: AttemptEvent | None = None
    attempt_rows: list[dict[str, Any]] = field(default_factory=list)


def _deltas(events: Iterable[CreatedEvent | AttemptEvent]) -> dict[str, _TaskDelta]:
    deltas: dict[str, _TaskDelta] = {}
    for event in events:
        at = event.created_at if isinstance(event, CreatedEvent) else event.started_at
        delta = deltas.get(event.task_name)
        if delta is None:
            delta = deltas[event.task_name] = _TaskDelta(endpoint=event.endpoint, seen_at=to_db(at))
        delta.seen_at = min(delta.seen_at, to_db(at))
        delta.method = delta.method or event.method
        delta.queue_name = event.queue_name or delta.queue_name
        if isinstance(event, CreatedEvent):
            delta.endpoint = event.endpoint
            delta.arguments = _json(event.arguments) or delta.arguments
            delta.created_at = to_db(event.created_at)
            delta.eta = None if event.eta is None else to_db(event.eta)
            delta.dispatch_mode = event.dispatch_mode
            continue
        delta.arguments = delta.arguments or _json(event.arguments)
        delta.attempts += 1
        status = attempt_status(event)
        if delta.last is None or to_db(event.started_at) >= to_db(delta.last.started_at):
            delta.last = event
        delta.attempt_rows.append(
            {
                "task_name": event.task_name,
                "endpoint": event.endpoint,
                "status": status,
                "retry_count": event.retry_count,
                "execution_count": event.execution_count,
                "started_at": to_db(event.started_at),
                "duration": event.duration,
                "status_code": event.status_code,
                "outcome": event.outcome,
                "error_type": None if event.error_type is None else event.error_type[:200],
                "error_message": event.error_message,
                "trace_id": None if event.trace_id is None else event.trace_id[:64],
                "job_name": event.job_name,
            }
        )
    return deltas


def _merge(column: Any, param: str) -> ColumnElement[Any]:
    return func.coalesce(bindparam(param, type_=column.type), column)


_NEW_TASK = {"status": "pending", "attempts": 0, "updated_at": db_now()}


def _insert_missing(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert the task rows whose name is not stored yet, leaving the others as they are, in one statement.

    Each database's own "insert or ignore" (no prior SELECT: with an IN list of hundreds of names, a planner
    that has not analyzed a young table yet scans it once per batch).
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(TABLES.tasks).values(_NEW_TASK).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(TABLES.tasks).values(_NEW_TASK).on_conflict_do_nothing()
    elif dialect in {"mysql", "mariadb"}:
        statement = mysql.insert(TABLES.tasks).values(_NEW_TASK).on_duplicate_key_update(task_name=_t.task_name)
    else:  # pragma: no cover - the supported databases are the three above
        raise NotImplementedError(f"the task history does not support {dialect}")
    connection.execute(statement, rows)


_CREATED_FIELDS: list[tuple[Any, Any]] = [
    (_t.queue_name, _merge(_t.queue_name, "u_queue_name")),
    (_t.endpoint, bindparam("u_endpoint")),
    (_t.method, _merge(_t.method, "u_method")),
    (_t.arguments, func.coalesce(_t.arguments, bindparam("u_arguments", type_=_t.arguments.type))),
    (_t.created_at, _merge(_t.created_at, "u_created_at")),
    (_t.eta, _merge(_t.eta, "u_eta")),
    (_t.dispatch_mode, _merge(_t.dispatch_mode, "u_dispatch_mode")),
    (_t.updated_at, db_now()),
]

_UPDATE_CREATED = update(TABLES.tasks).where(_t.task_name == bindparam("u_task_name")).ordered_values(*_CREATED_FIELDS)

# MySQL and MariaDB evaluate SET clauses left to right, each seeing the ones before: the status and status code
# compare against last_attempt_at before it is moved, so it comes last.
_newer = or_(_t.last_attempt_at.is_(None), _t.last_attempt_at <= bindparam("u_last_at", type_=_t.last_attempt_at.type))
_UPDATE_ATTEMPTED = (
    update(TABLES.tasks)
    .where(_t.task_name == bindparam("u_task_name"))
    .ordered_values(
        *_CREATED_FIELDS,
        (_t.attempts, _t.attempts + bindparam("u_attempts", type_=Integer())),
        (_t.status, case((_newer, bindparam("u_status")), else_=_t.status)),
        (_t.last_status_code, case((_newer, bindparam("u_status_code", type_=Integer())), else_=_t.last_status_code)),
        (
            _t.last_attempt_at,
            case((_newer, bindparam("u_last_at", type_=_t.last_attempt_at.type)), else_=_t.last_attempt_at),
        ),
    )
)


def write_batch(connection: Connection, events: Sequence[CreatedEvent | AttemptEvent]) -> None:
    """Record `events` in the caller's transaction: new task rows, every task's merged state, the attempt rows."""
    deltas = dict(sorted(_deltas(events).items()))  # rows locked in one order by every writer: no deadlock
    _insert_missing(
        connection,
        [
            {"task_name": name, "task_id": task_id_of(name), "endpoint": delta.endpoint, "seen_at": delta.seen_at}
            for name, delta in deltas.items()
        ],
    )
    created: list[dict[str, Any]] = []
    attempted: list[dict[str, Any]] = []
    attempt_rows: list[dict[str, Any]] = []
    for name, delta in deltas.items():
        params: dict[str, Any] = {
            "u_task_name": name,
            "u_queue_name": delta.queue_name,
            "u_endpoint": delta.endpoint,
            "u_method": delta.method,
            "u_arguments": delta.arguments,
            "u_created_at": delta.created_at,
            "u_eta": delta.eta,
            "u_dispatch_mode": delta.dispatch_mode,
        }
        if delta.last is None:
            created.append(params)
            continue
        params.update(
            u_attempts=delta.attempts,
            u_status=attempt_status(delta.last),
            u_status_code=delta.last.status_code,
            u_last_at=to_db(delta.last.started_at),
        )
        attempted.append(params)
        attempt_rows.extend(delta.attempt_rows)
    if created:
        connection.execute(_UPDATE_CREATED, created)
    if attempted:
        connection.execute(_UPDATE_ATTEMPTED, attempted)
    if attempt_rows:
        connection.execute(insert(TABLES.attempts), attempt_rows)


# Retention ----------------------------------------------------------------------------------------------------


def prune_batch(connection: Connection, cutoff: ColumnElement[Any] | dt.datetime, batch_size: int) -> int:
    """Delete up to `batch_size` attempts, then tasks, last written before `cutoff`; the number of rows deleted.

    Ids are selected first and deleted by id: MySQL and MariaDB refuse LIMIT in a subquery of DELETE.
    """
    bound = to_db(cutoff) if isinstance(cutoff, dt.datetime) else cutoff
    deleted = 0
    for table, column in ((TABLES.attempts, _a.started_at), (TABLES.tasks, _t.updated_at)):
        ids = list(connection.execute(select(table.c.id).where(column < bound).limit(batch_size)).scalars())
        if ids:
            deleted += connection.execute(delete(table).where(table.c.id.in_(ids))).rowcount
    return deleted


# Queries ------------------------------------------------------------------------------------------------------


def _summary(row: Any) -> TaskSummary:
    return TaskSummary(
        task_name=row.task_name,
        queue_name=row.queue_name,
        endpoint=row.endpoint,
        status=row.status,
        created_at=from_db(row.created_at),
        last_attempt_at=from_db(row.last_attempt_at),
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        dispatch_mode=row.dispatch_mode,
    )


def get_task(connection: Connection, task_name: str) -> TaskRecord | None:
    """One task by full name, else by short id (the newest of that id), with its attempts oldest first."""
    row = connection.execute(select(TABLES.tasks).where(_t.task_name == task_name)).first()
    if row is None:
        row = connection.execute(
            select(TABLES.tasks).where(_t.task_id == task_name).order_by(_t.seen_at.desc(), _t.id.desc()).limit(1)
        ).first()
    if row is None:
        return None
    attempts = connection.execute(
        select(TABLES.attempts).where(_a.task_name == row.task_name).order_by(_a.started_at, _a.id)
    ).all()
    return TaskRecord(
        summary=_summary(row),
        method=row.method,
        arguments=None if row.arguments is None else json.loads(row.arguments),
        eta=from_db(row.eta),
        attempts=tuple(
            AttemptRecord(
                attempt_id=a.id,
                task_name=a.task_name,
                retry_count=a.retry_count,
                execution_count=a.execution_count,
                started_at=_aware(a.started_at),
                duration=a.duration,
                status_code=a.status_code,
                outcome=a.outcome,
                error_type=a.error_type,
                error_message=a.error_message,
                trace_id=a.trace_id,
            )
            for a in attempts
        ),
    )


def find_tasks(
    connection: Connection,
    *,
    endpoint: str | None,
    queue: str | None,
    status: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    search: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[TaskSummary], str | None]:
    """A newest-first page of tasks (by first-seen time, then id) and the cursor of the next page."""
    query: Select[Any] = select(TABLES.tasks)
    if endpoint is not None:
        query = query.where(_t.endpoint == endpoint)
    if queue is not None:
        query = query.where(_t.queue_name == queue)
    if status is not None:
        query = query.where(_t.status == status)
    if since is not None:
        query = query.where(_t.seen_at >= to_db(since))
    if until is not None:
        query = query.where(_t.seen_at < to_db(until))
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(
            or_(
                _t.task_name == search,
                _t.task_id.like(escaped + "%", escape="\\"),
                _t.endpoint.like("%" + escaped + "%", escape="\\"),
            )
        )
    if cursor is not None:
        at, row_id = decode_cursor(cursor)
        at = to_db(at)
        query = query.where(or_(_t.seen_at < at, and_(_t.seen_at == at, _t.id < row_id)))
    rows = connection.execute(query.order_by(_t.seen_at.desc(), _t.id.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(_aware(rows[-1].seen_at), rows[-1].id) if more and rows else None
    return [_summary(row) for row in rows], next_cursor


def endpoints(connection: Connection) -> list[str]:
    """Every endpoint with at least one task, sorted."""
    return list(connection.execute(select(_t.endpoint).distinct().order_by(_t.endpoint)).scalars())


class bucket_of(FunctionElement[int]):  # noqa: N801
    """The index of the `size`-second bucket, counted from `origin` (seconds since the epoch), holding `column`.

    Numbers are rendered as literals, so that the same expression in SELECT and GROUP BY is the same SQL text.
    """

    type = Integer()
    inherit_cache = False
    name = "bucket_of"

    def __init__(self, column: ColumnElement[Any], origin: float, size: float) -> None:
        super().__init__(column)
        self.origin = float(origin)
        self.size = float(size)


def _column(element: bucket_of, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(bucket_of, "postgresql")
def _bucket_postgresql(element: bucket_of, compiler: SQLCompiler, **kw: Any) -> str:
    epoch = f"EXTRACT(EPOCH FROM {_column(element, compiler, **kw)})"
    return f"CAST(FLOOR(({epoch} - {element.origin!r}) / {element.size!r}) AS BIGINT)"


@compiles(bucket_of, "mysql")
@compiles(bucket_of, "mariadb")
def _bucket_mysql(element: bucket_of, compiler: SQLCompiler, **kw: Any) -> str:
    # arithmetic on the stored UTC wall time: UNIX_TIMESTAMP would read it in the session's time zone
    epoch = f"(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {_column(element, compiler, **kw)}) / 1000000.0)"
    return f"FLOOR(({epoch} - {element.origin!r}) / {element.size!r})"


@compiles(bucket_of, "sqlite")
def _bucket_sqlite(element: bucket_of, compiler: SQLCompiler, **kw: Any) -> str:
    epoch = f"((julianday({_column(element, compiler, **kw)}) - 2440587.5) * 86400.0)"
    return f"CAST((({epoch} - {element.origin!r}) / {element.size!r}) AS INTEGER)"


def throughput(
    connection: Connection, *, since: dt.datetime, bucket: dt.timedelta, endpoint: str | None
) -> list[ThroughputPoint]:
    """Succeeded and failed attempts per endpoint and bucket since `since`, grouped by the database.

    Buckets start at whole multiples of their size since the epoch (a 1-minute bucket at each minute), so that
    charts drawn at different times line up.
    """
    size = bucket.total_seconds()
    start = to_db(since)
    origin = dt.datetime.fromtimestamp((start.timestamp() // size) * size, dt.UTC)
    index = bucket_of(_a.started_at, origin.timestamp(), size).label("bucket")
    succeeded = func.sum(case((_a.status == "succeeded", 1), else_=0)).label("succeeded")
    query = (
        select(index, _a.endpoint, succeeded, func.count().label("total"))
        .where(_a.started_at >= start)
        .group_by(literal_column("bucket"), _a.endpoint)
        .order_by(literal_column("bucket"), _a.endpoint)
    )
    if endpoint is not None:
        query = query.where(_a.endpoint == endpoint)
    return [
        ThroughputPoint(
            bucket_start=origin + int(row.bucket) * bucket,
            endpoint=row.endpoint,
            succeeded=int(row.succeeded or 0),
            failed=int(row.total) - int(row.succeeded or 0),
        )
        for row in connection.execute(query)
    ]


def counts(connection: Connection) -> dict[str, Any]:
    """Rows per table and tasks per status, for `history stats`."""
    rows = connection.execute(select(_t.status, func.count()).group_by(_t.status)).all()
    by_status: dict[str, int] = {status: int(count) for status, count in rows}
    letters = TABLES.letters.c
    return {
        "tasks": sum(by_status.values()),
        "attempts": connection.execute(select(func.count()).select_from(TABLES.attempts)).scalar_one(),
        "by_status": dict(sorted(by_status.items())),
        "open_dead_letters": connection.execute(
            select(func.count()).select_from(TABLES.letters).where(letters.status == "open")
        ).scalar_one(),
        "oldest": from_db(connection.execute(select(func.min(_t.seen_at))).scalar_one()),
        "newest": from_db(connection.execute(select(func.max(_t.seen_at))).scalar_one()),
    }
