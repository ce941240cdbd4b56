"""Real databases and a real emulator for the outbox tests: one fresh database per test module and backend.

The servers are chosen in tests/_databases.py (FASTAPI_GCP_TASKS_TEST_POSTGRES_URL / _MYSQL_URL, else the local
servers, else containers when Docker answers). A server that does not answer skips its tests locally and fails them
in CI.
A module may set `OUTBOX_BACKENDS` to a subset of ("postgres", "mariadb", "sqlite"), and a test that
applies to some backends only says which with `@pytest.mark.backends("postgres")`, so that it is not run,
and passed, on the others.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import URL, Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from fastapi_gcp_tasks import AsyncDelayedRouteBuilder, DelayedRouteBuilder, async_emulator_client, emulator_client
from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.outbox import OutboxStore, migrate, outbox_sink
from fastapi_gcp_tasks.outbox._engine import relay_engine
from tests._databases import server_url
from tests.outbox.support import QUEUE, OutboxDb, World

ALL_BACKENDS = ("postgres", "mariadb", "sqlite")
_MARKS = {"postgres": [pytest.mark.postgres], "mariadb": [pytest.mark.mariadb], "sqlite": []}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*names): run this outbox test only on these database backends")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("backends")
        backends = only.args if only is not None else getattr(metafunc.module, "OUTBOX_BACKENDS", ALL_BACKENDS)
        assert set(backends) <= set(ALL_BACKENDS), f"unknown backends {backends}"
        metafunc.parametrize("backend", [pytest.param(b, marks=_MARKS[b], id=b) for b in backends], scope="module")


def unavailable(message: str) -> None:
    """Skip locally, fail in CI: a missing database must never pass silently there."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _server_database(base: str, name: str) -> tuple[URL, Engine]:
    url = make_url(base)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if url.get_backend_name() == "postgresql":
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
                conn.execute(text(f"CREATE DATABASE `{name}`"))
    except OperationalError as exc:
        admin.dispose()
        unavailable(f"{url.render_as_string()} is unreachable: {exc.orig}")
    return url.set(database=name), admin


def _drop(admin: Engine, backend: str, name: str) -> None:
    with admin.connect() as conn:
        if backend == "postgres":
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture(scope="module")
def outbox_db(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OutboxDb]:
    module = re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])
    name = f"fgt_{module}"[:50] + f"_{os.getpid()}"  # several runs at once never share a database
    admin: Engine | None = None
    if backend == "sqlite":
        url: URL | str = f"sqlite:///{Path(tmp_path_factory.mktemp(name)) / 'outbox.db'}"
    else:
        server = server_url(backend)  # the environment's URL, the local server or a container: tests/_databases.py
        if server.url is None:
            unavailable(server.message)
        url, admin = _server_database(str(server.url), name)
    url_text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    migrate(url_text)
    engine = relay_engine(url_text)
    try:
        yield OutboxDb(backend, url_text, engine, OutboxStore(engine))
    finally:
        engine.dispose()
        if admin is not None:
            _drop(admin, backend, name)


@pytest.fixture
def db(outbox_db: OutboxDb) -> OutboxDb:
    """The module's database, emptied before the test."""
    outbox_db.clean()
    return outbox_db


@pytest.fixture
def world() -> Iterator[World]:
    holder: dict[str, FastAPI] = {}

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    with Emulator(deliver_to=asgi, queues=[QUEUE]) as emulator:
        address = emulator.address
        common: dict[str, Any] = {"queue_path": QUEUE, "callback_base_url": "http://testserver"}
        outboxed = APIRouter(
            route_class=DelayedRouteBuilder(client=lambda: emulator_client(host=address), sink=outbox_sink(), **common)
        )
        outboxed_async = APIRouter(
            route_class=AsyncDelayedRouteBuilder(
                client=lambda: async_emulator_client(host=address), sink=outbox_sink(), **common
            )
        )
        direct = APIRouter(route_class=DelayedRouteBuilder(client=lambda: emulator_client(host=address), **common))
        received: list[str] = []

        @outboxed.post("/hello")
        def hello(name: str) -> None:
            received.append(name)

        @outboxed_async.post("/hello-async")
        async def hello_async(name: str) -> None:
            received.append(name)

        @direct.post("/direct")
        def direct_hello(name: str) -> None:
            received.append(name)

        app = FastAPI()
        for router in (outboxed, outboxed_async, direct):
            app.include_router(router)
        holder["app"] = app
        yield World(emulator, hello, hello_async, direct_hello, received)
