"""ORM tables of the planners package: reminder cues per user, and indexed past successes.

The migrations ``planners_0001`` and ``planners_0002`` create them (branch ``planners``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from trellis.memory import Base

__all__ = ["CaseRow", "CaseUseRow", "CueRow"]

JsonType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class CueRow(Base):
    """One cue. A later conflicting cue sets ``superseded_by`` here; nothing is deleted."""

    __tablename__ = "planner_cues"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(200))
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    polarity: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(100))
    subject_key: Mapped[str] = mapped_column(String(100))
    action: Mapped[str | None] = mapped_column(String(40), nullable=True)
    trigger: Mapped[str | None] = mapped_column(String(100), nullable=True)
    cue_order: Mapped[str] = mapped_column(String(8))
    scope: Mapped[str] = mapped_column(String(8))
    priority: Mapped[int] = mapped_column(Integer)
    constraint_text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    superseded_by: Mapped[int | None] = mapped_column(
        ForeignKey("planner_cues.id", ondelete="SET NULL"), nullable=True
    )
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_planner_cues_user_subject", "user_id", "subject_key"),)


class CaseRow(Base):
    """One completed task kept as a few-shot example, with its running value."""

    __tablename__ = "planner_cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    goal: Mapped[str] = mapped_column(Text)
    cues: Mapped[Any] = mapped_column(JsonType)
    plan: Mapped[Any] = mapped_column(JsonType)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    dim: Mapped[int] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    uses: Mapped[int] = mapped_column(Integer)
    successes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CaseUseRow(Base):
    """The past cases one task's planning was shown; settled once, when the task ends."""

    __tablename__ = "planner_case_uses"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200))
    case_ids: Mapped[Any] = mapped_column(JsonType)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
