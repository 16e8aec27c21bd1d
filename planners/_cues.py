"""Per-user storage of reminder cues, with supersession instead of deletion.

A later cue that conflicts with an earlier one (same subject and action, or any action on
the same subject) supersedes it: the earlier row stays, marked ``superseded_by``, so the
history of what the user said is kept while only the latest rule is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, or_, select, update

from trellis.adapters import Cue, ExtractionResult, ReminderAdapter, Scope
from trellis.memory import make_sessionmaker, run_sync
from trellis.memory.errors import UsageError
from trellis.planners._tables import CueRow
from trellis.planners._validate import _GENERIC_STEMS, _words

__all__ = ["CueStore", "cue_key"]

_SCOPE_RANK = {"task": 2, "user": 1, "always": 0}


def cue_key(cue: Cue) -> str:
    """Normalised subject: the words that decide whether two cues talk about the same thing."""
    return " ".join(sorted(set(_words(cue.subject))))[:100] or cue.subject.lower()[:100]


def _action_key(action: str | None) -> str:
    return " ".join(sorted(set(_words(action or "")) - _GENERIC_STEMS))


def _conflicts(new: Cue, old: Cue) -> bool:
    if cue_key(new) != cue_key(old):
        return False
    a, b = _action_key(new.action), _action_key(old.action)
    # "never use the blue plates" and "use the blue plates for guests" talk about the same
    # thing; "open the window" and "close the window" do not contradict each other.
    return not a or not b or a == b


class CueStore:
    """Cues per user in the Trellis database (tables from the ``planners`` migration)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = make_sessionmaker(engine)

    def add(self, user_id: str, cues: Sequence[Cue], *, task_id: str | None = None) -> list[Cue]:
        """Record cues (in order); each supersedes the earlier active cues it conflicts with."""
        _check_user(user_id)
        stored: list[Cue] = []
        with self._sessions.begin() as session:
            for cue in cues:
                if cue.scope == "task" and task_id is None and cue.task_id is None:
                    raise UsageError(
                        f"cue {cue.constraint!r} is task-scoped but no task_id was given; "
                        "pass task_id= or use scope 'user'"
                    )
                cue_task = task_id if cue.scope == "task" else None
                cue_task = cue.task_id if cue_task is None and cue.scope == "task" else cue_task
                row = CueRow(
                    user_id=user_id,
                    task_id=cue_task,
                    kind=cue.kind,
                    polarity=cue.polarity,
                    subject=cue.subject,
                    subject_key=cue_key(cue),
                    action=cue.action,
                    trigger=cue.trigger,
                    cue_order=cue.order,
                    scope=cue.scope,
                    priority=cue.priority,
                    constraint_text=cue.constraint,
                    source=cue.source,
                    created_at=cue.created_at,
                )
                session.add(row)
                session.flush()
                earlier = session.scalars(
                    select(CueRow).where(
                        CueRow.user_id == user_id,
                        CueRow.subject_key == row.subject_key,
                        CueRow.superseded_by.is_(None),
                        CueRow.id != row.id,
                        CueRow.scope == row.scope,
                        # A task's cues only replace that task's cues.
                        (CueRow.task_id == cue_task) if cue_task else CueRow.task_id.is_(None),
                    )
                ).all()
                now = datetime.now(UTC)
                for old in earlier:
                    if _conflicts(cue, _to_cue(old)):
                        old.superseded_by = row.id
                        old.superseded_at = now
                stored.append(_to_cue(row))
        return stored

    async def add_reminder(
        self,
        user_id: str,
        reminder: str,
        adapter: ReminderAdapter,
        *,
        task_id: str | None = None,
        scope: Scope | None = None,
    ) -> ExtractionResult:
        """Extract cues from a reminder and record them; the result carries the stored cues."""
        effective: Scope = scope or ("task" if task_id is not None else "user")
        result = await adapter.extract(reminder, scope=effective)
        result.cues = self.add(user_id, result.cues, task_id=task_id)
        return result

    def add_reminder_sync(
        self,
        user_id: str,
        reminder: str,
        adapter: ReminderAdapter,
        *,
        task_id: str | None = None,
        scope: Scope | None = None,
    ) -> ExtractionResult:
        """Blocking :meth:`add_reminder`."""
        return run_sync(self.add_reminder(user_id, reminder, adapter, task_id=task_id, scope=scope))

    def active_cues(self, user_id: str, task_id: str | None = None) -> list[Cue]:
        """The cues in force for this user (and task): not superseded, conflicts resolved.

        Task-scoped cues of ``task_id`` override the user's own, which override ``always``
        cues; among equals the later one wins. Ordered by priority, then age.
        """
        _check_user(user_id)
        with self._sessions() as session:
            rows = session.scalars(
                select(CueRow)
                .where(
                    CueRow.superseded_by.is_(None),
                    or_(CueRow.user_id == user_id, CueRow.scope == "always"),
                    or_(CueRow.scope != "task", CueRow.task_id == task_id)
                    if task_id is not None
                    else CueRow.scope != "task",
                )
                .order_by(CueRow.created_at, CueRow.id)
            ).all()
        cues = [_to_cue(r) for r in rows]
        ranked = sorted(
            cues, key=lambda c: (_SCOPE_RANK[c.scope], c.created_at, c.id or 0), reverse=True
        )
        kept: list[Cue] = []
        for cue in ranked:
            if not any(_conflicts(cue, k) for k in kept):
                kept.append(cue)
        kept.sort(key=lambda c: (-c.priority, c.created_at, c.id or 0))
        return kept

    def history(self, user_id: str) -> list[dict[str, Any]]:
        """Every cue ever recorded for the user, oldest first, with what superseded it."""
        _check_user(user_id)
        with self._sessions() as session:
            rows = session.scalars(
                select(CueRow).where(CueRow.user_id == user_id).order_by(CueRow.id)
            ).all()
        return [
            {
                "cue": _to_cue(r),
                "superseded_by": r.superseded_by,
                "superseded_at": r.superseded_at,
            }
            for r in rows
        ]

    def retire(self, cue_id: int) -> None:
        """Stop applying a cue (kept in history, superseded by nothing)."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(CueRow)
                .where(CueRow.id == cue_id, CueRow.superseded_at.is_(None))
                .values(superseded_at=datetime.now(UTC), superseded_by=cue_id)
            )
            if result.rowcount == 0:
                raise UsageError(f"no active cue has id {cue_id}; see CueStore.history(user_id)")


def _check_user(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > 200:
        raise UsageError(
            f"invalid user id {user_id!r}: give a non-empty string of at most 200 chars"
        )


def _to_cue(row: CueRow) -> Cue:
    created = row.created_at
    if created.tzinfo is None:  # SQLite drops the zone; values are written in UTC
        created = created.replace(tzinfo=UTC)
    return Cue(
        id=row.id,
        user_id=row.user_id,
        task_id=row.task_id,
        kind=row.kind,
        polarity=row.polarity,
        subject=row.subject,
        action=row.action,
        trigger=row.trigger,
        order=row.cue_order,
        scope=row.scope,
        priority=row.priority,
        constraint=row.constraint_text,
        source=row.source,
        created_at=created,
    )
