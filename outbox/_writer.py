"""The writing side: `.delay()` becomes one INSERT in the caller's transaction.

`OutboxSink` is a `TaskSink`: the route builder hands it a validated, named `PreparedTask` and it stores the
serialized `CreateTaskRequest`, so the relay later sends exactly what a direct `.delay()` would have sent. It never
commits, flushes or rolls back: the task exists if and only if the caller's transaction commits.

That promise only holds inside a transaction the caller controls, so the sink refuses, at the `.delay()` call,
a session or connection with no transaction in progress (its row would be committed by nobody, or by whoever
happens to commit next) and an AUTOCOMMIT connection (its row would be committed even if the caller rolls back).
A database without the outbox tables gets an `OutboxSchemaError` that names `fastapi-gcp-tasks outbox migrate`.

`outbox_session()` is the request-scoped form: a FastAPI dependency whose transaction commits after the endpoint
returns and *before* the response starts, so a failed commit is a 5xx and no client is told about a task that
will never exist. FastAPI runs the exit code of `yield` dependencies before the response up to 0.117 and after
it from 0.118 on; from 0.121 a dependency can ask for `scope="function"`, which exits before the response again.
The dependency uses whichever of the two the installed FastAPI has, and refuses 0.118 to 0.120, which have neither.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import fastapi
from google.cloud import tasks_v2
from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, registry, sessionmaker
from starlette.concurrency import run_in_threadpool

from fastapi_gcp_tasks.build._naming import new_task_id, task_name
from fastapi_gcp_tasks.dispatch._sink import PreparedTask, use_sink
from fastapi_gcp_tasks.exception import TaskArgumentError
from fastapi_gcp_tasks.outbox._migrate import OutboxError, is_missing_schema, schema_error
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
        if isinstance(session, Session | Connection):
            _check_transaction(session.in_transaction())
            _check_autocommit(_sync_connection(session))
            _insert(session, _row_values(task))
            _report_on_commit(session, task)
        elif _is_async_session(session):
            sync_session: Session = session.sync_session  # type: ignore[union-attr]
            _check_transaction(sync_session.in_transaction())
            _check_autocommit(sync_session.get_bind(clause=insert_statement()))
            sync_session.add(_PendingRow(**_row_values(task), created_at=db_now(), available_at=db_now()))
            _report_on_commit(sync_session, task)
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
        _check_transaction(session.in_transaction())
        if isinstance(session, Session | Connection):
            _check_autocommit(_sync_connection(session))
            _insert(session, _row_values(task))
            _report_on_commit(session, task)
            return task.placeholder()
        if _is_async_session(session):
            connection = await session.connection(bind_arguments={"clause": insert_statement()})
        else:
            connection = cast("AsyncConnection", session)
        _check_autocommit(connection.sync_connection)
        try:
            await session.execute(insert_statement(), _row_values(task))
        except DBAPIError as exc:
            if is_missing_schema(exc):
                raise schema_error(exc) from exc
            raise
        _report_on_commit(session.sync_session if _is_async_session(session) else None, task)  # type: ignore[union-attr]
        return task.placeholder()


_COMMITTED_TASKS = "fastapi_gcp_tasks_outbox_created"
"""`Session.info` key: the tasks of the current transaction whose creation history is waiting for its commit."""
_LISTENING = "fastapi_gcp_tasks_outbox_listening"


def _report_on_commit(session: Session | Connection | None, task: PreparedTask) -> None:
    """Tell task history (the task's creation hook) about an outbox task once it is true: the task exists when the
    caller's transaction commits, so with a `Session` it is reported after the commit and forgotten on rollback.
    A Core `Connection` has no after-commit event: its task is reported when the row is written."""
    if task.creation is None:
        return
    if not isinstance(session, Session):
        task.mark_created("outbox")
        return
    if not session.info.get(_LISTENING):
        session.info[_LISTENING] = True
        event.listen(session, "after_commit", _report_committed)
        event.listen(session, "after_rollback", _forget_rolled_back)
    session.info.setdefault(_COMMITTED_TASKS, []).append(task)


def _report_committed(session: Session) -> None:
    for task in session.info.pop(_COMMITTED_TASKS, ()):
        task.mark_created("outbox")


def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_COMMITTED_TASKS, None)


def _check_transaction(in_transaction: bool) -> None:
    if not in_transaction:
        raise TaskArgumentError(
            "outbox .delay() outside a transaction: the row would be committed by nobody, or by whatever commits "
            "next, not with your work. Call it inside `with session.begin():` (`async with session.begin():`), "
            "or depend on outbox_session(...) in the endpoint",
            param="sink",
        )


def _sync_connection(session: Session | Connection) -> Connection:
    if isinstance(session, Connection):
        return session
    # Inside a transaction this is the connection the INSERT will use; it only opens one if none is open yet.
    return session.connection(bind_arguments={"clause": insert_statement()})


def _check_autocommit(bind: Connection | Engine | None) -> None:
    if bind is not None and _is_autocommit(bind):
        raise TaskArgumentError(
            "outbox .delay() on an AUTOCOMMIT connection: its row would be committed at once, even if your "
            "transaction rolls back. Write to the outbox through an engine or connection without "
            'isolation_level="AUTOCOMMIT"',
            param="sink",
        )


def _is_autocommit(bind: Connection | Engine) -> bool:
    level = bind.get_execution_options().get("isolation_level")
    if level is not None:
        return bool(level == "AUTOCOMMIT")
    # `create_engine(..., isolation_level="AUTOCOMMIT")` is applied on connect and recorded on the dialect only;
    # reading it costs no round trip, unlike Connection.get_isolation_level().
    return bool(getattr(bind.dialect, "_on_connect_isolation_level", None) == "AUTOCOMMIT")


def _insert(session: Session | Connection, values: dict[str, Any]) -> None:
    try:
        session.execute(insert_statement(), values)
    except DBAPIError as exc:
        if is_missing_schema(exc):
            raise schema_error(exc) from exc
        raise


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
) -> Callable[..., Any]:
    """A FastAPI dependency: a session in a transaction that commits after the endpoint, before the response.

    While the endpoint runs, every `.delay()` writes its task to this transaction (through `use_outbox`), so the
    tasks exist if and only if the endpoint's database work commits. An exception in the endpoint rolls both
    back; a commit that fails (a unique violation, a lost connection) raises before the response has started,
    so the client gets a 5xx rather than a 200 for a task that will never exist.

    ```python
    Db = Annotated[Session, Depends(outbox_session(SessionLocal))]

    @app.post("/orders")
    def create_order(order: Order, db: Db) -> None:
        db.add(order_row(order))
        send_receipt.delay(order_id=order.id)
    ```

    Raises `OutboxError` on FastAPI 0.118 to 0.120, where no dependency can act between the endpoint and the
    response: upgrade FastAPI, or open the transaction in the endpoint (`with session.begin(), use_outbox(session):`).
    """
    types = _async_types()
    transaction: Callable[[], AsyncIterator[Any]]
    if types is not None and isinstance(factory, types[2]):
        transaction = _async_transaction(factory)
    else:
        transaction = _sync_transaction(factory)  # type: ignore[arg-type]
    return _before_response(transaction)


def _async_transaction(factory: async_sessionmaker[AsyncSession]) -> Callable[[], AsyncIterator[AsyncSession]]:
    async def outbox_transaction() -> AsyncIterator[AsyncSession]:
        async with factory() as session:
            await session.begin()
            try:
                with use_outbox(session):
                    yield session
                await session.commit()
            except DBAPIError as exc:
                await session.rollback()
                if is_missing_schema(exc):
                    raise schema_error(exc) from exc
                raise
            except BaseException:
                await session.rollback()
                raise

    return outbox_transaction


def _sync_transaction(factory: sessionmaker[Session]) -> Callable[[], AsyncIterator[Session]]:
    # An async dependency so that the context it sets reaches the endpoint; blocking calls go to a thread.
    async def outbox_transaction() -> AsyncIterator[Session]:
        session = factory()
        try:
            session.begin()  # no I/O: the connection is taken by the first statement
            with use_outbox(session):
                yield session
            await run_in_threadpool(session.commit)
        except DBAPIError as exc:
            await run_in_threadpool(session.rollback)
            if is_missing_schema(exc):
                raise schema_error(exc) from exc
            raise
        except BaseException:
            await run_in_threadpool(session.rollback)
            raise
        finally:
            await run_in_threadpool(session.close)

    return outbox_transaction


def _fastapi_version() -> tuple[int, int]:
    major, minor = fastapi.__version__.split(".")[:2]
    return int(major), int(minor)


def _before_response(transaction: Callable[[], AsyncIterator[Any]]) -> Callable[..., Any]:
    """`transaction` as a dependency whose exit code (the commit) runs before the response is sent."""
    if "scope" in inspect.signature(fastapi.Depends).parameters:
        # FastAPI >= 0.121: a function-scoped `yield` dependency exits right after the endpoint and the
        # serialization of its result, inside the request's error handling and before the response starts.
        # A plain dependency may depend on one, so users keep writing `Depends(outbox_session(...))`.
        async def outbox_session_dependency(session: Any = fastapi.Depends(transaction, scope="function")) -> Any:
            return session

        return outbox_session_dependency
    if _fastapi_version() < (0, 118):
        # FastAPI < 0.118 exits every `yield` dependency before it sends the response.
        return transaction
    raise OutboxError(
        f"outbox_session() cannot commit before the response on FastAPI {fastapi.__version__}: from 0.118 to "
        "0.120 a `yield` dependency exits after the response is sent, so a failed commit would still answer 200. "
        "Upgrade FastAPI to 0.121 or newer, or commit in the endpoint: "
        "`with SessionLocal() as session, session.begin(), use_outbox(session): ...`"
    )
