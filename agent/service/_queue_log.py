"""The service's event log (what SSE clients read) and each user's standing reminders.

Workers append a task's events to ``service_events`` in batches; any HTTP process streams
them by reading forward from the last id a client saw. A slow client therefore only slows
its own reads: a worker never waits for a reader, and nothing is buffered per client.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, DateTime, Engine, Index, Integer, String, Text, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from trellis.memory import Base, NotFoundError, make_sessionmaker
from trellis.memory.errors import UsageError

__all__ = ["EventLog", "EventRow", "LoggedEvent", "Reminder", "ReminderBook", "safe_payload"]

MAX_EVENT_TEXT = 4000
"""Longest text kept in a stored event (model answers can be huge; the tree keeps what
matters)."""
_SURROGATES = re.compile("[\ud800-\udfff]")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class EventRow(Base):
    """One event of a task (table ``service_events``)."""

    __tablename__ = "service_events"
    __table_args__ = (Index("ix_service_events_task", "task_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ReminderRow(Base):
    """One standing reminder of a user (table ``service_reminders``)."""

    __tablename__ = "service_reminders"
    __table_args__ = (Index("ix_service_reminders_user", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class LoggedEvent(BaseModel):
    """An event as stored: its position in the log and its JSON form."""

    model_config = ConfigDict(frozen=True)

    id: int
    """Position in the log (SSE event id; resume with ``Last-Event-ID``)."""
    task_id: str
    """The task."""
    type: str
    """The event type tag (``task_started``, ``skill_finished``, ...)."""
    payload: dict[str, Any]
    """The event's fields."""


class Reminder(BaseModel):
    """A standing reminder, applied to every task the user submits."""

    model_config = ConfigDict(frozen=True)

    id: int
    """Reminder id (delete it by this id)."""
    text: str
    """What the user wants remembered."""
    created_at: dt.datetime
    """When it was added (UTC)."""


class EventLog:
    """Append and read task events."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = make_sessionmaker(engine)

    def append(self, events: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        """Append (task id, type, payload) triples in one transaction (workers use
        ``TaskQueue.append_events``, which also checks the lease)."""
        if not events:
            return
        at = _now()
        with self._sessions.begin() as session:
            session.add_all(
                EventRow(task_id=t, type=kind, payload=safe_payload(payload), created_at=at)
                for t, kind, payload in events
            )

    def read(self, task_id: str, *, after: int = 0, limit: int = 100) -> list[LoggedEvent]:
        """Events of a task after position ``after``, oldest first."""
        query = (
            select(EventRow)
            .where(EventRow.task_id == task_id, EventRow.id > after)
            .order_by(EventRow.id)
            .limit(limit)
        )
        with self._sessions() as session:
            return [
                LoggedEvent(id=r.id, task_id=r.task_id, type=r.type, payload=r.payload)
                for r in session.scalars(query).all()
            ]


class ReminderBook:
    """Each user's standing reminders; every read and write is scoped to one user."""

    def __init__(self, engine: Engine, *, max_per_user: int = 50, max_chars: int = 500) -> None:
        self._sessions = make_sessionmaker(engine)
        self.max_per_user = max_per_user
        self.max_chars = max_chars

    def add(self, user_id: str, text: str) -> Reminder:
        """Record a reminder for ``user_id``."""
        text = text.strip()
        if not text or len(text) > self.max_chars:
            raise UsageError(
                f"a reminder must be 1 to {self.max_chars} characters, got {len(text)}"
            )
        if "\x00" in text or _SURROGATES.search(text):
            raise UsageError("a reminder must be plain text (no NUL or invalid characters)")
        with self._sessions.begin() as session:
            count = session.scalar(
                select(func.count()).select_from(ReminderRow).where(ReminderRow.user_id == user_id)
            )
            if (count or 0) >= self.max_per_user:
                raise UsageError(
                    f"you already have {self.max_per_user} reminders; delete some first"
                )
            row = ReminderRow(user_id=user_id, text=text, created_at=_now())
            session.add(row)
            session.flush()
            return _reminder(row)

    def list(self, user_id: str) -> list[Reminder]:
        """A user's reminders, oldest first."""
        query = select(ReminderRow).where(ReminderRow.user_id == user_id).order_by(ReminderRow.id)
        with self._sessions() as session:
            return [_reminder(r) for r in session.scalars(query).all()]

    def remove(self, user_id: str, reminder_id: int) -> None:
        """Delete one of the user's reminders (another user's id is reported as missing)."""
        if not 0 < reminder_id < 2**31:
            raise NotFoundError(f"unknown reminder id {reminder_id}; list yours first")
        with self._sessions.begin() as session:
            deleted = session.execute(
                delete(ReminderRow).where(
                    ReminderRow.id == reminder_id, ReminderRow.user_id == user_id
                )
            ).rowcount
        if not deleted:
            raise NotFoundError(f"unknown reminder id {reminder_id}; list yours first")


def safe_payload(value: Any) -> Any:
    """An event payload that any database stores: long texts clipped, NUL characters and
    lone surrogates (which PostgreSQL refuses) replaced, NaN and infinities as null."""
    if isinstance(value, str):
        if len(value) > MAX_EVENT_TEXT:
            value = value[:MAX_EVENT_TEXT] + f"... ({len(value)} characters)"
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, dict):
        return {str(safe_payload(str(k))): safe_payload(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe_payload(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def _reminder(row: ReminderRow) -> Reminder:
    created = row.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return Reminder(id=row.id, text=row.text, created_at=created)
