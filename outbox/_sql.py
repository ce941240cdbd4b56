"""Every statement the outbox runs, in one place.

The writer needs one INSERT (`insert_statement`). The relay's statements go through `OutboxStore`, which owns
transactions on its own engine:

* a claim takes up to N ready rows in one short transaction, gives them a fresh lease token and moves their
  `available_at` to the end of the lease (PostgreSQL, MySQL 8 and MariaDB 10.6+: `FOR UPDATE SKIP LOCKED`,
  so concurrent relays never take the same row; SQLite: the engine begins with `BEGIN IMMEDIATE`);
* every later write about a claimed row names the lease token: a relay whose lease expired and was taken over
  changes nothing (0 rows), so the new owner's outcome stands.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)

from fastapi_gcp_tasks.outbox._failpoints import failpoint
from fastapi_gcp_tasks.outbox._schema import db_now, dead_letter_table, outbox_table

__all__ = ["ClaimedRow", "DeadLetter", "FinishCounts", "OutboxStats", "OutboxStore", "insert_statement"]

_o = outbox_table.c
_d = dead_letter_table.c


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    # COUNT(*) FILTER (WHERE ...) is missing from MySQL and MariaDB.
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


_INSERT = insert(outbox_table).values(
    queue_path=bindparam("queue_path"),
    task_name=bindparam("task_name"),
    request=bindparam("request"),
    created_at=db_now(),
    available_at=db_now(),
)


def insert_statement() -> Insert:
    """The one INSERT that `.delay()` adds to the caller's transaction.

    It is built once; execute it with `{"queue_path": ..., "task_name": ..., "request": ...}` (one dict, or a
    list of them for many rows), so that each `.delay()` pays for no SQL construction or compilation.
    """
    return _INSERT


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """A row leased to this relay; `attempts` already counts the attempt being made."""

    id: int
    queue_path: str
    task_name: str
    request: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class FinishCounts:
    """Rows each terminal write actually changed (fewer than asked means the lease was lost)."""

    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A snapshot of the outbox, as `fastapi-gcp-tasks outbox status` prints it."""

    pending: int
    """Rows not delivered yet (ready, leased or waiting for a retry)."""
    ready: int
    """Pending rows a relay may claim now."""
    retrying: int
    """Pending rows that failed at least once."""
    oldest_age_seconds: float | None
    """Age of the oldest pending row, by the database clock."""
    retained: int
    """Delivered rows kept for the retention window."""
    dead_letters: int
    last_error: str | None = None
    """The error of the most recently retried pending row (what the relay keeps running into), if any."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task the relay gave up on."""

    id: int
    queue_path: str
    task_name: str
    attempts: int
    reason: str
    created_at: dt.datetime
    dead_at: dt.datetime


class OutboxStore:
    """The relay's and the CLI's access to the outbox tables through `engine` (one transaction per method)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._returning = engine.dialect.name in {"postgresql", "sqlite"}

    def claim(self, limit: int, *, lease_seconds: float) -> tuple[str, list[ClaimedRow]]:
        """Lease up to `limit` ready rows, oldest first; returns the lease token and the rows."""
        token = secrets.token_hex(16)
        ready = (
            select(_o.id)
            .where(_o.delivered_at.is_(None), _o.available_at <= db_now())
            .order_by(_o.available_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        lease = {"lease_token": token, "available_at": db_now(lease_seconds), "attempts": _o.attempts + 1}
        columns = (_o.id, _o.queue_path, _o.task_name, _o.request, _o.attempts)
        with self.engine.begin() as conn:
            if self._returning:
                # A CTE runs the locking subquery exactly once, so a claim never takes more than `limit` rows.
                chosen = ready.cte("chosen")
                claim = update(outbox_table).where(_o.id == chosen.c.id).values(lease)
                rows = conn.execute(claim.returning(*columns)).all()
            else:
                # MySQL allows neither LIMIT in an IN subquery nor UPDATE ... RETURNING.
                ids = list(conn.scalars(ready))
                if not ids:
                    return token, []
                conn.execute(update(outbox_table).where(_o.id.in_(ids)).values(lease))
                rows = conn.execute(select(*columns).where(_o.id.in_(ids))).all()
        return token, [ClaimedRow(r.id, r.queue_path, r.task_name, r.request, r.attempts) for r in rows]

    def finish(
        self,
        token: str,
        *,
        delivered: Sequence[int] = (),
        retries: Sequence[tuple[int, float, str]] = (),
        dead: Sequence[tuple[int, str]] = (),
        retention_seconds: float = 0.0,
    ) -> FinishCounts:
        """Record the outcome of one claimed batch, fenced by its lease token, in one transaction.

        `delivered` rows are deleted (or stamped `delivered_at` when retained); `retries` are
        `(id, delay_seconds, error)` and become ready again after the delay; `dead` rows `(id, reason)` move
        to the dead-letter table.
        """
        n_delivered = n_retried = n_dead = 0
        with self.engine.begin() as conn:
            if delivered:
                fence = and_(_o.lease_token == token, _o.id.in_(delivered))
                if retention_seconds > 0:
                    stmt: Any = update(outbox_table).where(fence).values(delivered_at=db_now(), lease_token=None)
                else:
                    stmt = delete(outbox_table).where(fence)
                n_delivered = conn.execute(stmt).rowcount
            for row_id, delay, error in retries:
                n_retried += conn.execute(
                    update(outbox_table)
                    .where(_o.id == row_id, _o.lease_token == token)
                    .values(available_at=db_now(delay), lease_token=None, last_error=error[:4000])
                ).rowcount
            for row_id, reason in dead:
                n_dead += self._bury(conn, token, row_id, reason)
            failpoint("finishing")
        return FinishCounts(n_delivered, n_retried, n_dead)

    def _bury(self, conn: Connection, token: str, row_id: int, reason: str) -> int:
        fence = and_(_o.id == row_id, _o.lease_token == token)
        # Lock the row first, so that no claim can take it between the copy and the delete.
        if conn.execute(select(_o.id).where(fence).with_for_update()).first() is None:
            return 0
        conn.execute(
            insert(dead_letter_table).from_select(
                ["id", "queue_path", "task_name", "request", "created_at", "attempts", "reason", "dead_at"],
                select(
                    _o.id,
                    _o.queue_path,
                    _o.task_name,
                    _o.request,
                    _o.created_at,
                    _o.attempts,
                    literal(reason[:4000]),
                    db_now(),
                ).where(fence),
            )
        )
        conn.execute(delete(outbox_table).where(fence))
        return 1

    def release(self, token: str, ids: Iterable[int]) -> int:
        """Give leased rows back at once (shutdown), without counting the attempt."""
        ids = list(ids)
        if not ids:
            return 0
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    update(outbox_table)
                    .where(_o.lease_token == token, _o.id.in_(ids))
                    .values(lease_token=None, available_at=db_now(), attempts=_o.attempts - 1)
                ).rowcount
            )

    def purge_delivered(self, retention_seconds: float, *, limit: int = 1000) -> int:
        """Delete up to `limit` delivered rows older than the retention window."""
        with self.engine.begin() as conn:
            old = (
                select(_o.id)
                .where(_o.delivered_at.is_not(None), _o.delivered_at < db_now(-retention_seconds))
                .limit(limit)
            )
            ids = list(conn.scalars(old))
            if not ids:
                return 0
            return int(conn.execute(delete(outbox_table).where(_o.id.in_(ids))).rowcount)

    def stats(self) -> OutboxStats:
        """Counts and the age of the oldest pending row."""
        pending = _o.delivered_at.is_(None)
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    _count(pending),
                    _count(and_(pending, _o.available_at <= db_now())),
                    _count(and_(pending, _o.attempts > 0, _o.lease_token.is_(None))),
                    func.min(case((pending, _o.created_at))),
                    _count(_o.delivered_at.is_not(None)),
                    db_now(),
                )
            ).one()
            dead = conn.execute(select(func.count()).select_from(dead_letter_table)).scalar_one()
            # The row whose next attempt is furthest away failed last (or nearly): its error is the newest one.
            last_error = conn.execute(
                select(_o.last_error)
                .where(pending, _o.last_error.is_not(None))
                .order_by(_o.available_at.desc())
                .limit(1)
            ).scalar()
        oldest, now = row[3], row[5]
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else None
        return OutboxStats(int(row[0]), int(row[1]), int(row[2]), age, int(row[4]), int(dead), last_error)

    def dead_letters(self, *, limit: int = 100, queue_path: str | None = None) -> list[DeadLetter]:
        """The most recent dead letters first."""
        stmt = select(_d.id, _d.queue_path, _d.task_name, _d.attempts, _d.reason, _d.created_at, _d.dead_at)
        if queue_path is not None:
            stmt = stmt.where(_d.queue_path == queue_path)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(_d.dead_at.desc(), _d.id.desc()).limit(limit)).all()
        return [DeadLetter(*row) for row in rows]

    def requeue(
        self,
        ids: Sequence[int] | None = None,
        *,
        queue_path: str | None = None,
        batch_size: int = 1000,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> int:
        """Move dead letters back to the outbox with a fresh attempt count; `ids=None` means all (of `queue_path`).

        Returns how many moved. The dead letters chosen when the call starts are moved oldest id first,
        `batch_size` per transaction, so that requeueing many rows neither holds one huge transaction nor
        locks the whole table. A failure part-way leaves a prefix of them requeued and the rest dead: calling
        again moves the rest, never one twice (a requeued row is no longer a dead letter). `progress`, when
        given, is called after each batch with `(done, total, message)`, the message like
        `"requeued 1000 of 5200 dead letters"`.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an int of at least 1")
        if progress is not None and not callable(progress):
            raise ValueError(f"progress={progress!r} must be a callable taking (done, total, message)")
        conditions: list[ColumnElement[bool]] = []
        if ids is not None:
            conditions.append(_d.id.in_(list(ids)))
        if queue_path is not None:
            conditions.append(_d.queue_path == queue_path)
        with self.engine.connect() as conn:
            chosen = list(conn.scalars(select(_d.id).where(*conditions).order_by(_d.id)))
        total, moved = len(chosen), 0
        for start in range(0, total, batch_size):
            batch = chosen[start : start + batch_size]
            with self.engine.begin() as conn:
                # Rows requeued meanwhile by another caller are gone from the table and skipped.
                present = list(conn.scalars(select(_d.id).where(_d.id.in_(batch)).with_for_update()))
                if present:
                    conn.execute(
                        insert(outbox_table).from_select(
                            ["id", "queue_path", "task_name", "request", "created_at", "available_at", "attempts"],
                            select(
                                _d.id, _d.queue_path, _d.task_name, _d.request, _d.created_at, db_now(), literal(0)
                            ).where(_d.id.in_(present)),
                        )
                    )
                    conn.execute(delete(dead_letter_table).where(_d.id.in_(present)))
            moved += len(present)
            failpoint("requeued-batch")
            if progress is not None:
                done = start + len(batch)
                progress(done, total, f"requeued {moved} of {total} dead letters")
        return moved
