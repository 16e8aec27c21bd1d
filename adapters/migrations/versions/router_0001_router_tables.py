"""router: embedding cache, fitted out-of-distribution thresholds, uncovered requests.

Revision ID: router_0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "router_0001"
down_revision = None
branch_labels = ("router",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "router_embeddings",
        sa.Column("embedder", sa.String(100), nullable=False),
        sa.Column("adapter", sa.String(200), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vectors", sa.LargeBinary(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("embedder", "adapter", "content_hash", name="pk_router_embeddings"),
    )
    op.create_table(
        "router_thresholds",
        sa.Column("embedder", sa.String(100), nullable=False),
        sa.Column("adapter", sa.String(200), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("examples", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("embedder", "adapter", name="pk_router_thresholds"),
    )
    op.create_table(
        "router_uncovered",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("nearest", sa.String(200), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("task_id", sa.String(100), nullable=True),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_router_uncovered"),
    )
    op.create_index("ix_router_uncovered_created", "router_uncovered", ["created"])


def downgrade() -> None:
    op.drop_index("ix_router_uncovered_created", table_name="router_uncovered")
    op.drop_table("router_uncovered")
    op.drop_table("router_thresholds")
    op.drop_table("router_embeddings")
