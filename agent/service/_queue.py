"""The service's task queue: submitted tasks, claimed by workers under leases.

One row per task (its id is the Task Memory Tree task id). Workers claim rows with
``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several processes on several
machines never take the same row; on SQLite (one process) every write transaction is
``BEGIN IMMEDIATE``, which serialises claims the same way. A claim is a lease: the worker
extends it with heartbeats, and a lease that expires (the worker died) makes the row
claimable again, so another worker resumes the task from its LangGraph checkpoint. Every
state change after a claim checks the lease owner, so a worker that lost its lease can
never finish a task a second time.
"""

from __future__ import annotations

import builtins
import datetime as dt
import enum
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from trellis.agent.errors import NoPendingApprovalError
from trellis.agent.service._errors import TaskStateError
from trellis.agent.service._queue_log import EventRow, safe_payload
from trellis.memory import (
    Base,
    DatabaseUnavailable,
    UnknownTaskError,
    is_transient,
    make_sessionmaker,
)
from trellis.memory.errors import UsageError

__all__ = ["QueueRow", "QueueState", "QueuedTask", "TaskQueue"]


class QueueState(enum.StrEnum):
    """Where a submitted task is in the service."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    AWAITING_APPROVAL = "awaiting_approval"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({QueueState.DONE, QueueState.FAILED, QueueState.CANCELLED})


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


class QueueRow(Base):
    """One submitted task (table ``service_tasks``)."""

    __tablename__ = "service_tasks"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key"),
        Index("ix_service_tasks_claim", "state", "created_at"),
        Index("ix_service_tasks_user", "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200))
    goal: Mapped[str] = mapped_column(Text)
    reminders: Mapped[Any] = mapped_column(JSON)
    profile: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    state: Mapped[str] = mapped_column(String(24))
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    decision: Mapped[Any] = mapped_column(JSON, nullable=True)
    approval: Mapped[Any] = mapped_column(JSON, nullable=True)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class QueuedTask(BaseModel):
    """An immutable snapshot of a queue row (what the HTTP API returns as task status)."""

    model_config = ConfigDict(frozen=True)

    id: str
    """Task id (also the Task Memory Tree task id and the LangGraph thread id)."""
    user_id: str
    """Who submitted it."""
    goal: str
    """What to achieve."""
    reminders: list[str]
    """Reminders the planner is given for this task."""
    profile: str
    """The skill/environment profile it runs with."""
    idempotency_key: str | None
    """The client's key; a second submission with it returns this task."""
    state: QueueState
    """Where the task is in the service."""
    lease_owner: str | None
    """The worker holding it (while claimed)."""
    lease_expires: dt.datetime | None
    """When the lease runs out unless the worker heartbeats."""
    attempts: int
    """How many times a worker claimed it (more than one after a worker died)."""
    cancel_requested: bool
    """A cancel arrived while a worker was running it."""
    decision: dict[str, Any] | None
    """An approve/reject decision waiting to be applied by a worker."""
    approval: dict[str, Any] | None
    """The call waiting for approval (while ``awaiting_approval``)."""
    result: dict[str, Any] | None
    """How the run ended (outcome, reason, counters)."""
    error: str | None
    """Why it failed, when it did."""
    created_at: dt.datetime
    """Submission time (UTC)."""
    updated_at: dt.datetime
    """Last change (UTC)."""
    finished_at: dt.datetime | None
    """When it reached done, failed or cancelled."""

    @classmethod
    def of(cls, row: QueueRow) -> QueuedTask:
        return cls(
            id=row.id,
            user_id=row.user_id,
            goal=row.goal,
            reminders=list(row.reminders or []),
            profile=row.profile,
            idempotency_key=row.idempotency_key,
            state=QueueState(row.state),
            lease_owner=row.lease_owner,
            lease_expires=_utc(row.lease_expires),
            attempts=row.attempts,
            cancel_requested=row.cancel_requested,
            decision=row.decision,
            approval=row.approval,
            result=row.result,
            error=row.error,
            created_at=_utc(row.created_at) or _now(),
            updated_at=_utc(row.updated_at) or _now(),
            finished_at=_utc(row.finished_at),
        )


class TaskQueue:
    """Submitted tasks in the Trellis database (tables from the ``service`` migration)."""

    def __init__(self, engine: Engine, *, lease_s: float = 30.0, max_attempts: int = 5) -> None:
        if lease_s <= 0:
            raise UsageError(f"lease_s must be positive, got {lease_s}")
        if max_attempts < 1:
            raise UsageError(f"max_attempts must be at least 1, got {max_attempts}")
        self.engine = engine
        self.lease = dt.timedelta(seconds=lease_s)
        self.max_attempts = max_attempts
        self._sessions = make_sessionmaker(engine)

    # --- submission --------------------------------------------------------------------

    def enqueue(
        self,
        task_id: str,
        *,
        user_id: str,
        goal: str,
        profile: str,
        reminders: Sequence[str] = (),
        idempotency_key: str | None = None,
    ) -> tuple[QueuedTask, bool]:
        """Queue a task; with a key already used by this user, returns (first task, False)."""
        if idempotency_key is not None:
            existing = self.find(user_id, idempotency_key)
            if existing is not None:
                return existing, False
        at = _now()
        row = QueueRow(
            id=task_id,
            user_id=user_id,
            goal=goal,
            reminders=list(reminders),
            profile=profile,
            idempotency_key=idempotency_key,
            state=QueueState.QUEUED.value,
            attempts=0,
            cancel_requested=False,
            created_at=at,
            updated_at=at,
        )
        try:
            with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            # The same key was submitted concurrently: the first insert wins.
            if idempotency_key is not None:
                existing = self.find(user_id, idempotency_key)
                if existing is not None:
                    return existing, False
            raise
        return QueuedTask.of(row), True

    def find(self, user_id: str, idempotency_key: str) -> QueuedTask | None:
        """The task this user submitted with this idempotency key, if any."""
        with self._sessions() as session:
            row = session.scalar(
                select(QueueRow).where(
                    QueueRow.user_id == user_id, QueueRow.idempotency_key == idempotency_key
                )
            )
            return QueuedTask.of(row) if row is not None else None

    def get(self, task_id: str, *, user_id: str | None = None) -> QueuedTask:
        """The task; another user's task is reported exactly like a missing one."""
        with self._sessions() as session:
            row = session.get(QueueRow, task_id)
            if row is None or (user_id is not None and row.user_id != user_id):
                raise UnknownTaskError(task_id)
            return QueuedTask.of(row)

    def list(
        self, user_id: str, *, state: QueueState | None = None, limit: int = 100
    ) -> list[QueuedTask]:
        """A user's tasks, newest first."""
        query = select(QueueRow).where(QueueRow.user_id == user_id)
        if state is not None:
            query = query.where(QueueRow.state == state.value)
        query = query.order_by(QueueRow.created_at.desc(), QueueRow.id).limit(limit)
        with self._sessions() as session:
            return [QueuedTask.of(r) for r in session.scalars(query).all()]

    def counts(self, user_id: str | None = None) -> dict[str, int]:
        """Number of tasks in each state (every state present, zero included); only the
        user's own tasks when ``user_id`` is given."""
        query = select(QueueRow.state, func.count()).group_by(QueueRow.state)
        if user_id is not None:
            query = query.where(QueueRow.user_id == user_id)
        with self._sessions() as session:
            rows = session.execute(query).all()
        counts = {s.value: 0 for s in QueueState}
        counts.update({str(state): int(n) for state, n in rows})
        return counts

    # --- workers -----------------------------------------------------------------------

    def claim(self, owner: str, *, limit: int = 1) -> builtins.list[QueuedTask]:
        """Take up to ``limit`` runnable tasks (queued, or claimed under an expired lease)."""
        at = _now()
        claimable = or_(
            QueueRow.state == QueueState.QUEUED.value,
            and_(QueueRow.state == QueueState.CLAIMED.value, QueueRow.lease_expires < at),
        )
        query = (
            select(QueueRow)
            .where(claimable)
            .order_by(QueueRow.created_at, QueueRow.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed: list[QueuedTask] = []
        with self._sessions.begin() as session:
            for row in session.scalars(query).all():
                row.updated_at = at
                if row.cancel_requested:
                    # Cancelled while its worker was gone: nothing left to run.
                    self._finish_row(row, QueueState.CANCELLED, at, error="cancelled by the user")
                    continue
                if row.attempts >= self.max_attempts:
                    self._finish_row(
                        row,
                        QueueState.FAILED,
                        at,
                        error=(
                            f"gave up after {row.attempts} claims: every worker that ran it "
                            "stopped before it finished (see the worker logs); resubmit it "
                            "once the cause is fixed"
                        ),
                    )
                    continue
                row.state = QueueState.CLAIMED.value
                row.lease_owner = owner
                row.lease_expires = at + self.lease
                row.heartbeat_at = at
                row.attempts += 1
                claimed.append(QueuedTask.of(row))
        return claimed

    def heartbeat(self, owner: str, task_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """Extend the leases this worker holds; returns (still held, cancel requested)."""
        if not task_ids:
            return set(), set()
        at = _now()
        held_by_owner = and_(
            QueueRow.id.in_(list(task_ids)),
            QueueRow.lease_owner == owner,
            QueueRow.state == QueueState.CLAIMED.value,
        )
        with self._sessions.begin() as session:
            session.execute(
                update(QueueRow)
                .where(held_by_owner)
                .values(lease_expires=at + self.lease, heartbeat_at=at)
            )
            rows = session.execute(
                select(QueueRow.id, QueueRow.cancel_requested).where(held_by_owner)
            ).all()
        held = {r.id for r in rows}
        return held, {r.id for r in rows if r.cancel_requested}

    def renew(self, task_id: str, owner: str) -> bool:
        """Extend one lease if ``owner`` still holds it (a lease fence): False when another
        worker has taken the task over (or it is no longer claimed)."""
        at = _now()
        with self._sessions.begin() as session:
            result = session.execute(
                update(QueueRow)
                .where(
                    QueueRow.id == task_id,
                    QueueRow.lease_owner == owner,
                    QueueRow.state == QueueState.CLAIMED.value,
                )
                .values(lease_expires=at + self.lease, heartbeat_at=at)
            )
        return bool(getattr(result, "rowcount", 0))

    def append_events(
        self, task_id: str, owner: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> bool:
        """Append a run's events (type, payload) only while ``owner`` holds the task's lease,
        in one transaction with that check (the row stays locked until the commit): a worker
        that lost its lease can add nothing to the log. False when it does not hold it.

        Safe to call again after a lost connection: the batch stamps the queue row, so an
        append whose COMMIT was cut off is recognised instead of being written twice.
        """
        if not events:
            return True
        stamp = _now()
        try:
            with self._sessions.begin() as session:
                row = self._held(session, task_id, owner)
                if row is None:
                    return False
                row.updated_at = stamp
                events = self._first_finish_only(session, task_id, events)
                session.add_all(
                    EventRow(
                        task_id=task_id, type=kind, payload=safe_payload(payload), created_at=stamp
                    )
                    for kind, payload in events
                )
        except Exception as exc:
            if not is_transient(exc):
                raise
            if self._stamped(task_id, stamp):
                return True  # the commit went through before the connection dropped
            raise DatabaseUnavailable(type(exc).__name__) from exc
        return True

    @staticmethod
    def _first_finish_only(
        session: Any, task_id: str, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> builtins.list[tuple[str, dict[str, Any]]]:
        """Drop a final ``task_finished`` when the log already has one: a run cut off after
        its finish stage but before its checkpoint (a crash, a lost database) finishes
        again when it resumes, and clients must see the task finish once."""

        def final(kind: str, payload: dict[str, Any]) -> bool:
            return kind == "task_finished" and payload.get("outcome") != "interrupted"

        if not any(final(kind, payload) for kind, payload in events):
            return list(events)
        logged = session.scalars(
            select(EventRow.payload).where(
                EventRow.task_id == task_id, EventRow.type == "task_finished"
            )
        ).all()
        seen = any(final("task_finished", p or {}) for p in logged)
        kept: builtins.list[tuple[str, dict[str, Any]]] = []
        for kind, payload in events:
            if final(kind, payload):
                if seen:
                    continue
                seen = True
            kept.append((kind, payload))
        return kept

    def _stamped(self, task_id: str, stamp: dt.datetime) -> bool:
        """Whether the queue row carries ``stamp`` (an append committed); retried briefly."""
        from trellis.memory import retry_transient

        def read() -> dt.datetime | None:
            with self._sessions() as session:
                return session.scalar(select(QueueRow.updated_at).where(QueueRow.id == task_id))

        seen = _utc(retry_transient(read, engine=self.engine))
        return seen is not None and abs((seen - stamp).total_seconds()) < 1e-6

    def complete(
        self,
        task_id: str,
        owner: str,
        state: QueueState,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        approval: dict[str, Any] | None = None,
    ) -> bool:
        """Record how a claimed run ended; False when ``owner`` no longer holds the lease."""
        if state not in (*TERMINAL, QueueState.AWAITING_APPROVAL):
            raise UsageError(f"complete() takes a final state or awaiting_approval, not {state}")
        at = _now()
        with self._sessions.begin() as session:
            row = self._held(session, task_id, owner)
            if row is None:
                return False
            row.updated_at = at
            row.result = result
            row.decision = None
            if state is QueueState.AWAITING_APPROVAL:
                row.state = state.value
                row.approval = approval
                row.lease_owner = None
                row.lease_expires = None
            else:
                self._finish_row(row, state, at, error=error)
        return True

    def release(
        self, task_id: str, owner: str, *, delay_s: float = 0.0, count_attempt: bool = False
    ) -> bool:
        """Give a claimed task back (graceful shutdown) so another worker resumes it.

        ``delay_s`` > 0 keeps the lease that much longer instead of freeing it at once: a
        process that exits right after cannot race the next worker.
        """
        at = _now()
        with self._sessions.begin() as session:
            row = self._held(session, task_id, owner)
            if row is None:
                return False
            row.updated_at = at
            if not count_attempt:
                # A hand-back on shutdown is not a failed attempt.
                row.attempts = max(0, row.attempts - 1)
            if delay_s > 0:
                row.lease_expires = at + dt.timedelta(seconds=delay_s)
                return True
            row.state = QueueState.QUEUED.value
            row.lease_owner = None
            row.lease_expires = None
        return True

    # --- users -------------------------------------------------------------------------

    def cancel(self, task_id: str, *, user_id: str) -> QueuedTask:
        """Cancel now (queued or awaiting approval) or ask the running worker to stop."""
        at = _now()
        with self._sessions.begin() as session:
            row = self._locked(session, task_id, user_id)
            if QueueState(row.state) in TERMINAL:
                raise TaskStateError(task_id, row.state, "only unfinished tasks can be cancelled")
            row.cancel_requested = True
            row.updated_at = at
            if row.state != QueueState.CLAIMED.value:
                self._finish_row(row, QueueState.CANCELLED, at, error="cancelled by the user")
            return QueuedTask.of(row)

    def decide(self, task_id: str, *, user_id: str, approved: bool) -> QueuedTask:
        """Record an approve/reject for a task waiting on one; a worker then resumes it."""
        with self._sessions.begin() as session:
            row = self._locked(session, task_id, user_id)
            if row.state != QueueState.AWAITING_APPROVAL.value:
                raise NoPendingApprovalError(task_id)
            row.decision = {"approved": approved}
            row.state = QueueState.QUEUED.value
            row.updated_at = _now()
            return QueuedTask.of(row)

    # --- helpers -----------------------------------------------------------------------

    def _locked(self, session: Any, task_id: str, user_id: str) -> QueueRow:
        row = session.scalar(select(QueueRow).where(QueueRow.id == task_id).with_for_update())
        if row is None or row.user_id != user_id:
            raise UnknownTaskError(task_id)
        return row

    @staticmethod
    def _held(session: Any, task_id: str, owner: str) -> QueueRow | None:
        return session.scalar(
            select(QueueRow)
            .where(
                QueueRow.id == task_id,
                QueueRow.lease_owner == owner,
                QueueRow.state == QueueState.CLAIMED.value,
            )
            .with_for_update()
        )

    @staticmethod
    def _finish_row(
        row: QueueRow, state: QueueState, at: dt.datetime, *, error: str | None = None
    ) -> None:
        row.state = state.value
        row.lease_owner = None
        row.lease_expires = None
        row.finished_at = at
        row.approval = None
        if error is not None:
            row.error = error
