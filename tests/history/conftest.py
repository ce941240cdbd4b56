"""A migrated database per test module and backend (SQLite, PostgreSQL, MariaDB) for the history tests.

The servers are chosen in tests/_databases.py; one that does not answer skips its tests locally and fails them in
CI. A module may set `HISTORY_BACKENDS` to a subset of ("sqlite", "postgres", "mariadb").
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import URL, Engine, create_engine, delete, make_url, text
from sqlalchemy.exc import OperationalError

from fastapi_gcp_tasks.history import TaskHistory, migrate
from fastapi_gcp_tasks.history._schema import history_tables
from tests._databases import server_url

ALL_BACKENDS = ("sqlite", "postgres", "mariadb")
_MARKS = {"postgres": [pytest.mark.postgres], "mariadb": [pytest.mark.mariadb], "sqlite": []}


@dataclass
class HistoryDb:
    """A migrated database of its own and an engine on it."""

    backend: str
    url: str
    engine: Engine

    def clean(self) -> None:
        with self.engine.begin() as conn:
            for table in history_tables():
                conn.execute(delete(table))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        backends = getattr(metafunc.module, "HISTORY_BACKENDS", ALL_BACKENDS)
        metafunc.parametrize("backend", [pytest.param(b, marks=_MARKS[b], id=b) for b in backends], scope="module")


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _admin(url: URL, statements: list[str]) -> None:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    except OperationalError as exc:
        _unavailable(f"{url.render_as_string()} is unreachable: {exc.orig}")
    finally:
        admin.dispose()


def _recreate(url: URL, name: str, *, create: bool) -> list[str]:
    if url.get_backend_name() == "postgresql":
        return [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'] + ([f'CREATE DATABASE "{name}"'] if create else [])
    return [f"DROP DATABASE IF EXISTS `{name}`"] + ([f"CREATE DATABASE `{name}`"] if create else [])


@pytest.fixture(scope="module")
def history_db(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HistoryDb]:
    module = re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])
    name = f"fgt_{module}"[:50] + f"_{os.getpid()}"
    server: URL | None = None
    if backend == "sqlite":
        url = f"sqlite:///{Path(tmp_path_factory.mktemp(name)) / 'history.db'}"
    else:
        choice = server_url(backend)
        if choice.url is None:
            _unavailable(choice.message)
        server = make_url(str(choice.url))
        _admin(server, _recreate(server, name, create=True))
        url = server.set(database=name).render_as_string(hide_password=False)
    migrate(url)
    engine = create_engine(url)
    try:
        yield HistoryDb(backend, url, engine)
    finally:
        engine.dispose()
        if server is not None:
            _admin(server, _recreate(server, name, create=False))


@pytest.fixture
def db(history_db: HistoryDb) -> HistoryDb:
    """The module's database, emptied before the test."""
    history_db.clean()
    return history_db


@pytest.fixture
def task_history(db: HistoryDb) -> Iterator[TaskHistory]:
    """A history on the module's database that writes every few milliseconds and never prunes by itself."""
    with TaskHistory(db.url, flush_interval=0.01, retention=None) as recorder:
        yield recorder
