"""The writer: one row in the caller's transaction, committed with it or not at all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from google.cloud import tasks_v2
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from fastapi_gcp_tasks.build._naming import hashed_task_id, task_name
from fastapi_gcp_tasks.dispatch._sink import current_sink
from fastapi_gcp_tasks.exception import TaskArgumentError
from fastapi_gcp_tasks.outbox import OutboxSink, outbox_session, outbox_sink, outbox_table, use_outbox
from tests.outbox.support import QUEUE, OutboxDb, prepared

_ASYNC_DRIVERS = {"postgres": "postgresql+asyncpg", "mariadb": "mysql+asyncmy", "sqlite": "sqlite+aiosqlite"}


def rows(engine: Engine) -> list[tuple[str, str, bytes]]:
    with engine.connect() as conn:
        c = outbox_table.c
        return [(r[0], r[1], r[2]) for r in conn.execute(select(c.queue_path, c.task_name, c.request))]


@pytest.fixture
def async_engine(db: OutboxDb) -> AsyncEngine:
    url = db.engine.url.set(drivername=_ASYNC_DRIVERS[db.backend])
    return create_async_engine(url)


def test_rollback_leaves_no_row_commit_leaves_exactly_the_request(db: OutboxDb) -> None:
    task = prepared(body=b'{"n": 1}')
    with Session(db.engine) as session:
        session.begin()
        OutboxSink(session).submit(prepared())
        session.rollback()
    assert rows(db.engine) == []
    with Session(db.engine) as session, session.begin():
        placeholder = outbox_sink(session).submit(task)
    assert placeholder.name == task.name
    [(queue, name, request)] = rows(db.engine)
    assert (queue, name) == (QUEUE, task.name)
    assert tasks_v2.CreateTaskRequest.deserialize(request) == task.request


def test_a_user_task_id_keeps_its_direct_name(db: OutboxDb) -> None:
    key = hashed_task_id("order-42")
    with Session(db.engine) as session, session.begin():
        OutboxSink(session).submit(prepared(task_id=key))
    assert rows(db.engine)[0][1] == task_name(QUEUE, key)


def test_unnamed_task_gets_a_random_hashed_name(db: OutboxDb) -> None:
    task = prepared()
    task.request.task.name = ""
    with Session(db.engine) as session, session.begin():
        OutboxSink(session).submit(task)
    name = rows(db.engine)[0][1]
    assert name.startswith(QUEUE + "/tasks/")
    assert len(name.rsplit("/", 1)[1]) == 64


def test_core_connection(db: OutboxDb) -> None:
    with db.engine.connect() as conn:
        with conn.begin():
            OutboxSink(conn).submit(prepared())
        with conn.begin() as tx:
            OutboxSink(conn).submit(prepared())
            tx.rollback()
    assert len(rows(db.engine)) == 1


async def test_async_session_both_ways(db: OutboxDb, async_engine: AsyncEngine) -> None:
    try:
        async with AsyncSession(async_engine) as session:
            async with session.begin():
                await OutboxSink(session).submit_async(prepared())
                # a sync route builder used from async code: the row joins the transaction's flush
                OutboxSink(session).submit(prepared())
            async with session.begin():
                await OutboxSink(session).submit_async(prepared())
                OutboxSink(session).submit(prepared())
                await session.rollback()
    finally:
        await async_engine.dispose()
    assert len(rows(db.engine)) == 2


def test_session_from_context(db: OutboxDb) -> None:
    sink = outbox_sink()
    with pytest.raises(TaskArgumentError, match="no session") as info:
        sink.submit(prepared())
    assert info.value.param == "sink"
    with Session(db.engine) as session, session.begin():
        with use_outbox(session) as current:
            assert current_sink() is current
            sink.submit(prepared())
        assert current_sink() is None
    assert len(rows(db.engine)) == 1


def test_not_a_session() -> None:
    with pytest.raises(TaskArgumentError) as info:
        OutboxSink("postgresql://")  # type: ignore[arg-type]
    assert info.value.param == "session"


def _app(dependency: Callable[..., Any]) -> FastAPI:
    app = FastAPI()

    @app.post("/sync")
    def sync_endpoint(db: object = Depends(dependency), fail: bool = False) -> dict[str, bool]:
        sink = current_sink()
        assert isinstance(sink, OutboxSink)
        sink.submit(prepared())
        if fail:
            raise HTTPException(409)
        return {"ok": True}

    @app.post("/async")
    async def async_endpoint(db: object = Depends(dependency), fail: bool = False) -> dict[str, bool]:
        sink = current_sink()
        assert isinstance(sink, OutboxSink)
        if isinstance(db, AsyncSession):
            await sink.submit_async(prepared())
        else:
            sink.submit(prepared())
        if fail:
            raise HTTPException(409)
        return {"ok": True}

    return app


async def _post(app: FastAPI, path: str, *, fail: bool = False) -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.post(path, params={"fail": "true"} if fail else {})
    return response.status_code


async def test_request_dependency_with_a_sync_session(db: OutboxDb) -> None:
    app = _app(outbox_session(sessionmaker(db.engine)))
    assert await _post(app, "/sync") == 200
    assert await _post(app, "/async") == 200
    assert await _post(app, "/sync", fail=True) == 409
    assert await _post(app, "/async", fail=True) == 409
    assert len(rows(db.engine)) == 2


async def test_request_dependency_with_an_async_session(db: OutboxDb, async_engine: AsyncEngine) -> None:
    app = _app(outbox_session(async_sessionmaker(async_engine)))
    try:
        assert await _post(app, "/async") == 200
        assert await _post(app, "/async", fail=True) == 409
        assert await _post(app, "/sync") == 200
        assert await _post(app, "/sync", fail=True) == 409
    finally:
        await async_engine.dispose()
    assert len(rows(db.engine)) == 2
