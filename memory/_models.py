"""ORM tables of the Task Memory Tree: tasks, nodes, dependency edges and node events.

The store reads and writes these through SQLAlchemy Core (batched inserts, explicit
``UPDATE ... WHERE version = :v``); the mapped classes exist so that the tables live on
:class:`memory.Base` with the rest of the schema. The migration ``memory_0001`` creates them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from trellis.memory._db import Base

__all__ = ["EdgeRow", "EventRow", "JsonType", "NodeRow", "TaskRow"]

# JSONB on PostgreSQL (indexable, compact); JSON text elsewhere. SQL NULL for Python None.
JsonType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

KEY_LENGTH = 200
NAME_LENGTH = 200


class TaskRow(Base):
    """One task: a goal and the root of its node tree."""

    __tablename__ = "tmt_tasks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    goal: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    status: Mapped[str] = mapped_column(String(16))
    meta: Mapped[Any] = mapped_column("metadata", JsonType, nullable=True)
    root_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_tmt_tasks_created_at", "created_at"),)


class NodeRow(Base):
    """One step of a task. ``superseded`` marks nodes replaced by replanning (kept as history)."""

    __tablename__ = "tmt_nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tmt_tasks.id", ondelete="CASCADE"))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("tmt_nodes.id", ondelete="CASCADE"), nullable=True
    )
    key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    input: Mapped[Any] = mapped_column(JsonType, nullable=True)
    output: Mapped[Any] = mapped_column(JsonType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    adapter: Mapped[str | None] = mapped_column(String(NAME_LENGTH), nullable=True)
    route: Mapped[Any] = mapped_column(JsonType, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer)
    superseded: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    version: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        # The ready set starts from the task's running nodes; never a scan of the task.
        Index("ix_tmt_nodes_task_status", "task_id", "status"),
        Index("ix_tmt_nodes_parent_status", "parent_id", "status"),
        # Keys are the planner's step ids: unique among the live children of one parent.
        Index(
            "uq_tmt_nodes_parent_key_live",
            "parent_id",
            "key",
            unique=True,
            sqlite_where=text("NOT superseded"),
            postgresql_where=text("NOT superseded"),
        ),
    )


class EdgeRow(Base):
    """``node_id`` depends on ``depends_on_id`` (which may sit anywhere in the same task)."""

    __tablename__ = "tmt_edges"

    node_id: Mapped[int] = mapped_column(
        ForeignKey("tmt_nodes.id", ondelete="CASCADE"), primary_key=True
    )
    depends_on_id: Mapped[int] = mapped_column(
        ForeignKey("tmt_nodes.id", ondelete="CASCADE"), primary_key=True
    )
    task_id: Mapped[str] = mapped_column(ForeignKey("tmt_tasks.id", ondelete="CASCADE"))

    __table_args__ = (
        Index("ix_tmt_edges_depends_on", "depends_on_id"),
        Index("ix_tmt_edges_task", "task_id"),
    )


class EventRow(Base):
    """Append-only history: one row per changed field (``created`` holds the first snapshot)."""

    __tablename__ = "tmt_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tmt_tasks.id", ondelete="CASCADE"))
    node_id: Mapped[int | None] = mapped_column(
        ForeignKey("tmt_nodes.id", ondelete="CASCADE"), nullable=True
    )
    field: Mapped[str] = mapped_column(String(32))
    old: Mapped[Any] = mapped_column(JsonType, nullable=True)
    new: Mapped[Any] = mapped_column(JsonType, nullable=True)
    cause: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_tmt_events_task_id", "task_id", "id"),
        Index("ix_tmt_events_node_id", "node_id", "id"),
    )
