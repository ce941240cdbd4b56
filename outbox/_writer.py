"""The writing side: `.delay()` becomes one INSERT in the caller's transaction.

`OutboxSink` is a `TaskSink`: the route builder hands it a validated, named `PreparedTask` and it stores the
serialized `CreateTaskRequest`, so the relay later sends exactly what a direct `.delay()` would have sent. It never
commits, flushes or rolls back: the task exists if and only if the caller's transaction commits.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

from google.cloud import tasks_v2
from sqlalchemy import Connection
from sqlalchemy.orm import Session, registry, sessionmaker
from starlette.concurrency import run_in_threadpool

from fastapi_gcp_tasks.build._naming import new_task_id, task_name
from fastapi_gcp_tasks.dispatch._sink import PreparedTask, use_sink
from fastapi_gcp_tasks.exception import TaskArgumentError
from fastapi_gcp_tasks.outbox._schema import db_now, outbox_table
from fastapi_gcp_tasks.outbox._sql import insert_statement

__all__ = ["OutboxSink", "SessionLike", "outbox_session", "outbox_sink", "use_outbox"]

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

SessionLike: TypeAlias = "Session | Connection | AsyncSession | AsyncConnection"
"""Where outbox rows can be written: an ORM session or a Core connection, sync or async."""


@functools.cache
def _async_types() -> tuple[type[Any], type[Any], type[Any]] | None:
    # SQLAlchemy's asyncio extension needs greenlet; without it no async session can exist.
    try:
        from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
    except ImportError:
        return None
    return AsyncSession, AsyncConnection, async_sessionmaker


def _is_async_session(value: object) -> bool:
    types = _async_types()
    return types is not None and isinstance(value, types[0])


def _is_async(value: object) -> bool:
    types = _async_types()
    return types is not None and isinstance(value, types[:2])


_current_session: contextvars.ContextVar[SessionLike | None] = contextvars.ContextVar(
    "fastapi_gcp_tasks_outbox_session", default=None
)


class _PendingRow:
    """An outbox row added to an `AsyncSession` from synchronous code; flushed with the caller's transaction."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


registry().map_imperatively(_PendingRow, outbox_table)


class OutboxSink:
    """A `TaskSink` that stores each task as a row in a SQLAlchemy transaction instead of sending it.

    With `session=None` the sink writes to the session made current by `use_outbox()` or the `outbox_session()`
    dependency, so one sink can be given to a route builder once and serve every request.
    """

    __slots__ = ("_session",)

    def __init__(self, session: SessionLike | None = None) -> None:
        if session is not None and not (isinstance(session, Session | Connection) or _is_async(session)):
            raise TaskArgumentError(
                f"session={session!r} is not a SQLAlchemy Session, AsyncSession, Connection or AsyncConnection",
                param="session",
            )
        self._session = session

    def _target(self) -> SessionLike:
        session = self._session if self._session is not None else _current_session.get()
        if session is None:
            raise TaskArgumentError(
                "the outbox sink has no session: pass one (outbox_sink(session)), wrap the code in "
                "`with use_outbox(session):`, or depend on outbox_session(...) in the endpoint",
                param="sink",
            )
        return session

    def submit(self, task: PreparedTask) -> tasks_v2.Task:
        """Add the task's row to the transaction; with an async session, the row is flushed with it later."""
        session = self._target()
        values = _row_values(task)
        if isinstance(session, Session | Connection):
            session.execute(insert_statement(), values)
        elif _is_async_session(session):
            session.sync_session.add(  # type: ignore[union-attr]
                _PendingRow(**values, created_at=db_now(), available_at=db_now())
            )
        else:
            raise TaskArgumentError(
                "a synchronous .delay() cannot write to an AsyncConnection: use an AsyncSession, a sync "
                "Connection, or an async route builder",
                param="sink",
            )
        return task.placeholder()

    async def submit_async(self, task: PreparedTask) -> tasks_v2.Task:
        """Execute the task's INSERT in the transaction."""
        session = self._target()
        values = _row_values(task)
        if isinstance(session, Session | Connection):
            session.execute(insert_statement(), values)
        else:
            await session.execute(insert_statement(), values)
        return task.placeholder()


def _row_values(task: PreparedTask) -> dict[str, Any]:
    request = task.request
    if not request.task.name:
        request.task.name = task_name(request.parent, new_task_id())
    return {
        "queue_path": task.queue_path,
        "task_name": task.name,
        "request": tasks_v2.CreateTaskRequest.serialize(request),
    }


def outbox_sink(session: SessionLike | None = None) -> OutboxSink:
    """A sink for `sink=` (builder keyword or `.options(sink=...)`) writing to `session`, or to the current one."""
    return OutboxSink(session)


@contextlib.contextmanager
def use_outbox(session: SessionLike) -> Iterator[OutboxSink]:
    """Send every `.delay()` in this context to the outbox, inside `session`'s transaction."""
    sink = OutboxSink(session)
    token = _current_session.set(session)
    try:
        with use_sink(sink):
            yield sink
    finally:
        _current_session.reset(token)


def outbox_session(
    factory: sessionmaker[Session] | async_sessionmaker[AsyncSession],
) -> Callable[[], AsyncIterator[Any]]:
    """A FastAPI dependency: a session in a transaction that commits when the endpoint succeeds.

    While the endpoint runs, every `.delay()` writes its task to this transaction (through `use_outbox`), so the
    tasks exist if and only if the endpoint's database work commits. An exception rolls both back.

    ```python
    Db = Annotated[Session, Depends(outbox_session(SessionLocal))]

    @app.post("/orders")
    def create_order(order: Order, db: Db) -> None:
        db.add(order_row(order))
        send_receipt.delay(order_id=order.id)
    ```
    """
    types = _async_types()
    if types is not None and isinstance(factory, types[2]):
        async_factory: async_sessionmaker[AsyncSession] = factory

        async def async_dependency() -> AsyncIterator[AsyncSession]:
            async with async_factory() as session, session.begin():
                with use_outbox(session):
                    yield session

        return async_dependency

    sync_factory: sessionmaker[Session] = factory  # type: ignore[assignment]

    async def dependency() -> AsyncIterator[Session]:
        # An async dependency so that the context it sets reaches the endpoint; blocking calls go to a thread.
        session = sync_factory()
        try:
            with use_outbox(session):
                yield session
            await run_in_threadpool(session.commit)
        except BaseException:
            await run_in_threadpool(session.rollback)
            raise
        finally:
            await run_in_threadpool(session.close)

    return dependency
