"""`DeadLetterStore`: the dead letters of the worker (poison policy, `max_retries`) kept in SQL, for replay.

Calling the store with a `DeadLetter` stores it, synchronously, in its own transaction: a letter whose store fails
makes the worker answer with an error status, so Cloud Tasks delivers the task again and nothing is lost. A letter
is stored once per `DeadLetter.key` (a redelivered task only counts one more delivery), with a portable insert that
falls back to an update when the unique key is taken.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, get_args

from sqlalchemy import URL, Connection, Engine, Select, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from fastapi_gcp_tasks.history._engine import history_engine
from fastapi_gcp_tasks.history._errors import HistoryArgumentError, check_limit, schema_errors
from fastapi_gcp_tasks.history._schema import NAME_LENGTH, history_tables
from fastapi_gcp_tasks.history._sql import from_db, to_db
from fastapi_gcp_tasks.history._types import LetterStatus, Page, StoredLetter
from fastapi_gcp_tasks.outbox._schema import db_now

if TYPE_CHECKING:
    from fastapi_gcp_tasks.receive import DeadLetter

__all__ = ["DeadLetterStore"]

_LETTERS = history_tables().letters
_l = _LETTERS.c
_STATUSES = frozenset(get_args(LetterStatus))


def _cursor(letter_id: int) -> str:
    return f"l{letter_id}"


def _after(cursor: str) -> int:
    if cursor.startswith("l") and cursor[1:].isdigit():
        return int(cursor[1:])
    raise HistoryArgumentError(f"not a cursor of this listing: {cursor!r}", param="cursor")


def _stored(row: Any) -> StoredLetter:
    received = from_db(row.received_at)
    assert received is not None
    return StoredLetter(
        letter_id=row.id,
        key=row.letter_key,
        reason=row.reason,
        task_name=row.task_name,
        queue_name=row.queue_name,
        endpoint=row.endpoint,
        method=row.method,
        body=bytes(row.body),
        headers=json.loads(row.headers),
        errors=tuple(json.loads(row.errors)),
        received_at=received,
        status=row.status,
        replayed_as=row.replayed_as,
    )


class DeadLetterStore:
    """Dead letters in a SQL database (the task history's tables); also a synchronous `DeadLetterSink`.

    `PoisonPolicy(sink=store)` or `max_retries(on_give_up=store)` keeps every letter; `list`, `get` and `count`
    read them back; replay (`replay_letter`) re-creates the task, then `mark_replayed`; `discard` closes one.
    """

    def __init__(self, database: str | URL | Engine) -> None:
        self._engine, self._owns_engine = history_engine(database)

    def __repr__(self) -> str:
        return f"DeadLetterStore({self._engine.url.render_as_string(hide_password=True)!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine holding the letters."""
        return self._engine

    def close(self) -> None:
        """Dispose of the engine when the store created it from a URL (an engine given to it stays open)."""
        if self._owns_engine:
            self._engine.dispose()

    def __call__(self, letter: DeadLetter) -> None:
        """Store `letter` (once per `letter.key`); raises when the database fails, so that the task is retried."""
        key = letter.key
        row = {
            "letter_key": None if key is None else key[:NAME_LENGTH],
            "reason": letter.reason,
            "task_name": letter.task_name,
            "queue_name": letter.queue_name,
            "endpoint": letter.path,
            "method": letter.method,
            "body": letter.body,
            "headers": json.dumps(dict(letter.headers), separators=(",", ":")),
            "errors": json.dumps(list(letter.errors), separators=(",", ":"), default=str),
            "received_at": to_db(letter.received_at),
            "status": "open",
        }
        try:
            with schema_errors(), self._engine.begin() as connection:
                connection.execute(insert(_LETTERS).values(updated_at=db_now(), **row))
        except IntegrityError:
            if key is None:
                raise
            with schema_errors(), self._engine.begin() as connection:
                # a redelivery of a task already stored: the first letter stays as it is, one more delivery counted
                connection.execute(
                    update(_LETTERS)
                    .where(_l.letter_key == row["letter_key"])
                    .values(deliveries=_l.deliveries + 1, updated_at=db_now())
                )

    def list(
        self,
        *,
        status: LetterStatus | None = "open",
        endpoint: str | None = None,
        reason: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[StoredLetter]:
        """Letters newest first, filtered (status None: all); pass `next_cursor` back for the next page."""
        check_limit(limit)
        query = self._filtered(select(_LETTERS), status=status, endpoint=endpoint, reason=reason)
        if cursor is not None:
            query = query.where(_l.id < _after(cursor))
        with schema_errors(), self._engine.connect() as connection:
            rows = connection.execute(query.order_by(_l.id.desc()).limit(limit + 1)).all()
        items = [_stored(row) for row in rows[:limit]]
        return Page(items=tuple(items), next_cursor=_cursor(items[-1].letter_id) if len(rows) > limit else None)

    def get(self, letter_id: int) -> StoredLetter | None:
        """One letter by id, whatever its status."""
        with schema_errors(), self._engine.connect() as connection:
            row = connection.execute(select(_LETTERS).where(_l.id == letter_id)).first()
        return None if row is None else _stored(row)

    def count(self, status: LetterStatus | None = "open") -> int:
        """How many letters have this status (None: all)."""
        with schema_errors(), self._engine.connect() as connection:
            return self._count(connection, status)

    def _count(self, connection: Connection, status: LetterStatus | None) -> int:
        query = self._filtered(select(func.count()).select_from(_LETTERS), status=status, endpoint=None, reason=None)
        return int(connection.execute(query).scalar_one())

    def discard(self, letter_id: int) -> bool:
        """Close an open letter without replaying it; False when it is not open (or does not exist)."""
        return self._close(letter_id, status="discarded", replayed_as=None)

    def mark_replayed(self, letter_id: int, task_name: str) -> bool:
        """Record that an open letter was replayed as task `task_name`; False when it is not open."""
        return self._close(letter_id, status="replayed", replayed_as=task_name[:NAME_LENGTH])

    def _close(self, letter_id: int, *, status: str, replayed_as: str | None) -> bool:
        with schema_errors(), self._engine.begin() as connection:
            result = connection.execute(
                update(_LETTERS)
                .where(_l.id == letter_id, _l.status == "open")
                .values(status=status, replayed_as=replayed_as, updated_at=db_now())
            )
        return bool(result.rowcount)

    @staticmethod
    def _filtered(
        query: Select[Any], *, status: LetterStatus | None, endpoint: str | None, reason: str | None
    ) -> Select[Any]:
        if status is not None:
            if status not in _STATUSES:
                raise HistoryArgumentError(
                    f"status must be one of {sorted(_STATUSES)} or None, not {status!r}", param="status"
                )
            query = query.where(_l.status == status)
        if endpoint is not None:
            query = query.where(_l.endpoint == endpoint)
        if reason is not None:
            query = query.where(_l.reason == reason)
        return query
