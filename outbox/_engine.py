"""The relay's own SQLAlchemy engine, tuned for short claim transactions on each database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url

__all__ = ["relay_engine", "sync_url"]

# The relay works with blocking drivers in worker threads; an application's async URL works too.
_SYNC_DRIVERS = {
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
    "mysql+aiomysql": "mysql+pymysql",
    "mysql+asyncmy": "mysql+pymysql",
    "mariadb+aiomysql": "mariadb+pymysql",
    "mariadb+asyncmy": "mariadb+pymysql",
    "sqlite+aiosqlite": "sqlite+pysqlite",
}


def sync_url(url: str | URL) -> URL:
    """`url` with an async driver replaced by its blocking counterpart."""
    parsed = make_url(url)
    return parsed.set(drivername=_SYNC_DRIVERS.get(parsed.drivername, parsed.drivername))


def relay_engine(url: str | URL, *, pool_size: int = 5, **kwargs: Any) -> Engine:
    """An engine for the relay and the `outbox` commands.

    Connections are checked before use, so a restarted database or a cut connection costs one failed attempt.
    MySQL and MariaDB run at READ COMMITTED, so claims lock only the rows they take, not the gaps between them.
    SQLite begins every transaction with `BEGIN IMMEDIATE`, so one writer at a time takes rows.
    """
    parsed = sync_url(url)
    options: dict[str, Any] = {"pool_pre_ping": True, **kwargs}
    backend = parsed.get_backend_name()
    if backend in {"mysql", "mariadb"}:
        options.setdefault("isolation_level", "READ COMMITTED")
    if backend == "sqlite":
        engine = create_engine(parsed, **options)
        _begin_immediate(engine)
        return engine
    options.setdefault("pool_size", pool_size)
    options.setdefault("max_overflow", 2)
    return create_engine(parsed, **options)


def _begin_immediate(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
