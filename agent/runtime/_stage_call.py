"""Execute and observe: a step's call runs through the exactly-once record, its outcome goes to the tree."""

from __future__ import annotations

from typing import Any

from langgraph.types import interrupt
from sqlalchemy.exc import IntegrityError

from trellis.agent.runtime._events import (
    ApprovalRequested,
    SkillCalled,
    SkillFinished,
)
from trellis.agent.runtime._loop_state import LoopState, require
from trellis.agent.runtime._skills import SkillContext, SkillOutcome
from trellis.agent.runtime._stage_base import StageBase, call_key, timed
from trellis.memory import NodeRecord, NodeStatus
from trellis.memory.errors import (
    IllegalTransitionError,
    NotSerializableError,
    PayloadTooLargeError,
    StaleWriteError,
)

__all__ = ["CallStages"]


class CallStages(StageBase):
    """Run a step's call (once, for side effects) and record its outcome on the tree."""

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
        outcome, key = self._call(task_id, node_id, call, attempt, decision, recorded)
        self._observe(task_id, node_id, outcome, key, steps)
        return {"steps": steps, "next": "select"}

    def _call(
        self,
        task_id: str,
        node_id: int,
        call: dict[str, Any],
        attempt: int,
        decision: str | None,
        recorded: bool,
    ) -> tuple[SkillOutcome, str | None]:
        """The call's outcome, and the key of the record to mark finished with the step's
        status change (a side-effecting call that ran now)."""
        name = str(call.get("skill"))
        if call.get("error"):
            return SkillOutcome(
                skill=name, ok=False, error_type=call.get("error_type"), error=call["error"]
            ), None
        if decision == "rejected":
            return SkillOutcome(
                skill=name,
                ok=False,
                error_type="ApprovalRejected",
                error=f"a human rejected the call to {name!r}; the step was not run",
            ), None
        skill = self.d.skills.get(name)
        args = call.get("args") or {}
        env = self.environment(task_id)
        context = SkillContext(
            task_id=task_id,
            node_id=node_id,
            env=env[0] if env is not None else None,
            extra=self.d.skill_context,
        )
        if not skill.spec.side_effects:
            called = SkillCalled(task_id=task_id, node_id=node_id, skill=name, args=args)
            self.emit(called, flush=True)
            outcome = skill.invoke_sync(args, context)
            self._emit_finished(task_id, node_id, outcome, reused=False)
            return outcome, None
        key = call_key(task_id, node_id, attempt)
        existing = None
        if not recorded:
            existing = self.d.calls.start(
                task_id=task_id, node_id=node_id, call_key=key, skill=name, args=args
            )
        if existing is None:
            called = SkillCalled(task_id=task_id, node_id=node_id, skill=name, args=args)
            self.emit(called, flush=True)
            outcome = skill.invoke_sync(args, context)
            self._emit_finished(task_id, node_id, outcome, reused=False)
            # Recorded "finished" with the step's status change: one transaction, not two.
            return outcome, key
        if existing.status in ("finished", "unknown"):
            outcome = SkillOutcome.model_validate(existing.outcome)
        else:
            # Started before a crash, never finished: it may or may not have acted.
            outcome = SkillOutcome(
                skill=name,
                ok=False,
                error_type="SkillOutcomeUnknown",
                error=(
                    f"the process stopped while {name!r} was running; it is not run again "
                    "because it has side effects. Check the world and replan."
                ),
            )
            self.d.calls.finish(key, outcome.model_dump(mode="json"), status="unknown")
        self._emit_finished(task_id, node_id, outcome, reused=existing.status != "started")
        return outcome, None

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

    def _observe(
        self, task_id: str, node_id: int, outcome: SkillOutcome, key: str | None, steps: int
    ) -> None:
        """Write the outcome to the step (with its call's "finished" record, when ``key``)."""
        also = (
            []
            if key is None
            else [self.d.calls.finish_statement(key, outcome.model_dump(mode="json"))]
        )
        if outcome.ok:
            try:
                self._set_status(
                    task_id,
                    node_id,
                    NodeStatus.DONE,
                    cause="skill finished",
                    output={"skill": outcome.skill, "result": outcome.result},
                    also=also,
                )
            except (PayloadTooLargeError, NotSerializableError) as exc:
                # The call ran but its result cannot be stored: record why, keep going.
                outcome = SkillOutcome(
                    skill=outcome.skill, ok=False, error_type=type(exc).__name__, error=str(exc)
                )
        if not outcome.ok:
            self._set_status(
                task_id,
                node_id,
                NodeStatus.FAILED,
                cause="skill failed",
                error=f"{outcome.error_type}: {outcome.error}",
                output={"skill": outcome.skill, "error": outcome.error_record()},
                also=also,
            )
        keep = self.d.config.keep_checkpoints_running
        every = self.d.config.prune_every_steps
        if keep is not None and self.d.prune is not None and steps % every == 0:
            self.d.prune(task_id, keep)
