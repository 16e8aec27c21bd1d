"""Traces stored in the Trellis database (table ``agent_traces``), next to the tree.

A stored trace is the same JSON Lines text as a trace file, with a few columns pulled out
for listing (task, goal, outcome). :class:`TraceStore` saves the lines a
:class:`~agent._trace.MemoryTraceSink` collected and loads them back through the same reader
as files, so the same version checks apply.
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Boolean, DateTime, Engine, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from trellis.agent.traces._trace import EndEvent, Trace, parse_trace_lines
from trellis.memory import Base, make_sessionmaker
from trellis.memory.errors import NotFoundError

__all__ = ["StoredTrace", "TraceRow", "TraceStore"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TraceRow(Base):
    """One recorded run (table ``agent_traces``)."""

    __tablename__ = "agent_traces"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    goal: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(32))
    success: Mapped[bool] = mapped_column(Boolean)
    events: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class StoredTrace:
    """A listing entry (the content is loaded with :meth:`TraceStore.load`)."""

    __slots__ = ("created", "events", "goal", "id", "outcome", "success", "task_id")

    def __init__(self, row: TraceRow) -> None:
        self.id: str = row.id
        self.task_id: str = row.task_id
        self.goal: str = row.goal
        self.outcome: str = row.outcome
        self.success: bool = row.success
        self.events: int = row.events
        self.created: dt.datetime = row.created


class TraceStore:
    """Save, load and list traces in the Trellis database."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = make_sessionmaker(engine)

    def save(self, lines: list[str], *, trace_id: str | None = None) -> str:
        """Store a trace given as its JSONL lines (validated first); returns its id."""
        trace = parse_trace_lines(lines, source="the trace to store")
        end = trace.end
        start = trace.start
        row = TraceRow(
            id=trace_id or uuid.uuid4().hex,
            task_id=start.task_id,
            goal=start.goal,
            outcome=end.outcome if isinstance(end, EndEvent) else "unfinished",
            success=bool(end.success) if isinstance(end, EndEvent) else False,
            events=len(trace.events),
            content="".join(line + "\n" for line in lines),
        )
        with self._sessions.begin() as session:
            session.add(row)
        return row.id

    def load(self, trace_id: str) -> Trace:
        """The stored trace, parsed; :class:`NotFoundError` when there is none."""
        with self._sessions() as session:
            row = session.get(TraceRow, trace_id)
            if row is None:
                raise NotFoundError(
                    f"no stored trace {trace_id!r}; list them with TraceStore.list()"
                )
            content = row.content
        return parse_trace_lines(content.splitlines(), source=f"stored trace {trace_id}")

    def list(self, *, task_id: str | None = None, limit: int = 100) -> list[StoredTrace]:
        """Stored traces, newest first."""
        with self._sessions() as session:
            query = select(TraceRow)
            if task_id is not None:
                query = query.where(TraceRow.task_id == task_id)
            rows = session.scalars(query.order_by(TraceRow.created.desc()).limit(limit)).all()
            return [StoredTrace(r) for r in rows]
