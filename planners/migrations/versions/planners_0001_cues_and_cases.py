"""Planners: reminder cues per user and indexed past successes.

Revision ID: planners_0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "planners_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("planners",)
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "planner_cues",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("polarity", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(100), nullable=False),
        sa.Column("subject_key", sa.String(100), nullable=False),
        sa.Column("action", sa.String(40), nullable=True),
        sa.Column("trigger", sa.String(100), nullable=True),
        sa.Column("cue_order", sa.String(8), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("constraint_text", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
        sa.Column("superseded_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["superseded_by"],
            ["planner_cues.id"],
            name="fk_planner_cues_superseded_by_planner_cues",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_planner_cues"),
    )
    op.create_index("ix_planner_cues_user_subject", "planner_cues", ["user_id", "subject_key"])

    op.create_table(
        "planner_cases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("goal", sa.Text(), nullable=False),
        sa.Column("cues", JSON, nullable=True),
        sa.Column("plan", JSON, nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_planner_cases"),
    )
    op.create_index("ix_planner_cases_user_id", "planner_cases", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_planner_cases_user_id", table_name="planner_cases")
    op.drop_table("planner_cases")
    op.drop_index("ix_planner_cues_user_subject", table_name="planner_cues")
    op.drop_table("planner_cues")
