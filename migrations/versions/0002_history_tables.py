"""Create the task history tables (tasks, attempts) and the dead-letter store.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TASKS = "fastapi_gcp_tasks_history_tasks"
ATTEMPTS = "fastapi_gcp_tasks_history_attempts"
LETTERS = "fastapi_gcp_tasks_dead_letters"
NAME = 700

timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
long_text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        TASKS,
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("task_name", sa.String(NAME), nullable=False),
        sa.Column("task_id", sa.String(NAME), nullable=False, comment="the last segment of task_name"),
        sa.Column("queue_name", sa.String(100), nullable=True),
        sa.Column("endpoint", sa.String(500), nullable=False),
        sa.Column("method", sa.String(10), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("arguments", long_text, nullable=True, comment="JSON, redacted before it was recorded"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_attempt_at", timestamp, nullable=True),
        sa.Column("created_at", timestamp, nullable=True),
        sa.Column("eta", timestamp, nullable=True),
        sa.Column("dispatch_mode", sa.String(16), nullable=True),
        sa.Column("seen_at", timestamp, nullable=False, comment="time of the first event; the list order"),
        sa.Column("updated_at", timestamp, nullable=False, comment="database time of the last write; retention"),
    )
    op.create_index(f"ux_{TASKS}_name", TASKS, ["task_name"], unique=True)
    op.create_index(f"ix_{TASKS}_task_id", TASKS, ["task_id"])
    op.create_index(f"ix_{TASKS}_seen", TASKS, ["seen_at", "id"])
    op.create_index(f"ix_{TASKS}_endpoint", TASKS, ["endpoint", "seen_at", "id"])
    op.create_index(f"ix_{TASKS}_status", TASKS, ["status", "seen_at", "id"])
    op.create_index(f"ix_{TASKS}_queue", TASKS, ["queue_name", "seen_at", "id"])
    op.create_index(f"ix_{TASKS}_updated", TASKS, ["updated_at"])
    op.create_table(
        ATTEMPTS,
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("task_name", sa.String(NAME), nullable=False),
        sa.Column("endpoint", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, comment="the task status this attempt led to"),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("execution_count", sa.Integer(), nullable=False),
        sa.Column("started_at", timestamp, nullable=False),
        sa.Column("duration", sa.Float(), nullable=False, comment="seconds"),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_type", sa.String(200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("trace_id", sa.String(64), nullable=True),
        sa.Column("job_name", sa.String(NAME), nullable=True),
    )
    op.create_index(f"ix_{ATTEMPTS}_task", ATTEMPTS, ["task_name", "started_at"])
    op.create_index(f"ix_{ATTEMPTS}_started", ATTEMPTS, ["started_at", "endpoint", "status"])
    op.create_index(f"ix_{ATTEMPTS}_endpoint", ATTEMPTS, ["endpoint", "started_at"])
    op.create_table(
        LETTERS,
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("letter_key", sa.String(NAME), nullable=True, comment="DeadLetter.key; one row per task"),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("task_name", sa.String(NAME), nullable=True),
        sa.Column("queue_name", sa.String(100), nullable=True),
        sa.Column("endpoint", sa.String(500), nullable=False, comment="the request path as received"),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("body", blob, nullable=False),
        sa.Column("headers", sa.Text(), nullable=False, comment="JSON object, credentials already redacted"),
        sa.Column("errors", long_text, nullable=False, comment="JSON list"),
        sa.Column("received_at", timestamp, nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("replayed_as", sa.String(NAME), nullable=True),
        sa.Column("updated_at", timestamp, nullable=False),
    )
    op.create_index(f"ux_{LETTERS}_key", LETTERS, ["letter_key"], unique=True)
    op.create_index(f"ix_{LETTERS}_status", LETTERS, ["status", "id"])
    op.create_index(f"ix_{LETTERS}_endpoint", LETTERS, ["endpoint", "id"])
    op.create_index(f"ix_{LETTERS}_reason", LETTERS, ["reason", "id"])


def downgrade() -> None:
    op.drop_table(LETTERS)
    op.drop_table(ATTEMPTS)
    op.drop_table(TASKS)
