"""The helpers every loop stage shares (see :mod:`trellis.agent.runtime._loop`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trellis.adapters import LLMResult
from trellis.agent.env import Environment
from trellis.agent.errors import EnvironmentFailure
from trellis.agent.runtime._events import (
    EventBase,
    LLMCall,
    LLMToken,
    NodeStatusChanged,
)
from trellis.agent.runtime._loop_state import LoopDeps, LoopState
from trellis.memory import NodeRecord, NodeStatus
from trellis.memory.errors import (
    IllegalTransitionError,
    RuntimeFailure,
)

__all__ = ["SATISFIED", "StageBase", "call_key", "timed"]

SATISFIED = {NodeStatus.DONE, NodeStatus.SKIPPED}


def call_key(task_id: str, node_id: int, attempt: int) -> str:
    """The exactly-once record's key: one call per attempt of a step."""
    return f"{task_id}:{node_id}:{attempt}"


def timed(stage: Callable[[Any, LoopState], dict[str, Any]]) -> Any:
    def wrapper(self: StageBase, state: LoopState) -> dict[str, Any]:
        started = time.perf_counter()
        update = stage(self, state)
        update["elapsed_s"] = (
            update.get("elapsed_s", state.get("elapsed_s", 0.0)) + time.perf_counter() - started
        )
        return update

    wrapper.__name__ = stage.__name__
    return wrapper


class StageBase:
    """What every stage shares: the dependencies, event emission, status changes, the task's
    environment and token accounting."""

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

    def _stage_why(self, stage: str) -> str:
        """Why a plan or remind call went to its adapter: the stage's own adapter, if any."""
        part = self.d.planner if stage == "plan" else self.d.reminder_adapter
        name = getattr(getattr(part, "inner", part), "adapter", None)
        if name:
            return f"the {stage} stage's adapter {name!r}"
        return f"no adapter for the {stage} stage: base model"

    def _account(self, state: LoopState, results: list[LLMResult], **where: Any) -> dict[str, Any]:
        prompt = state.get("prompt_tokens", 0)
        completion = state.get("completion_tokens", 0)
        adapters = list(state.get("adapters", []))
        why = where.get("why") or self._stage_why(where["stage"])
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
                    why=why,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    latency_s=result.latency_s,
                )
            )
        return {"prompt_tokens": prompt, "completion_tokens": completion, "adapters": adapters}

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
