"""Misuse of the outbox is refused at the `.delay()` call, with an error that says what to do.

A row written outside a live transaction is committed by nobody (or by whoever commits next); a row written on an
AUTOCOMMIT connection is committed even when the caller rolls back; a database that was never migrated would
answer "relation does not exist". None of these may pass silently.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from fastapi_gcp_tasks.exception import TaskArgumentError
from fastapi_gcp_tasks.outbox import (
    OutboxSchemaError,
    OutboxSink,
    migrate,
    outbox_session,
    outbox_sink,
    require_schema,
    use_outbox,
)
from tests.outbox.support import OutboxDb, prepared

_ASYNC_DRIVERS = {"postgres": "postgresql+asyncpg", "mariadb": "mysql+asyncmy", "sqlite": "sqlite+aiosqlite"}


@pytest.fixture
def engine(db: OutboxDb) -> Iterator[Engine]:
    engine = create_engine(db.url)
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(db: OutboxDb) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(make_url(db.url).set(drivername=_ASYNC_DRIVERS[db.backend]))
    yield engine
    await engine.dispose()


def refused(info: pytest.ExceptionInfo[TaskArgumentError], what: str) -> None:
    assert info.value.param == "sink"
    assert what in str(info.value)


def test_a_session_whose_transaction_has_ended_is_refused(db: OutboxDb, engine: Engine) -> None:
    with Session(engine) as session:
        with session.begin():
            pass
        with pytest.raises(TaskArgumentError) as info:
            outbox_sink(session).submit(prepared())
        refused(info, "session.begin()")
        with use_outbox(session), pytest.raises(TaskArgumentError):
            outbox_sink().submit(prepared())
        session.commit()
    assert db.count() == 0


def test_a_connection_outside_a_transaction_is_refused(db: OutboxDb, engine: Engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(TaskArgumentError) as info:
            OutboxSink(conn).submit(prepared())
        refused(info, "outside a transaction")
        conn.commit()
    assert db.count() == 0


async def test_async_sessions_and_connections_outside_a_transaction_are_refused(
    db: OutboxDb, async_engine: AsyncEngine
) -> None:
    async with AsyncSession(async_engine) as session:
        async with session.begin():
            pass
        with pytest.raises(TaskArgumentError):
            await OutboxSink(session).submit_async(prepared())
        with pytest.raises(TaskArgumentError):
            OutboxSink(session).submit(prepared())  # a sync builder, whose row would wait for a flush
        await session.commit()
    async with async_engine.connect() as conn:
        with pytest.raises(TaskArgumentError):
            await OutboxSink(conn).submit_async(prepared())
        await conn.commit()
    assert db.count() == 0


def test_an_autocommit_engine_or_connection_is_refused(db: OutboxDb) -> None:
    autocommit = create_engine(db.url, isolation_level="AUTOCOMMIT")
    try:
        with Session(autocommit) as session, session.begin():
            with pytest.raises(TaskArgumentError) as info:
                OutboxSink(session).submit(prepared())
            refused(info, "AUTOCOMMIT")
    finally:
        autocommit.dispose()
    plain = create_engine(db.url)
    try:
        with plain.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            with conn.begin(), pytest.raises(TaskArgumentError):
                OutboxSink(conn).submit(prepared())
    finally:
        plain.dispose()
    assert db.count() == 0


async def test_an_autocommit_async_engine_is_refused(db: OutboxDb) -> None:
    url = make_url(db.url).set(drivername=_ASYNC_DRIVERS[db.backend])
    autocommit = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with AsyncSession(autocommit) as session, session.begin():
            with pytest.raises(TaskArgumentError, match="AUTOCOMMIT"):
                await OutboxSink(session).submit_async(prepared())
            with pytest.raises(TaskArgumentError, match="AUTOCOMMIT"):
                OutboxSink(session).submit(prepared())
        async with autocommit.connect() as conn, conn.begin():
            with pytest.raises(TaskArgumentError, match="AUTOCOMMIT"):
                await OutboxSink(conn).submit_async(prepared())
    finally:
        await autocommit.dispose()
    assert db.count() == 0


@pytest.fixture
def unmigrated(db: OutboxDb) -> Iterator[OutboxDb]:
    """The module's database without the outbox tables, migrated again afterwards for the next test."""
    migrate(db.url, "base")
    try:
        yield db
    finally:
        migrate(db.url)


def test_a_missing_schema_names_the_migrate_command(unmigrated: OutboxDb, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        with pytest.raises(OutboxSchemaError, match="fastapi-gcp-tasks outbox migrate") as info:
            OutboxSink(session).submit(prepared())
        session.rollback()
    assert info.value.__cause__ is not None
    with pytest.raises(OutboxSchemaError, match="has no outbox schema"):
        require_schema(unmigrated.engine)


async def test_a_missing_schema_names_the_migrate_command_async(
    unmigrated: OutboxDb, async_engine: AsyncEngine
) -> None:
    async with AsyncSession(async_engine) as session, session.begin():
        with pytest.raises(OutboxSchemaError, match="fastapi-gcp-tasks outbox migrate"):
            await OutboxSink(session).submit_async(prepared())
        await session.rollback()


async def test_a_missing_schema_found_at_the_commit_of_outbox_session(
    unmigrated: OutboxDb, async_engine: AsyncEngine
) -> None:
    """A sync `.delay()` on an AsyncSession is flushed by the commit: the dependency names the fix there too."""
    app = FastAPI()

    @app.post("/")
    def endpoint(db: object = Depends(outbox_session(async_sessionmaker(async_engine)))) -> None:
        outbox_sink().submit(prepared())

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with pytest.raises(OutboxSchemaError, match="fastapi-gcp-tasks outbox migrate"):
            await client.post("/")


def test_the_migrated_schema_is_accepted(db: OutboxDb) -> None:
    require_schema(db.engine)


def test_the_checks_cost_no_sql(db: OutboxDb, engine: Engine) -> None:
    """The transaction and AUTOCOMMIT checks read SQLAlchemy's state: a `.delay()` is still one INSERT."""
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    with Session(engine) as session, session.begin():
        session.connection()  # the transaction's BEGIN, which the application's own work would cause anyway
        event.listen(engine, "before_cursor_execute", record)
        try:
            OutboxSink(session).submit(prepared())
            OutboxSink(session).submit(prepared())
        finally:
            event.remove(engine, "before_cursor_execute", record)
    assert [s.split()[0].upper() for s in statements] == ["INSERT", "INSERT"]
    assert db.count() == 2
