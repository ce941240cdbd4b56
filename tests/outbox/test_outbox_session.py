"""`outbox_session()` commits after the endpoint and before the response, on every supported FastAPI.

A commit that fails must be the client's answer (a 5xx), not something that happens after a 200 naming a task
that will never exist. Each test drives a real app through ASGI and looks at the database, from a connection of
its own, at the moment the response starts.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import fastapi
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, Integer, MetaData, String, create_engine, func, make_url, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from fastapi_gcp_tasks import DelayedRouteBuilder, as_delayed_task
from fastapi_gcp_tasks.outbox import OutboxError, _writer, outbox_session, outbox_sink, outbox_table
from tests.outbox.support import QUEUE, OutboxDb

_ASYNC_DRIVERS = {"postgres": "postgresql+asyncpg", "mariadb": "mysql+asyncmy", "sqlite": "sqlite+aiosqlite"}


class Base(DeclarativeBase):
    metadata = MetaData()


class Order(Base):
    __tablename__ = "session_test_orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(40), unique=True)


def outbox_rows(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(outbox_table.c.task_name)))


def committed(engine: Engine) -> tuple[int, int]:
    """(orders, outbox rows) as another connection sees them: only what has been committed."""
    with engine.connect() as conn:
        orders = conn.execute(select(func.count()).select_from(Order.__table__)).scalar_one()
        rows = conn.execute(select(func.count()).select_from(outbox_table)).scalar_one()
    return int(orders), int(rows)


@pytest.fixture
def reader(db: OutboxDb) -> Iterator[Engine]:
    """The app's own tables, and a plain engine to look at them with (the relay's engine locks SQLite)."""
    engine = create_engine(db.url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(params=["sessionmaker", "async_sessionmaker"])
async def factory(request: pytest.FixtureRequest, db: OutboxDb, reader: Engine) -> AsyncIterator[Any]:
    if request.param == "sessionmaker":
        engine = create_engine(db.url)
        yield sessionmaker(engine)
        engine.dispose()
    else:
        async_engine: AsyncEngine = create_async_engine(make_url(db.url).set(drivername=_ASYNC_DRIVERS[db.backend]))
        yield async_sessionmaker(async_engine)
        await async_engine.dispose()


def make_app(
    dependency: Callable[..., Any], reader: Engine, seen: list[tuple[int, int]], *, conflict_handler: bool = False
) -> Any:
    """An app whose endpoints add an order and delay a task; `seen` gets what is committed at response start."""
    tasks = APIRouter(
        route_class=DelayedRouteBuilder(queue_path=QUEUE, callback_base_url="http://testserver", sink=outbox_sink())
    )

    @tasks.post("/tasks/receipt")
    @as_delayed_task
    def receipt(reference: str) -> None:
        """Never called here: the relay is not running."""

    app = FastAPI()
    app.include_router(tasks)
    if conflict_handler:

        @app.exception_handler(IntegrityError)
        async def conflict(_: Request, exc: IntegrityError) -> JSONResponse:
            return JSONResponse({"detail": "duplicate"}, status_code=409)

    session = Depends(dependency)

    @app.post("/sync")
    def sync_endpoint(reference: str, db: Any = session, fail: bool = False) -> dict[str, str]:
        db.add(Order(reference=reference))  # flushed by the commit: a duplicate fails there
        task = receipt.delay(reference=reference)
        if fail:
            raise HTTPException(409, "refused")
        return {"task": task.name}

    @app.post("/async")
    async def async_endpoint(reference: str, db: Any = session, fail: bool = False) -> dict[str, str]:
        db.add(Order(reference=reference))
        task = receipt.delay(reference=reference)
        if fail:
            raise HTTPException(409, "refused")
        return {"task": task.name}

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        async def watching_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                seen.append(committed(reader))
            await send(message)

        await app(scope, receive, watching_send)

    return asgi


async def post(app: Any, path: str, **params: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.post(path, params=params)


@pytest.mark.parametrize("path", ["/sync", "/async"])
async def test_a_good_request_is_committed_before_the_response_starts(
    db: OutboxDb, reader: Engine, factory: Any, path: str
) -> None:
    seen: list[tuple[int, int]] = []
    app = make_app(outbox_session(factory), reader, seen)
    response = await post(app, path, reference="A1")
    assert response.status_code == 200, response.text
    assert seen == [(1, 1)]  # the order and its task were committed when the status line went out
    assert outbox_rows(db.engine) == [response.json()["task"]]


@pytest.mark.parametrize("path", ["/sync", "/async"])
async def test_a_commit_that_fails_is_a_5xx_and_leaves_no_task(
    db: OutboxDb, reader: Engine, factory: Any, path: str
) -> None:
    seen: list[tuple[int, int]] = []
    app = make_app(outbox_session(factory), reader, seen)
    first = await post(app, path, reference="A1")
    assert first.status_code == 200, first.text
    duplicate = await post(app, path, reference="A1")  # a unique violation, raised by the commit itself
    assert duplicate.status_code == 500
    assert "task" not in duplicate.text
    assert seen == [(1, 1), (1, 1)]
    assert outbox_rows(db.engine) == [first.json()["task"]]


async def test_the_apps_exception_handlers_see_a_failed_commit(db: OutboxDb, reader: Engine, factory: Any) -> None:
    seen: list[tuple[int, int]] = []
    app = make_app(outbox_session(factory), reader, seen, conflict_handler=True)
    assert (await post(app, "/sync", reference="A1")).status_code == 200
    duplicate = await post(app, "/sync", reference="A1")
    assert (duplicate.status_code, duplicate.json()) == (409, {"detail": "duplicate"})
    assert len(outbox_rows(db.engine)) == 1


@pytest.mark.parametrize("path", ["/sync", "/async"])
async def test_an_endpoint_error_rolls_back_before_the_response(
    db: OutboxDb, reader: Engine, factory: Any, path: str
) -> None:
    seen: list[tuple[int, int]] = []
    app = make_app(outbox_session(factory), reader, seen)
    response = await post(app, path, reference="A1", fail=True)
    assert response.status_code == 409
    assert seen == [(0, 0)]
    assert outbox_rows(db.engine) == []


def test_fastapi_without_a_pre_response_exit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """FastAPI 0.118 to 0.120 exit `yield` dependencies after the response and have no `scope="function"`."""
    original = fastapi.Depends
    if "scope" in inspect.signature(original).parameters:

        def depends_without_scope(dependency: Any = None, *, use_cache: bool = True) -> Any:
            return original(dependency, use_cache=use_cache)

        monkeypatch.setattr(fastapi, "Depends", depends_without_scope)
    monkeypatch.setattr(_writer, "_fastapi_version", lambda: (0, 119))
    with pytest.raises(OutboxError, match=r"0\.121 or newer"):
        outbox_session(sessionmaker())
