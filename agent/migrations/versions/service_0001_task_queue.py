"""service: the task queue, its event log and per-user reminders

Revision ID: service_0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "service_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("service",)
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "service_tasks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("goal", sa.Text(), nullable=False),
        sa.Column("reminders", sa.JSON(), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires", TS, nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("decision", sa.JSON(), nullable=True),
        sa.Column("approval", sa.JSON(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_tasks")),
        sa.UniqueConstraint("user_id", "idempotency_key", name=op.f("uq_service_tasks_user_id")),
    )
    op.create_index("ix_service_tasks_claim", "service_tasks", ["state", "created_at"])
    op.create_index("ix_service_tasks_user", "service_tasks", ["user_id", "created_at"])
    op.create_table(
        "service_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_events")),
    )
    op.create_index("ix_service_events_task", "service_events", ["task_id", "id"])
    op.create_table(
        "service_reminders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_reminders")),
    )
    op.create_index("ix_service_reminders_user", "service_reminders", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_service_reminders_user", table_name="service_reminders")
    op.drop_table("service_reminders")
    op.drop_index("ix_service_events_task", table_name="service_events")
    op.drop_table("service_events")
    op.drop_index("ix_service_tasks_user", table_name="service_tasks")
    op.drop_index("ix_service_tasks_claim", table_name="service_tasks")
    op.drop_table("service_tasks")
