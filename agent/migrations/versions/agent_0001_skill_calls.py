"""agent: exactly-once records of side-effecting skill calls

Revision ID: agent_0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "agent_0001"
down_revision = None
branch_labels = ("agent",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_skill_calls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("call_key", sa.String(length=200), nullable=False),
        sa.Column("skill", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_skill_calls")),
        sa.UniqueConstraint("call_key", name=op.f("uq_agent_skill_calls_call_key")),
    )
    op.create_index(
        op.f("ix_agent_skill_calls_task_id"), "agent_skill_calls", ["task_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_agent_skill_calls_task_id"), table_name="agent_skill_calls")
    op.drop_table("agent_skill_calls")
