"""The exactly-once record of side-effecting skill calls.

Before a side-effecting skill runs, a row keyed by (task, node, attempt) is committed with
status ``started``; after it returns, the row becomes ``finished`` with the outcome. A
resumed run that meets a ``finished`` row reuses the recorded outcome instead of calling
again; one that meets a ``started`` row (the process died during the call) does not call
again either: the outcome is unknown, so the row becomes ``unknown`` and the node fails
with that recorded, letting the planner decide. A side-effecting call that times out is
``unknown`` the same way (a sync skill's thread cannot be stopped and may still act).

An app that talks to outside systems can settle an unknown outcome: every call carries a
stable idempotency key (``SkillContext.idempotency_key``, the row's ``call_key``), and an
:data:`EffectCheck` given as ``Agent(effect_check=...)`` is asked "did this key act?"
before the planner decides: True records the call as done, False as failed without effect
(safe to run again), None leaves it unknown.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, Literal, cast

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Insert,
    Integer,
    String,
    Table,
    Update,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from trellis.memory import Base

__all__ = ["CallRecord", "EffectCheck", "SkillCallLog", "SkillCallRow"]

CallStatus = Literal["started", "finished", "unknown"]

EffectCheck = Callable[[str, str, dict[str, Any]], "bool | Awaitable[bool | None] | None"]
"""``check(idempotency_key, skill, args)``: did the call with this key act? True, False,
or None when the app cannot tell (sync or async)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SkillCallRow(Base):
    """One side-effecting skill call (table ``agent_skill_calls``)."""

    __tablename__ = "agent_skill_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    node_id: Mapped[int] = mapped_column(Integer)
    call_key: Mapped[str] = mapped_column(String(200), unique=True)
    skill: Mapped[str] = mapped_column(String(64))
    args: Mapped[Any] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[Any] = mapped_column(JSON, nullable=True)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CallRecord:
    """An immutable view of a row."""

    __slots__ = ("args", "call_key", "node_id", "outcome", "skill", "status", "task_id")

    def __init__(self, row: Any) -> None:
        self.task_id: str = row.task_id
        self.node_id: int = row.node_id
        self.call_key: str = row.call_key
        self.skill: str = row.skill
        self.args: Any = row.args
        self.status: str = row.status
        self.outcome: Any = row.outcome


_TABLE: Table = cast(Table, SkillCallRow.__table__)


class SkillCallLog:
    """Reads and writes the exactly-once records on the Trellis database (SQLAlchemy Core:
    two small writes per side-effecting call, each committed with the node's status change
    where the loop can)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.effect_check: EffectCheck | None = None
        """Asked about a call whose outcome is unknown (set by ``Agent(effect_check=...)``)."""

    def get(self, call_key: str) -> CallRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_TABLE).where(_TABLE.c.call_key == call_key)).first()
            return CallRecord(row) if row is not None else None

    def start(
        self, *, task_id: str, node_id: int, call_key: str, skill: str, args: Any
    ) -> CallRecord | None:
        """Commit a ``started`` row; returns the existing record instead when there is one."""
        statement = self.start_statement(
            task_id=task_id, node_id=node_id, call_key=call_key, skill=skill, args=args
        )
        try:
            with self._engine.begin() as conn:
                conn.execute(statement)
        except IntegrityError:
            return self.get(call_key)
        return None

    @staticmethod
    def start_statement(
        *, task_id: str, node_id: int, call_key: str, skill: str, args: Any
    ) -> Insert:
        """The insert :meth:`start` runs, for a caller that commits it with its own writes
        (the loop: with the node's move to ``running``). A duplicate key fails that whole
        transaction with IntegrityError."""
        return insert(_TABLE).values(
            task_id=task_id,
            node_id=node_id,
            call_key=call_key,
            skill=skill,
            args=args,
            status="started",
            started_at=_now(),
        )

    def finish(self, call_key: str, outcome: Any, *, status: CallStatus = "finished") -> None:
        """Record the outcome of a started call."""
        with self._engine.begin() as conn:
            conn.execute(self.finish_statement(call_key, outcome, status=status))

    @staticmethod
    def finish_statement(call_key: str, outcome: Any, *, status: CallStatus = "finished") -> Update:
        """The statement :meth:`finish` runs, for a caller that commits it together with
        its own writes (the loop: with the node's status change)."""
        return (
            update(_TABLE)
            .where(_TABLE.c.call_key == call_key)
            .values(status=status, outcome=outcome, finished_at=_now())
        )

    def calls(self, task_id: str, *, skill_prefix: str = "") -> list[CallRecord]:
        """Every record of a task in call order (optionally only skills starting with a prefix)."""
        query = select(_TABLE).where(_TABLE.c.task_id == task_id)
        if skill_prefix:
            query = query.where(_TABLE.c.skill.startswith(skill_prefix))
        with self._engine.connect() as conn:
            return [CallRecord(r) for r in conn.execute(query.order_by(_TABLE.c.id))]
