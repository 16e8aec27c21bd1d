"""Past successes: completed task trees indexed for few-shot retrieval, with learned values.

Each case is a goal, the cues in force and the plan that worked. ``retrieve`` ranks a user's
cases by cosine similarity of goal+cues embeddings, weighted by the case's value, and adds
one lower-value case for exploration. ``reward`` applies AlignBot's update rule:
``value <- value + lr * (reward - value)`` with reward 1 on success and 0 on failure, in one
SQL statement so concurrent workers never lose an update.

The runtime uses them per task: ``note_use`` records which cases a task's planning was
shown, and ``settle`` (once, when the task ends, in one transaction) rewards those cases
with the task's outcome and, on success, indexes the task's own plan as a new case. A task
settled once is never settled again, so a resumed run cannot reward twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import CursorResult, Engine, select, update
from sqlalchemy.orm import Session

from trellis.adapters import Cue
from trellis.memory import make_sessionmaker
from trellis.memory.errors import UsageError
from trellis.planners._plan import Plan
from trellis.planners._tables import CaseRow, CaseUseRow
from trellis.planners.errors import UnknownCaseError

__all__ = ["CaseConfig", "CaseMemory", "EmbedderLike", "PastCase", "case_text"]


class EmbedderLike(Protocol):
    """Anything with ``embed(texts) -> array (n, dim)`` (``adapters.SentenceEmbedder``...)."""

    def embed(self, texts: Sequence[str]) -> Any:
        """One row per text."""
        ...


class PastCase(BaseModel):
    """A completed task offered to the planner as an example."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int | None = None
    """Storage id (None for examples that were never stored)."""
    goal: str
    """The goal that was achieved."""
    plan: Plan
    """The plan that achieved it."""
    cues: tuple[str, ...] = ()
    """The rules in force at the time, in words."""
    value: float = Field(default=0.5, ge=0.0, le=1.0)
    """Learned usefulness in [0, 1] (rises when reusing it led to success)."""
    similarity: float = 0.0
    """Cosine similarity to the query that retrieved it."""
    exploration: bool = False
    """True for the lower-value case included to keep testing it."""


class CaseConfig(BaseModel):
    """How past successes are ranked and updated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    initial_value: float = Field(default=0.5, ge=0.0, le=1.0)
    """Value of a newly indexed case."""
    learning_rate: float = Field(default=0.3, gt=0.0, le=1.0)
    """Step of the value update toward 1 (success) or 0 (failure)."""
    value_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    """Score = similarity * ((1 - w) + w * value): 0 ignores values, 1 multiplies by them."""
    min_similarity: float = Field(default=0.1, ge=-1.0, le=1.0)
    """Cases less similar than this are never offered."""
    explore: bool = True
    """Whether one lower-value case takes the last of k slots."""
    max_cases_scanned: int = Field(default=5000, ge=1)
    """Most recent cases of a user considered per query (bounds the in-memory ranking)."""


def case_text(goal: str, cues: Sequence[str | Cue] = ()) -> str:
    """What is embedded for a case or a query: the goal, then the rules."""
    rules = [c.constraint if isinstance(c, Cue) else str(c) for c in cues]
    return goal.strip() + ("\nrules: " + "; ".join(rules) if rules else "")


def _unit(vector: Any) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


class CaseMemory:
    """Past successes of every user, in the Trellis database (``planners`` migration)."""

    def __init__(
        self, engine: Engine, embedder: EmbedderLike, config: CaseConfig | None = None
    ) -> None:
        self.engine = engine
        self.embedder = embedder
        self.config = config or CaseConfig()
        self._sessions = make_sessionmaker(engine)

    def _embed(self, text: str) -> np.ndarray:
        matrix = np.asarray(self.embedder.embed([text]), dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != 1:
            raise UsageError(
                f"the embedder returned shape {matrix.shape} for one text; it must return "
                "an array of shape (n_texts, dim)"
            )
        return _unit(matrix[0])

    def index(
        self,
        user_id: str,
        goal: str,
        plan: Plan,
        *,
        cues: Sequence[str | Cue] = (),
        task_id: str | None = None,
    ) -> PastCase:
        """Store a completed task as a case; returns it with its id."""
        if not goal.strip():
            raise UsageError("cannot index a case with an empty goal")
        if not plan.steps:
            raise UsageError("cannot index a case whose plan has no steps")
        row = self._new_row(user_id, task_id, goal, plan, cues)
        with self._sessions.begin() as session:
            session.add(row)
            session.flush()
            return _to_case(row)

    def retrieve(
        self, user_id: str, goal: str, k: int = 3, *, cues: Sequence[str | Cue] = ()
    ) -> list[PastCase]:
        """Top-k cases of this user by similarity weighted by value, plus one to explore.

        With ``explore`` on and k >= 2, the last slot goes to the most similar case whose
        value is below every chosen case's (marked ``exploration=True``), when there is one.
        """
        if k < 1:
            return []
        query = self._embed(case_text(goal, cues))
        with self._sessions() as session:
            rows = session.scalars(
                select(CaseRow)
                .where(CaseRow.user_id == user_id, CaseRow.dim == int(query.shape[0]))
                .order_by(CaseRow.id.desc())
                .limit(self.config.max_cases_scanned)
            ).all()
        if not rows:
            return []
        matrix = np.stack([np.frombuffer(r.embedding, dtype=np.float32) for r in rows])
        sims = matrix @ query
        w = self.config.value_weight
        candidates = [
            (float(sim) * ((1 - w) + w * row.value), float(sim), row)
            for sim, row in zip(sims, rows, strict=True)
            if sim >= self.config.min_similarity
        ]
        candidates.sort(key=lambda item: (item[0], item[2].id), reverse=True)
        exploit = k - 1 if self.config.explore and k >= 2 else k
        chosen = candidates[:exploit]
        picked = [_to_case(row, similarity=sim) for _score, sim, row in chosen]
        if len(picked) < k and self.config.explore:
            floor = min((row.value for _s, _sim, row in chosen), default=1.0)
            rest = [c for c in candidates[exploit:] if c[2].value < floor]
            if rest:
                _score, sim, row = max(rest, key=lambda item: (item[1], item[2].id))
                picked.append(_to_case(row, similarity=sim, exploration=True))
            elif len(candidates) > exploit:
                _score, sim, row = candidates[exploit]
                picked.append(_to_case(row, similarity=sim))
        return picked

    def _new_row(
        self,
        user_id: str,
        task_id: str | None,
        goal: str,
        plan: Plan,
        cues: Sequence[str | Cue],
    ) -> CaseRow:
        rules = [c.constraint if isinstance(c, Cue) else str(c) for c in cues]
        vector = self._embed(case_text(goal, rules))
        now = datetime.now(UTC)
        return CaseRow(
            user_id=user_id,
            task_id=task_id,
            goal=goal.strip(),
            cues=rules,
            plan=plan.model_dump(mode="json"),
            embedding=vector.tobytes(),
            dim=int(vector.shape[0]),
            value=self.config.initial_value,
            uses=0,
            successes=0,
            created_at=now,
            updated_at=now,
        )

    def _reward(self, session: Session, case_id: int, success: bool) -> bool:
        target = 1.0 if success else 0.0
        lr = self.config.learning_rate
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(CaseRow)
            .where(CaseRow.id == case_id)
            .values(
                value=CaseRow.value + lr * (target - CaseRow.value),
                uses=CaseRow.uses + 1,
                successes=CaseRow.successes + (1 if success else 0),
                updated_at=datetime.now(UTC),
            )
        )
        return bool(result.rowcount)

    def reward(self, case_id: int, success: bool) -> PastCase:
        """Move the case's value toward 1 (success) or 0 (failure) by the learning rate."""
        with self._sessions.begin() as session:
            if not self._reward(session, case_id, success):
                raise UnknownCaseError(case_id)
            row = session.get(CaseRow, case_id, populate_existing=True)
            if row is None:
                raise UnknownCaseError(case_id)
            return _to_case(row)

    def note_use(self, task_id: str, user_id: str, case_ids: Sequence[int]) -> None:
        """Record that ``task_id``'s planning was shown these cases (added to earlier ones)."""
        with self._sessions.begin() as session:
            row = session.get(CaseUseRow, task_id, with_for_update=True)
            if row is None:
                session.add(
                    CaseUseRow(
                        task_id=task_id,
                        user_id=user_id,
                        case_ids=sorted(set(case_ids)),
                        created_at=datetime.now(UTC),
                    )
                )
            elif row.settled_at is None:
                row.case_ids = sorted(set(row.case_ids or ()) | set(case_ids))

    def used(self, task_id: str) -> list[int]:
        """The cases ``task_id``'s planning was shown."""
        with self._sessions() as session:
            row = session.get(CaseUseRow, task_id)
            return list(row.case_ids or ()) if row is not None else []

    def settle(
        self,
        task_id: str,
        user_id: str,
        *,
        success: bool,
        goal: str,
        plan: Plan | None,
        cues: Sequence[str | Cue] = (),
    ) -> PastCase | None:
        """Close ``task_id`` once: reward the cases it was shown, index its plan on success.

        Returns the new case (None when nothing was indexed). A second call for the same
        task changes nothing: the settlement is written in the same transaction.
        """
        index = success and plan is not None and bool(plan.steps) and bool(goal.strip())
        # Embedded before the transaction: the lock is not held while the embedder runs.
        row = self._new_row(user_id, task_id, goal, plan, cues) if index and plan else None
        now = datetime.now(UTC)
        with self._sessions.begin() as session:
            use = session.get(CaseUseRow, task_id, with_for_update=True)
            if use is None:
                use = CaseUseRow(task_id=task_id, user_id=user_id, case_ids=[], created_at=now)
                session.add(use)
            elif use.settled_at is not None:
                return None
            for case_id in use.case_ids or ():
                self._reward(session, int(case_id), success)  # a deleted case is skipped
            use.outcome = "success" if success else "failed"
            use.settled_at = now
            if row is None:
                return None
            session.add(row)
            session.flush()
            return _to_case(row)

    def get(self, case_id: int) -> PastCase:
        """One case by id."""
        with self._sessions() as session:
            row = session.get(CaseRow, case_id)
            if row is None:
                raise UnknownCaseError(case_id)
            return _to_case(row)

    def cases(self, user_id: str) -> list[PastCase]:
        """Every case of a user, oldest first."""
        with self._sessions() as session:
            rows = session.scalars(
                select(CaseRow).where(CaseRow.user_id == user_id).order_by(CaseRow.id)
            ).all()
            return [_to_case(r) for r in rows]


def _to_case(row: CaseRow, *, similarity: float = 0.0, exploration: bool = False) -> PastCase:
    return PastCase(
        id=row.id,
        goal=row.goal,
        plan=Plan.model_validate(row.plan),
        cues=tuple(row.cues or ()),
        value=min(1.0, max(0.0, float(row.value))),
        similarity=similarity,
        exploration=exploration,
    )
