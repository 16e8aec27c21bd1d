"""The stages of the agent loop, as plain functions over a small state.

The LangGraph state holds ids and counters only; the Task Memory Tree is the durable
record. Every stage is safe to run again after a crash: structural writes check what is
already in the tree, status changes skip when the node is already there, and
side-effecting skill calls go through the exactly-once record (:mod:`trellis.agent.runtime._calls`).
"""

from __future__ import annotations

import logging
from typing import Any

from trellis.adapters import LLMResult
from trellis.agent.env import EnvState
from trellis.agent.runtime._env_plan import PART_KIND, EnvPlanner
from trellis.agent.runtime._events import (
    CuesMade,
    PlanMade,
    TaskFinished,
)
from trellis.agent.runtime._loop_state import STANDING_CUES_KEY, LoopState, ending, require
from trellis.agent.runtime._planning import plan_specs, render_cues, settle_cases
from trellis.agent.runtime._stage_act import ActStages
from trellis.agent.runtime._stage_base import SATISFIED, timed
from trellis.agent.runtime._stage_call import CallStages
from trellis.memory import NodeRecord, NodeSpec, NodeStatus, TaskStatus, run_sync
from trellis.planners import CueStore

__all__ = ["Stages"]

_log = logging.getLogger(__name__)


class Stages(ActStages, CallStages):
    """The graph's node functions (sync: LangGraph runs them in the run's worker thread)."""

    # --- stages ----------------------------------------------------------------------------

    @timed
    def remind(self, state: LoopState) -> dict[str, Any]:
        task_id = state["task_id"]
        task = self.d.store.get_task(task_id)
        reminders = [str(r) for r in (task.metadata or {}).get("reminders", [])]
        # The user's stored cues (``trellis cues add``) hold in every task of theirs; the
        # task's own reminders follow, so a prompt lists the standing rules first.
        metadata = task.metadata or {}
        if STANDING_CUES_KEY in metadata:  # taken when the task was created (the SDK)
            stored = [dict(c) for c in metadata[STANDING_CUES_KEY]]
        else:  # a task created elsewhere (the service's queue): the cues in force now
            standing = self.d.standing_cues or CueStore(self.d.store.engine).active_cues
            stored = [c.model_dump(mode="json") for c in standing(task.user_id, task_id)]
        cues: list[dict[str, Any]] = list(stored)
        update: dict[str, Any] = {}
        for reminder in reminders:
            self.flush(task_id)
            extracted = run_sync(self.d.reminder_adapter.extract(reminder, scope="task"))
            cues.extend(c.model_dump(mode="json") for c in extracted.cues)
            merged: Any = {**state, **update}
            update.update(self._account(merged, extracted.llm_results, stage="remind"))
        if cues:
            self.emit(CuesMade(task_id=task_id, cues=render_cues(cues), standing=stored))
        root = self.d.store.root(task_id)
        if root.status is not NodeStatus.RUNNING:
            self._set_status(task_id, root.id, NodeStatus.RUNNING, cause="task started")
        if task.status is not TaskStatus.RUNNING:
            self.d.store.set_task_status(task_id, TaskStatus.RUNNING, cause="run started")
        return {**update, "cues": cues}

    @timed
    def plan(self, state: LoopState) -> dict[str, Any]:
        task_id = state["task_id"]
        store = self.d.store
        env = self.environment(task_id)
        root = store.root(task_id)
        if env is not None:
            created = EnvPlanner(self).plan_move(task_id, env[0], env[1])
            for parent_id in dict.fromkeys(n.parent_id for n in created if n.parent_id):
                self.emit(
                    PlanMade(
                        task_id=task_id,
                        parent_id=parent_id,
                        node_ids=[n.id for n in created if n.parent_id == parent_id],
                        titles=[n.title for n in created if n.parent_id == parent_id],
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

    @timed
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
        if call is not None and not call.get("error"):
            if adapter is not None:
                call = None  # the routed adapter fills the step's arguments (it knows the task)
            elif self._cue_problems(merged)(str(call["skill"]), call.get("args") or {}):
                call = None  # the plan's call breaks a cue: the model is asked for another
        if call is not None and not self._needs_approval(call):
            attempt, recorded = self._start(task_id, node, call, adapter, route_record)
            return {**update, **self._run(merged, node.id, call, attempt, None, recorded)}
        running = self._set_status(
            task_id, node.id, NodeStatus.RUNNING, cause="act", adapter=adapter, route=route_record
        )
        update.update(adapter=adapter, attempt=running.attempts, decision=None)
        if call is None:
            chosen = self._choose(merged, node, adapter, why=str(route_record.get("reason") or ""))
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
        env = self.environment(task_id)
        game = env[0].state if env is not None else None
        if game is not None and game.done:
            outcome = "success" if game.success else "failed"
            reason = f"game over, score {game.score:g}"
            return {**finish, "result": ending(outcome, reason)}, None
        budget = self.budget(game)
        if state.get("steps", 0) >= budget:
            why = "the world's move limit reached" if budget != config.max_steps else "max_steps"
            return {**finish, "result": ending("budget_exhausted", f"{why} ({budget})")}, None
        if state.get("elapsed_s", 0.0) >= config.wall_time_s:
            return {**finish, "result": ending("budget_exhausted", "wall time used up")}, None
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

    def budget(self, game: EnvState | None) -> int:
        """The task's action budget: the world's own move limit (``AgentConfig.env_budget``),
        else ``max_steps``."""
        config = self.d.config
        if game is not None and game.move_limit and config.env_budget == "world":
            return game.move_limit
        return config.max_steps

    def _ready(self, task_id: str) -> list[NodeRecord]:
        # A part of an environment goal groups moves; it is never run itself.
        return [
            n
            for n in self.d.store.ready_nodes(task_id)
            if n.parent_id is not None and n.kind != PART_KIND
        ]

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
            and n.kind not in ("decompose", PART_KIND)
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
                and all(status[k.id] in SATISFIED for k in kids)
            ):
                self._set_status(task_id, node.id, NodeStatus.DONE, cause="children done")
                status[node.id] = NodeStatus.DONE
        return next(status[n.id] for n in nodes if n.parent_id is None)

    @timed
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

    @timed
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
            EnvPlanner(self).finish(task_id, env[0])
            env[0].close()
        elif result["outcome"] != "interrupted":
            try:
                settle_cases(self.d, task_id, success, list(state.get("cues", [])))
            except Exception as exc:  # learning from the task must never fail the task
                _log.warning("past cases of task %s were not updated: %s", task_id, exc)
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
