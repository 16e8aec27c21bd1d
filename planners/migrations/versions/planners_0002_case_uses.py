"""Planners: which past cases each task's planning used, settled once when the task ends.

Revision ID: planners_0002
Revises: planners_0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "planners_0002"
down_revision: str | Sequence[str] | None = "planners_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "planner_case_uses",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("case_ids", JSON, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("settled_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("task_id", name="pk_planner_case_uses"),
    )


def downgrade() -> None:
    op.drop_table("planner_case_uses")
