"""Task Memory Tree: tasks, nodes, dependency edges and node events.

Revision ID: memory_0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "memory_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("memory",)
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tmt_tasks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("goal", sa.Text(), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metadata", JSON, nullable=True),
        sa.Column("root_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tmt_tasks"),
    )
    op.create_index("ix_tmt_tasks_user_id", "tmt_tasks", ["user_id"])
    op.create_index("ix_tmt_tasks_created_at", "tmt_tasks", ["created_at"])

    op.create_table(
        "tmt_nodes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", JSON, nullable=True),
        sa.Column("output", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("adapter", sa.String(200), nullable=True),
        sa.Column("route", JSON, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("superseded", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tmt_nodes"),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tmt_tasks.id"], name="fk_tmt_nodes_task_id_tmt_tasks", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["tmt_nodes.id"],
            name="fk_tmt_nodes_parent_id_tmt_nodes",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_tmt_nodes_task_status", "tmt_nodes", ["task_id", "status"])
    op.create_index("ix_tmt_nodes_parent_status", "tmt_nodes", ["parent_id", "status"])
    op.create_index(
        "uq_tmt_nodes_parent_key_live",
        "tmt_nodes",
        ["parent_id", "key"],
        unique=True,
        sqlite_where=sa.text("NOT superseded"),
        postgresql_where=sa.text("NOT superseded"),
    )

    op.create_table(
        "tmt_edges",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("depends_on_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "depends_on_id", name="pk_tmt_edges"),
        sa.ForeignKeyConstraint(
            ["node_id"], ["tmt_nodes.id"], name="fk_tmt_edges_node_id_tmt_nodes", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["depends_on_id"],
            ["tmt_nodes.id"],
            name="fk_tmt_edges_depends_on_id_tmt_nodes",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tmt_tasks.id"], name="fk_tmt_edges_task_id_tmt_tasks", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_tmt_edges_depends_on", "tmt_edges", ["depends_on_id"])
    op.create_index("ix_tmt_edges_task", "tmt_edges", ["task_id"])

    op.create_table(
        "tmt_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("field", sa.String(32), nullable=False),
        sa.Column("old", JSON, nullable=True),
        sa.Column("new", JSON, nullable=True),
        sa.Column("cause", sa.Text(), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tmt_events"),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tmt_tasks.id"],
            name="fk_tmt_events_task_id_tmt_tasks",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["tmt_nodes.id"],
            name="fk_tmt_events_node_id_tmt_nodes",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_tmt_events_task_id", "tmt_events", ["task_id", "id"])
    op.create_index("ix_tmt_events_node_id", "tmt_events", ["node_id", "id"])


def downgrade() -> None:
    op.drop_table("tmt_events")
    op.drop_table("tmt_edges")
    op.drop_table("tmt_nodes")
    op.drop_table("tmt_tasks")
