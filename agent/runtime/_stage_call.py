"""Execute and observe: a step's call runs through the exactly-once record, its outcome goes to the tree.

A side-effecting call whose outcome is lost, because the process stopped during it or it
timed out (a sync skill's thread cannot be stopped and may still act), is recorded
``unknown`` and never run again; the app's effect check, when it gave one, may settle it
first (see :mod:`trellis.agent.runtime._calls`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from langgraph.types import interrupt
from sqlalchemy.exc import IntegrityError

from trellis.adapters import Cue
from trellis.agent.runtime._calls import CallStatus
from trellis.agent.runtime._events import (
    ApprovalRequested,
    SkillCalled,
    SkillFinished,
)
from trellis.agent.runtime._loop_state import LoopState, require
from trellis.agent.runtime._skills import (
    Skill,
    SkillContext,
    SkillOutcome,
    SkillRun,
    lingering_thread,
)
from trellis.agent.runtime._stage_base import StageBase, call_key, timed
from trellis.memory import FACTS_KEY, NodeRecord, NodeStatus, fact_rows, run_sync
from trellis.memory.errors import (
    IllegalTransitionError,
    NotSerializableError,
    PayloadTooLargeError,
    StaleWriteError,
)
from trellis.planners import call_violations

__all__ = ["CallStages"]

log = logging.getLogger("trellis.agent")

_MAX_ERROR_CHARS = 2000
_MAX_GRACE_S = 30.0


def _clip(text: str | None, limit: int = _MAX_ERROR_CHARS) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class CallStages(StageBase):
    """Run a step's call (once, for side effects) and record its outcome on the tree."""

    fence_check: Callable[[str], None] | None = None
    """Raises when this process may no longer write to the task (set by the graph)."""

    def _fence(self, task_id: str) -> None:
        if self.fence_check is not None:
            self.fence_check(task_id)

    def _start(
        self,
        task_id: str,
        node: NodeRecord,
        call: dict[str, Any],
        adapter: str | None,
        route: dict[str, Any],
    ) -> tuple[int, bool]:
        """Move the step to ``running``: its attempt number, and whether the call's
        ``started`` record committed in the same transaction (a fresh side-effecting call)."""
        if self._recorded(call) and node.status is not NodeStatus.RUNNING:
            # Before the "started" record: once it commits the call runs right away, so a
            # fence that fails later could not leave a record of a call that never ran.
            self._fence(task_id)
            attempt = node.attempts + 1
            started = self.d.calls.start_statement(
                task_id=task_id,
                node_id=node.id,
                call_key=call_key(task_id, node.id, attempt),
                skill=str(call["skill"]),
                args=call.get("args") or {},
            )
            try:
                # The expected version pins the attempt number the call key was built with.
                running = self.d.store.transition(
                    node.id,
                    NodeStatus.RUNNING,
                    expected_version=node.version,
                    cause="act",
                    adapter=adapter,
                    route=route,
                    also=[started],
                )
            except (StaleWriteError, IllegalTransitionError, IntegrityError):
                pass  # changed since it was read: the general path below sorts it out
            else:
                self._emit_status(task_id, running, NodeStatus.RUNNING)
                return attempt, True
        running = self._set_status(
            task_id, node.id, NodeStatus.RUNNING, cause="act", adapter=adapter, route=route
        )
        return running.attempts, False

    def approve(self, state: LoopState) -> dict[str, Any]:
        call = state.get("call") or {}
        if not self._needs_approval(call):
            return {"decision": None, "next": "execute"}
        node_id = require(state.get("node_id"))
        request = {
            "task_id": state["task_id"],
            "node_id": node_id,
            "skill": call["skill"],
            "args": call["args"],
        }
        self.emit(ApprovalRequested(**request), flush=True)
        answer = interrupt(request)
        approved = answer is True or (isinstance(answer, dict) and answer.get("approved") is True)
        return {"decision": "approved" if approved else "rejected", "next": "execute"}

    @timed
    def execute(self, state: LoopState) -> dict[str, Any]:
        """Run the call chosen (and approved) in an earlier superstep, and observe it."""
        node_id = require(state.get("node_id"))
        call = state.get("call") or {}
        attempt, decision = state.get("attempt", 0), state.get("decision")
        done = self._run(state, node_id, call, attempt, decision, False)
        return {**done, "call": None, "decision": None}

    def _run(
        self,
        state: LoopState,
        node_id: int,
        call: dict[str, Any],
        attempt: int,
        decision: str | None,
        recorded: bool,
    ) -> dict[str, Any]:
        """Run the call on the running step and record its result in the tree."""
        task_id = state["task_id"]
        steps = state.get("steps", 0) + 1
        if call.get("skill") is not None and not call.get("error"):
            # The last guard: whatever path a call took (an approval, a resume), a call that
            # breaks one of the user's cues is never run; the step fails naming the cue.
            cues = [Cue.model_validate(c) for c in state.get("cues", [])]
            problems = call_violations(str(call["skill"]), call.get("args") or {}, cues)
            if problems:
                call = {**call, "error": "; ".join(problems), "error_type": "CueViolation"}
        outcome, key, status = self._call(task_id, node_id, call, attempt, decision, recorded)
        self._fence(task_id)  # a worker that lost its lease during the call writes nothing
        self._observe(task_id, node_id, outcome, key, steps, status)
        return {"steps": steps, "next": "select"}

    def _call(
        self,
        task_id: str,
        node_id: int,
        call: dict[str, Any],
        attempt: int,
        decision: str | None,
        recorded: bool,
    ) -> tuple[SkillOutcome, str | None, CallStatus]:
        """The call's outcome, the key of the record to settle with the step's status change
        (a side-effecting call that ran now) and the status to record there."""
        name = str(call.get("skill"))
        if call.get("error"):
            return (
                SkillOutcome(
                    skill=_clip(name, 200),
                    ok=False,
                    error_type=call.get("error_type"),
                    error=_clip(str(call["error"])),
                ),
                None,
                "finished",
            )
        if decision == "rejected":
            return (
                SkillOutcome(
                    skill=name,
                    ok=False,
                    error_type="ApprovalRejected",
                    error=f"a human rejected the call to {name!r}; the step was not run",
                ),
                None,
                "finished",
            )
        skill = self.d.skills.get(name)
        args = call.get("args") or {}
        env = self.environment(task_id)
        key = call_key(task_id, node_id, attempt)
        context = SkillContext(
            task_id=task_id,
            node_id=node_id,
            env=env[0] if env is not None else None,
            extra=self.d.skill_context,
            idempotency_key=key,
            attempt=attempt,
        )
        if not skill.spec.side_effects:
            self._fence(task_id)
            called = SkillCalled(task_id=task_id, node_id=node_id, skill=name, args=args)
            self.emit(called, flush=True)
            outcome = skill.invoke_sync(args, context)
            lingering_thread(key)
            self._emit_finished(task_id, node_id, outcome, reused=False)
            return outcome, None, "finished"
        existing = None
        if not recorded:
            self._fence(task_id)  # never start a side effect for a task another worker owns
            existing = self.d.calls.start(
                task_id=task_id, node_id=node_id, call_key=key, skill=name, args=args
            )
        if existing is None:
            called = SkillCalled(task_id=task_id, node_id=node_id, skill=name, args=args)
            self.emit(called, flush=True)
            # invoke_sync is what skill wrappers (traces, replay) override.
            outcome = skill.invoke_sync(args, context)
            still_running = lingering_thread(key)
            status: CallStatus = "finished"
            if outcome.error_type == "SkillTimeoutError":
                # It may have acted (or still be acting): as after a crash, never again.
                reason = (
                    f"{name!r} did not finish within {skill.spec.timeout_s:g} s and may still act"
                )
                outcome, status = self._settle_unknown(skill, key, args, reason, still_running)
            self._emit_finished(task_id, node_id, outcome, reused=False)
            # Recorded with the step's status change: one transaction, not two.
            return outcome, key, status
        if existing.status in ("finished", "unknown"):
            outcome = SkillOutcome.model_validate(existing.outcome)
        else:
            # Started before a crash, never finished: it may or may not have acted.
            reason = f"the process stopped while {name!r} was running"
            outcome, status = self._settle_unknown(skill, key, args, reason, None)
            self.d.calls.finish(key, outcome.model_dump(mode="json"), status=status)
        self._emit_finished(task_id, node_id, outcome, reused=existing.status != "started")
        return outcome, None, "finished"

    def _settle_unknown(
        self,
        skill: Skill,
        key: str,
        args: dict[str, Any],
        reason: str,
        still_running: SkillRun | None,
    ) -> tuple[SkillOutcome, CallStatus]:
        """The outcome of a side-effecting call whose result was lost: the app's effect
        check decides when it can (after a timed-out thread has ended), else ``unknown``."""
        name = skill.name
        unknown = SkillOutcome(
            skill=name,
            ok=False,
            error_type="SkillOutcomeUnknown",
            error=(
                f"{reason}; it is not run again because it has side effects (idempotency "
                f"key {key}). Check the world and replan."
            ),
        )
        check = self.d.calls.effect_check
        if check is None:
            return unknown, "unknown"
        if still_running is not None:
            # Asking while the call may still act would get a wrong "no".
            still_running.join(min(skill.spec.timeout_s, _MAX_GRACE_S))
            if still_running.is_alive():
                return unknown, "unknown"
        try:
            answer = check(key, name, dict(args))
            if inspect.isawaitable(answer):
                answer = run_sync(_awaited(answer))
        except Exception:
            log.exception("the effect check failed", extra={"call_key": key, "skill": name})
            return unknown, "unknown"
        if answer is True:
            return SkillOutcome(skill=name, ok=True, result=None), "finished"
        if answer is False:
            error = f"{reason}; the app's effect check says it did not act (key {key})"
            return SkillOutcome(
                skill=name, ok=False, error_type="SkillDidNotAct", error=error
            ), "finished"
        return unknown, "unknown"

    def _emit_finished(
        self, task_id: str, node_id: int, outcome: SkillOutcome, *, reused: bool
    ) -> None:
        self.emit(
            SkillFinished(
                task_id=task_id,
                node_id=node_id,
                skill=outcome.skill,
                ok=outcome.ok,
                result=outcome.result,
                error=outcome.error,
                duration_s=outcome.duration_s,
                reused=reused,
            )
        )

    def _facts(self, task_id: str, skill: str) -> dict[str, Any]:
        """What an environment move revealed, for the task's world memory (kept with the
        move's output, so it is as durable as the move; none for other skills)."""
        env = self.d.envs.get(task_id)
        if env is None or env[1] != skill:
            return {}
        facts = fact_rows(env[0].observed_facts(env[0].state))
        return {FACTS_KEY: facts} if facts else {}

    def _observe(
        self,
        task_id: str,
        node_id: int,
        outcome: SkillOutcome,
        key: str | None,
        steps: int,
        status: CallStatus = "finished",
    ) -> None:
        """Write the outcome to the step (with its call's record, when ``key``)."""
        also = (
            []
            if key is None
            else [
                self.d.calls.finish_statement(key, outcome.model_dump(mode="json"), status=status)
            ]
        )
        if outcome.ok:
            try:
                self._set_status(
                    task_id,
                    node_id,
                    NodeStatus.DONE,
                    cause="skill finished",
                    output={
                        "skill": outcome.skill,
                        "result": outcome.result,
                        **self._facts(task_id, outcome.skill),
                    },
                    also=also,
                )
            except (PayloadTooLargeError, NotSerializableError) as exc:
                # The call ran but its result cannot be stored: record why, keep going.
                outcome = SkillOutcome(
                    skill=outcome.skill, ok=False, error_type=type(exc).__name__, error=str(exc)
                )
        if not outcome.ok:
            error = f"{outcome.error_type}: {outcome.error}"
            try:
                self._set_status(
                    task_id,
                    node_id,
                    NodeStatus.FAILED,
                    cause="skill failed",
                    error=error,
                    output={"skill": outcome.skill, "error": outcome.error_record()},
                    also=also,
                )
            except (PayloadTooLargeError, NotSerializableError):
                # The failure itself is unstorable (a huge or binary message): keep its
                # gist, so the task goes on instead of failing the same way on every resume.
                clipped = _clip(error.replace("\x00", " ").encode("utf-8", "replace").decode())
                self._set_status(
                    task_id,
                    node_id,
                    NodeStatus.FAILED,
                    cause="skill failed",
                    error=clipped,
                    output={"skill": _clip(outcome.skill, 200), "error_type": outcome.error_type},
                    also=also,
                )
        keep = self.d.config.keep_checkpoints_running
        every = self.d.config.prune_every_steps
        if keep is not None and self.d.prune is not None and steps % every == 0:
            self.d.prune(task_id, keep)


async def _awaited(answer: Any) -> Any:
    return await answer
