"""The stages of the agent loop, as plain functions over a small state.

The LangGraph state holds ids and counters only; the Task Memory Tree is the durable
record. Every stage is safe to run again after a crash: structural writes check what is
already in the tree, status changes skip when the node is already there, and
side-effecting skill calls go through the exactly-once record (:mod:`agent._calls`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.types import interrupt
from sqlalchemy.exc import IntegrityError

from trellis.adapters import LLMResult
from trellis.agent.env import Environment
from trellis.agent.errors import EnvironmentFailure
from trellis.agent.runtime._act import choose_call, env_act_prompt_args, offered_actions
from trellis.agent.runtime._events import (
    ApprovalRequested,
    CuesMade,
    EventBase,
    LLMCall,
    LLMToken,
    NodeStatusChanged,
    PlanMade,
    RouteDecided,
    SkillCalled,
    SkillFinished,
    TaskFinished,
)
from trellis.agent.runtime._loop_state import LoopDeps, LoopState, ending, registry_error, require
from trellis.agent.runtime._planning import plan_specs, render_cues
from trellis.agent.runtime._skills import SkillContext, SkillOutcome
from trellis.memory import NodeRecord, NodeSpec, NodeStatus, TaskStatus, run_sync
from trellis.memory.errors import (
    IllegalTransitionError,
    NotSerializableError,
    PayloadTooLargeError,
    RuntimeFailure,
    StaleWriteError,
    TrellisError,
)

__all__ = ["Stages"]

_SATISFIED = {NodeStatus.DONE, NodeStatus.SKIPPED}


def _call_key(task_id: str, node_id: int, attempt: int) -> str:
    """The exactly-once record's key: one call per attempt of a step."""
    return f"{task_id}:{node_id}:{attempt}"


def _timed(stage: Callable[[Stages, LoopState], dict[str, Any]]) -> Any:
    def wrapper(self: Stages, state: LoopState) -> dict[str, Any]:
        started = time.perf_counter()
        update = stage(self, state)
        update["elapsed_s"] = (
            update.get("elapsed_s", state.get("elapsed_s", 0.0)) + time.perf_counter() - started
        )
        return update

    wrapper.__name__ = stage.__name__
    return wrapper


class Stages:
    """The graph's node functions (sync: LangGraph runs them in the run's worker thread)."""

    def __init__(self, deps: LoopDeps) -> None:
        self.d = deps

    # --- helpers ---------------------------------------------------------------------------

    def emit(self, event: EventBase, *, flush: bool = False) -> None:
        sink = self.d.sinks.get(event.task_id)
        if sink is not None:
            sink.put(event)
            if flush:
                sink.flush()

    def flush(self, task_id: str) -> None:
        """Deliver the buffered events now: the stage is about to wait on something slow."""
        sink = self.d.sinks.get(task_id)
        if sink is not None:
            sink.flush()

    def _set_status(
        self, task_id: str, node_id: int, status: NodeStatus, *, cause: str, **fields: Any
    ) -> NodeRecord:
        try:
            node = self.d.store.transition(node_id, status, cause=cause, **fields)
        except IllegalTransitionError:
            current = self.d.store.get_node(node_id)
            if current.status is status:
                # Already there: this stage ran before a crash (and ``also`` committed then).
                return current
            if not (status is NodeStatus.RUNNING and current.status is NodeStatus.FAILED):
                raise
            self.d.store.transition(node_id, NodeStatus.PENDING, cause=cause)
            node = self.d.store.transition(node_id, status, cause=cause, **fields)
        self._emit_status(task_id, node, status)
        return node

    def _emit_status(self, task_id: str, node: NodeRecord, status: NodeStatus) -> None:
        self.emit(
            NodeStatusChanged(
                task_id=task_id,
                node_id=node.id,
                title=node.title,
                status=node.status.value,
                error=node.error if status is NodeStatus.FAILED else None,
            )
        )

    def _check_database(self) -> None:
        url = self.d.store.engine.url
        if url.get_backend_name() != "sqlite":
            return
        database = url.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if not in_memory and not Path(database).expanduser().exists():
            raise RuntimeFailure(
                f"the database file {database} was removed while the task ran; nothing more "
                "can be recorded. Restore the file (the run stopped at its last checkpoint) "
                "and `trellis resume` the task"
            )

    def environment(self, task_id: str) -> tuple[Environment, str] | None:
        """The task's environment and its action skill, rebuilt from its history if needed."""
        if task_id in self.d.envs:
            return self.d.envs[task_id]
        if task_id in self.d.no_env:
            return None
        spec = (self.d.store.get_task(task_id).metadata or {}).get("env")
        if not spec:
            # Task metadata does not change: remember, instead of reading it every stage.
            self.d.no_env.add(task_id)
            return None
        if self.d.env_factory is None:
            raise EnvironmentFailure(f"task {task_id} needs environment {spec!r}; none is known")
        env, action_skill = self.d.env_factory(spec)
        actions = [
            str(c.args.get("action"))
            for c in self.d.calls.calls(task_id)
            if c.skill == action_skill
            and c.status == "finished"
            and isinstance(c.outcome, dict)
            and c.outcome.get("ok")
        ]
        env.replay(actions)
        self.d.envs[task_id] = (env, action_skill)
        return self.d.envs[task_id]

    def _account(self, state: LoopState, results: list[LLMResult], **where: Any) -> dict[str, Any]:
        prompt = state.get("prompt_tokens", 0)
        completion = state.get("completion_tokens", 0)
        adapters = list(state.get("adapters", []))
        for result in results:
            prompt += result.prompt_tokens
            completion += result.completion_tokens
            name = result.adapter or "base"
            if name not in adapters:
                adapters.append(name)
            self.emit(
                LLMToken(
                    task_id=state["task_id"],
                    node_id=where.get("node_id"),
                    stage=where["stage"],
                    text=result.text,
                )
            )
            self.emit(
                LLMCall(
                    task_id=state["task_id"],
                    node_id=where.get("node_id"),
                    stage=where["stage"],
                    adapter=result.adapter,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    latency_s=result.latency_s,
                )
            )
        return {"prompt_tokens": prompt, "completion_tokens": completion, "adapters": adapters}

    # --- stages ----------------------------------------------------------------------------

    @_timed
    def remind(self, state: LoopState) -> dict[str, Any]:
        task_id = state["task_id"]
        task = self.d.store.get_task(task_id)
        reminders = [str(r) for r in (task.metadata or {}).get("reminders", [])]
        cues: list[dict[str, Any]] = []
        update: dict[str, Any] = {}
        for reminder in reminders:
            self.flush(task_id)
            extracted = run_sync(self.d.reminder_adapter.extract(reminder, scope="task"))
            cues.extend(c.model_dump(mode="json") for c in extracted.cues)
            merged: Any = {**state, **update}
            update.update(self._account(merged, extracted.llm_results, stage="remind"))
        if cues:
            self.emit(CuesMade(task_id=task_id, cues=render_cues(cues)))
        root = self.d.store.root(task_id)
        if root.status is not NodeStatus.RUNNING:
            self._set_status(task_id, root.id, NodeStatus.RUNNING, cause="task started")
        if task.status is not TaskStatus.RUNNING:
            self.d.store.set_task_status(task_id, TaskStatus.RUNNING, cause="run started")
        return {**update, "cues": cues}

    @_timed
    def plan(self, state: LoopState) -> dict[str, Any]:
        task_id = state["task_id"]
        store = self.d.store
        env = self.environment(task_id)
        root = store.root(task_id)
        if env is not None:
            children = store.children(root.id)
            if any(c.status in (NodeStatus.PENDING, NodeStatus.READY) for c in children):
                return {"next": "select"}  # this move was planned before a crash
            move = len(children) + 1
            created = store.add_children(
                task_id,
                root.id,
                [
                    NodeSpec(
                        key=f"move{move}",
                        title=f"move {move}: choose and take one action in the game",
                        kind="env",
                        input={"skill": env[1], "args": {}},
                    )
                ],
                cause="next move",
            )
            self.emit(
                PlanMade(
                    task_id=task_id,
                    parent_id=root.id,
                    node_ids=[n.id for n in created],
                    titles=[n.title for n in created],
                )
            )
            return {"next": "select"}
        target_id = state.get("plan_target") or root.id
        target = store.get_node(target_id)
        if store.children(target_id):
            return {"next": "select", "plan_target": None}  # planned before a crash
        if target_id != root.id and target.status is not NodeStatus.RUNNING:
            self._set_status(task_id, target_id, NodeStatus.RUNNING, cause="decompose")
        steps, results, error = self._call_planner(state, target_id, failed=None)
        update = self._account(state, results, stage="plan", node_id=target_id)
        if steps is None:
            reason = f"planning failed: {error}"
            self._set_status(task_id, target_id, NodeStatus.FAILED, cause="plan", error=reason)
            return {**update, "next": "finish", "result": ending("failed", reason)}
        created = store.add_children(task_id, target_id, steps, cause="plan")
        self.emit(
            PlanMade(
                task_id=task_id,
                parent_id=target_id,
                node_ids=[n.id for n in created if n.parent_id == target_id],
                titles=[n.title for n in created if n.parent_id == target_id],
            )
        )
        return {**update, "next": "select", "plan_target": None}

    def _call_planner(
        self, state: LoopState, node_id: int, failed: int | None
    ) -> tuple[list[NodeSpec] | None, list[LLMResult], str | None]:
        self.flush(state["task_id"])
        return plan_specs(self.d, state, node_id, failed=failed)

    @_timed
    def select(self, state: LoopState) -> dict[str, Any]:
        """Pick the next step and take it through route and act. A call that needs neither
        a model answer nor a human's decision also runs and is observed here: every write
        on that path is safe to repeat, so the step costs one superstep (one checkpoint).
        A model's answer or an approval is checkpointed before the call runs."""
        update, node = self._pick(state)
        if node is None:
            return update
        task_id = state["task_id"]
        merged: Any = {**state, **update}
        adapter, route_record = self._route(merged, node)
        call = self._planned_call(task_id, node)
        if call is not None and not self._needs_approval(call):
            attempt, recorded = self._start(task_id, node, call, adapter, route_record)
            return {**update, **self._run(merged, node.id, call, attempt, None, recorded)}
        running = self._set_status(
            task_id, node.id, NodeStatus.RUNNING, cause="act", adapter=adapter, route=route_record
        )
        update.update(adapter=adapter, attempt=running.attempts, decision=None)
        if call is None:
            chosen = self._choose(merged, node, adapter)
            call = chosen.pop("call")
            update.update(chosen)
        next_stage = "approve" if self._needs_approval(call) else "execute"
        return {**update, "call": call, "next": next_stage}

    def _pick(self, state: LoopState) -> tuple[dict[str, Any], NodeRecord | None]:
        """Where the loop goes next, and the step to run when that is one."""
        self._check_database()
        task_id = state["task_id"]
        config = self.d.config
        finish = {"next": "finish", "node_id": None}
        if state.get("steps", 0) >= config.max_steps:
            return {**finish, "result": ending("budget_exhausted", "max_steps reached")}, None
        if state.get("elapsed_s", 0.0) >= config.wall_time_s:
            return {**finish, "result": ending("budget_exhausted", "wall time used up")}, None
        env = self.environment(task_id)
        if env is not None:
            game = env[0].state
            if game.done:
                outcome = "success" if game.success else "failed"
                reason = f"game over, score {game.score:g}"
                return {**finish, "result": ending(outcome, reason)}, None
        ready = self._ready(task_id)
        if not ready and env is None:
            # Only when nothing can run is it worth looking for finished containers: closing
            # one finishes the task or unblocks the steps that wait for it.
            if self._close_containers(task_id) is NodeStatus.DONE:
                return {**finish, "result": ending("success", "every step is done")}, None
            ready = self._ready(task_id)
        if not ready:
            ready = self._orphaned(task_id)
        if ready:
            node = ready[0]
            if node.kind == "decompose" or (node.input or {}).get("skill") == "decompose":
                return {"next": "plan", "plan_target": node.id, "node_id": None}, None
            return {"node_id": node.id}, node
        if env is not None:
            return {"next": "plan", "node_id": None}, None
        failed = [
            n for n in self.d.store.nodes(task_id) if n.status is NodeStatus.FAILED and n.parent_id
        ]
        if failed:
            if state.get("replans", 0) >= config.max_replans:
                reason = f"step {failed[0].id} failed and max_replans is used up"
                return {**finish, "result": ending("failed", reason)}, None
            return {"next": "replan", "failed_node": failed[0].id, "node_id": None}, None
        return {**finish, "result": ending("failed", "no step can run: the plan is stuck")}, None

    def _ready(self, task_id: str) -> list[NodeRecord]:
        return [n for n in self.d.store.ready_nodes(task_id) if n.parent_id is not None]

    def _orphaned(self, task_id: str) -> list[NodeRecord]:
        # A crash between a step's "running" commit and the next checkpoint leaves a leaf
        # step running with no stage driving it. Pick it up again: route tolerates the
        # node already running, and the call log keeps a side effect from running twice.
        nodes = self.d.store.nodes(task_id)
        parents = {n.parent_id for n in nodes}
        return [
            n
            for n in nodes
            if n.status is NodeStatus.RUNNING
            and n.parent_id is not None
            and n.id not in parents
            and n.kind != "decompose"
        ]

    def _close_containers(self, task_id: str) -> NodeStatus:
        # A running node with children (the root, a decomposed or replanned step) is done
        # when all its live children are; deepest first so that completion propagates up.
        nodes = self.d.store.nodes(task_id)
        children: dict[int, list[Any]] = {}
        for n in nodes:
            if n.parent_id is not None:
                children.setdefault(n.parent_id, []).append(n)
        status = {n.id: n.status for n in nodes}
        for node in sorted(nodes, key=lambda n: -n.depth):
            kids = children.get(node.id)
            if (
                status[node.id] is NodeStatus.RUNNING
                and kids
                and all(status[k.id] in _SATISFIED for k in kids)
            ):
                self._set_status(task_id, node.id, NodeStatus.DONE, cause="children done")
                status[node.id] = NodeStatus.DONE
        return next(status[n.id] for n in nodes if n.parent_id is None)

    def _route(self, state: LoopState, node: NodeRecord) -> tuple[str | None, dict[str, Any]]:
        """The adapter for the step (None: the base model) and the router's record of why."""
        task_id = state["task_id"]
        if self.d.router is None:
            self.emit(RouteDecided(task_id=task_id, node_id=node.id, adapter=None, reason=""))
            return None, {"adapter": None, "reason": "no router configured"}
        from trellis.adapters import StepContext

        context = StepContext(
            text=node.title,
            node_kind=node.kind,
            skill=(node.input or {}).get("skill"),
            task_id=task_id,
            node_id=node.id,
        )
        self.flush(task_id)
        decision = run_sync(self.d.router.route(context))
        self.emit(
            RouteDecided(
                task_id=task_id,
                node_id=node.id,
                adapter=decision.adapter,
                score=decision.score,
                reason=decision.reason,
            )
        )
        return decision.adapter, decision.model_dump(mode="json")

    def _planned_call(self, task_id: str, node: NodeRecord) -> dict[str, Any] | None:
        """The call the plan fixed for the step (or why it cannot run); None when the model
        must choose it."""
        planned = node.input or {}
        name = planned.get("skill")
        args = planned.get("args") or {}
        env = self.environment(task_id)
        if env is not None and name == env[1]:
            return None  # the model picks the game action
        registry = self.d.skills
        if isinstance(name, str) and name in registry and self.d.config.use_plan_args:
            try:
                registry.get(name).spec.validate_args(args)
                return {"skill": name, "args": dict(args)}
            except TrellisError:
                pass  # let the model fill in the arguments
        if isinstance(name, str) and name not in registry:
            return {"skill": name, "args": args, **registry_error(registry, name)}
        return None

    def _choose(self, state: LoopState, node: NodeRecord, adapter: str | None) -> dict[str, Any]:
        """Ask the model for the step's call: the token counts and ``call``."""
        task_id, node_id = state["task_id"], node.id
        self.flush(task_id)
        name = (node.input or {}).get("skill")
        env = self.environment(task_id)
        registry = self.d.skills
        if env is not None and name == env[1]:
            game = env[0].state
            history = [
                str(c.args.get("action")) for c in self.d.calls.calls(task_id) if c.skill == env[1]
            ]
            chosen = run_sync(
                choose_call(
                    self.d.backend,
                    prompt_args=env_act_prompt_args(
                        goal=self.d.store.get_task(task_id).goal,
                        environment=env[0],
                        state=game,
                        history=history,
                        cues=render_cues(state.get("cues", [])),
                    ),
                    skills=[registry.get(env[1]).spec],
                    adapter=adapter,
                    env_skill=env[1],
                    valid_actions=offered_actions(env[0], game),
                    max_tokens=self.d.config.act_max_tokens,
                    attempts=self.d.config.act_attempts,
                    timeout_s=self.d.config.llm_timeout_s,
                )
            )
        else:
            specs = [registry.get(name).spec] if isinstance(name, str) else registry.specs()
            context = self.d.store.build_context(node_id, budget_chars=self.d.config.context_chars)
            chosen = run_sync(
                choose_call(
                    self.d.backend,
                    prompt_args={
                        "goal": self.d.store.get_task(task_id).goal,
                        "step": node.title,
                        "cues": render_cues(state.get("cues", [])),
                        "context": str(getattr(context, "text", context)),
                    },
                    skills=specs,
                    adapter=adapter,
                    max_tokens=self.d.config.act_max_tokens,
                    attempts=self.d.config.act_attempts,
                    timeout_s=self.d.config.llm_timeout_s,
                )
            )
        update = self._account(state, chosen.llm, stage="act", node_id=node_id)
        call: dict[str, Any] = {"skill": chosen.skill, "args": chosen.args}
        if chosen.error is not None:
            call.update(error=chosen.error, error_type=chosen.error_type)
        return {**update, "call": call}

    def _needs_approval(self, call: dict[str, Any]) -> bool:
        name = call.get("skill")
        if call.get("error") or not isinstance(name, str) or name not in self.d.skills:
            return False
        return self.d.skills.get(name).spec.needs_approval

    def _recorded(self, call: dict[str, Any]) -> bool:
        """Whether running ``call`` goes through the exactly-once record."""
        name = call.get("skill")
        if call.get("error") or not isinstance(name, str) or name not in self.d.skills:
            return False
        return self.d.skills.get(name).spec.side_effects

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
                call_key=_call_key(task_id, node.id, attempt),
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

    @_timed
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
        key = _call_key(task_id, node_id, attempt)
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

    @_timed
    def replan(self, state: LoopState) -> dict[str, Any]:
        task_id = state["task_id"]
        failed_id = state.get("failed_node")
        failed_id = require(failed_id)
        failed = self.d.store.get_node(failed_id)
        replans = state.get("replans", 0) + 1
        if failed.status is NodeStatus.RUNNING:
            return {"next": "select", "failed_node": None, "replans": replans}  # done pre-crash
        steps, results, error = self._call_planner(state, failed_id, failed=failed_id)
        update = self._account(state, results, stage="plan", node_id=failed_id)
        if steps is None:
            reason = f"replanning step {failed_id} failed: {error}"
            return {
                **update,
                "next": "finish",
                "replans": replans,
                "result": ending("failed", reason),
            }
        # Each write below is safe to repeat if the process died between them.
        self._set_status(task_id, failed_id, NodeStatus.PENDING, cause="replan")
        created = self.d.store.replace_subtree(failed_id, steps, cause="replan")
        self._set_status(task_id, failed_id, NodeStatus.RUNNING, cause="replanned")
        self.emit(
            PlanMade(
                task_id=task_id,
                parent_id=failed_id,
                node_ids=[n.id for n in created if n.parent_id == failed_id],
                titles=[n.title for n in created if n.parent_id == failed_id],
                replan=True,
            )
        )
        return {**update, "next": "select", "failed_node": None, "replans": replans}

    @_timed
    def finish(self, state: LoopState) -> dict[str, Any]:
        task_id = state["task_id"]
        result = dict(state.get("result") or ending("failed", "finished without a result"))
        success = result["outcome"] == "success"
        root = self.d.store.root(task_id)
        if root.status not in (NodeStatus.DONE, NodeStatus.FAILED):
            if root.status is not NodeStatus.RUNNING:
                self._set_status(task_id, root.id, NodeStatus.RUNNING, cause="finish")
            final = NodeStatus.DONE if success else NodeStatus.FAILED
            error = None if success else f"{result['outcome']}: {result['reason']}"
            self._set_status(task_id, root.id, final, cause=result["reason"], error=error)
        status = TaskStatus.DONE if success else TaskStatus.FAILED
        if self.d.store.get_task(task_id).status is not status:
            self.d.store.set_task_status(task_id, status, cause=result["reason"])
        env = self.d.envs.pop(task_id, None)
        if env is not None:
            env[0].close()
        self.emit(
            TaskFinished(
                task_id=task_id,
                outcome=result["outcome"],
                success=success,
                steps=state.get("steps", 0),
                replans=state.get("replans", 0),
                adapters=list(state.get("adapters", [])),
                prompt_tokens=state.get("prompt_tokens", 0),
                completion_tokens=state.get("completion_tokens", 0),
                elapsed_s=state.get("elapsed_s", 0.0),
                reason=result["reason"],
            )
        )
        return {"result": result, "next": "end"}
