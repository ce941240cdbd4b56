"""Create the outbox and dead-letter tables (and, on PostgreSQL, the NOTIFY trigger).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OUTBOX = "fastapi_gcp_tasks_outbox"
DEAD = "fastapi_gcp_tasks_outbox_dead"
CHANNEL = "fastapi_gcp_tasks_outbox"

timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        OUTBOX,
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("queue_path", sa.String(300), nullable=False),
        sa.Column("task_name", sa.String(900), nullable=False),
        sa.Column("request", blob, nullable=False, comment="CreateTaskRequest.serialize(request)"),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("available_at", timestamp, nullable=False, comment="not before; a claim moves it to lease expiry"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lease_token", sa.String(32), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", timestamp, nullable=True, comment="set only when delivered rows are retained"),
        postgresql_with={
            "fillfactor": "80",
            "autovacuum_vacuum_scale_factor": "0.01",
            "autovacuum_vacuum_threshold": "1000",
            "autovacuum_analyze_scale_factor": "0.02",
            "autovacuum_vacuum_cost_delay": "0",
        },
    )
    op.create_index(f"ix_{OUTBOX}_ready", OUTBOX, ["delivered_at", "available_at"])
    op.create_table(
        DEAD,
        sa.Column("id", big_id, primary_key=True, autoincrement=False),
        sa.Column("queue_path", sa.String(300), nullable=False),
        sa.Column("task_name", sa.String(900), nullable=False),
        sa.Column("request", blob, nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("dead_at", timestamp, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {OUTBOX}_notify() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {OUTBOX}_notify AFTER INSERT ON {OUTBOX} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {OUTBOX}_notify()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {OUTBOX}_notify ON {OUTBOX}")
        op.execute(f"DROP FUNCTION IF EXISTS {OUTBOX}_notify()")
    op.drop_table(DEAD)
    op.drop_index(f"ix_{OUTBOX}_ready", table_name=OUTBOX)
    op.drop_table(OUTBOX)
