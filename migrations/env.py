"""Alembic environment of the outbox and task history schema (one chain: 0001 outbox, 0002 history).

Run it through `fastapi-gcp-tasks outbox migrate` or `fastapi-gcp-tasks history migrate`.

It keeps its own version table, so it never touches an application's alembic history.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from fastapi_gcp_tasks.outbox._migrate import VERSION_TABLE
from fastapi_gcp_tasks.outbox._schema import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the outbox migrations with `fastapi-gcp-tasks outbox migrate` or outbox.migrate()")
_run(connection)
