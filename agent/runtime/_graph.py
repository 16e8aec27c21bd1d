"""The LangGraph StateGraph of the loop, its checkpointer, and how one run is driven.

remind -> plan -> select -> select ... -> finish. One ``select`` superstep takes a step
through select, route, act, execute and observe when its call is fixed by the plan; a call
the model chose, or one that needs approval, is checkpointed first and runs in ``execute``
(after ``approve``). select also leads to plan (decompose a step, or the next environment
move), replan (a step failed) and finish. Each superstep writes one checkpoint, so fewer
supersteps per step is most of the loop's overhead. The thread id is the task id; the
checkpointer lives in the same database as the Task Memory Tree.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Annotated, Any, TypedDict, cast

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from trellis.agent.runtime._checkpoint import CheckpointHandle, open_checkpointer, prune_checkpoints
from trellis.agent.runtime._loop import Stages
from trellis.agent.runtime._loop_state import LoopDeps, LoopState

__all__ = ["LoopGraph"]

_SELECT_ROUTES: dict[Hashable, str] = {
    "select": "select",
    "approve": "approve",
    "execute": "execute",
    "plan": "plan",
    "replan": "replan",
    "finish": "finish",
}

_AFTER_PLAN: dict[Hashable, str] = {"select": "select", "finish": "finish"}


_STAGES = ("remind", "plan", "select", "approve", "execute", "replan", "finish")


def _merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    return {**(old or {}), **new}


class GraphState(TypedDict):
    """One channel: each stage writes one merged update, so a step costs one write per stage."""

    loop: Annotated[dict[str, Any], _merge]


def _one_channel(stage: Callable[[LoopState], dict[str, Any]]) -> Callable[[GraphState], Any]:
    def node(state: GraphState) -> dict[str, Any]:
        return {"loop": stage(cast(LoopState, state["loop"]))}

    node.__name__ = getattr(stage, "__name__", "stage")
    return node


def _next(state: GraphState) -> str:
    return str(state["loop"].get("next", "finish"))


class LoopGraph:
    """The compiled loop graph on the Trellis database, and the operations on a task's thread."""

    def __init__(self, deps: LoopDeps) -> None:
        self.deps = deps
        self.handle: CheckpointHandle = open_checkpointer(deps.store.engine)
        self._prune_lock = threading.Lock()
        deps.prune = self.prune
        stages = Stages(deps)
        graph = StateGraph(GraphState)
        for name in _STAGES:
            graph.add_node(name, cast(Any, _one_channel(getattr(stages, name))))
        graph.add_edge(START, "remind")
        graph.add_edge("remind", "plan")
        graph.add_conditional_edges("plan", _next, _AFTER_PLAN)
        graph.add_conditional_edges("select", _next, _SELECT_ROUTES)
        graph.add_edge("approve", "execute")
        graph.add_edge("execute", "select")
        graph.add_conditional_edges("replan", _next, _AFTER_PLAN)
        graph.add_edge("finish", END)
        self.graph = graph.compile(checkpointer=self.handle.saver)

    def config(self, task_id: str) -> RunnableConfig:
        # An act step takes one to four supersteps (an environment move: select, plan,
        # select, execute); leave room for decomposed steps, plans and replans.
        limit = 8 * self.deps.config.max_steps + 12 * (self.deps.config.max_replans + 1) + 50
        return cast(
            RunnableConfig, {"configurable": {"thread_id": task_id}, "recursion_limit": limit}
        )

    def drive(self, task_id: str, command: Any) -> None:
        """Run the task's thread until it finishes or waits for an approval (blocking)."""
        if command is None:
            payload: Any = None
        elif isinstance(command, Command):
            payload = command
        else:
            payload = {"loop": {"task_id": task_id, **command}}
        try:
            for _update in self.graph.stream(
                cast(Any, payload),
                self.config(task_id),
                stream_mode="updates",
                durability=self.deps.config.durability,
            ):
                self._flush(task_id)
        finally:
            self._flush(task_id)
        if self.finished_result(task_id) is not None:
            keep = self.deps.config.keep_checkpoints
            if keep is not None:
                self.prune(task_id, keep)

    def _flush(self, task_id: str) -> None:
        sink = self.deps.sinks.get(task_id)
        if sink is not None:
            sink.flush()

    def values(self, task_id: str) -> dict[str, Any]:
        """The latest checkpointed state of the task (empty when it has none)."""
        snapshot = self.graph.get_state(self.config(task_id))
        return dict((snapshot.values or {}).get("loop") or {})

    def has_checkpoint(self, task_id: str) -> bool:
        return self.handle.saver.get_tuple(self.config(task_id)) is not None

    def pending_approval(self, task_id: str) -> dict[str, Any] | None:
        """The call waiting for approval, if the task is paused on one."""
        snapshot = self.graph.get_state(self.config(task_id))
        for task in snapshot.tasks:
            for pending in task.interrupts:
                value = pending.value
                return dict(value) if isinstance(value, dict) else {"value": value}
        return None

    def finished_result(self, task_id: str) -> dict[str, Any] | None:
        values = self.values(task_id)
        if values.get("next") == "end" and values.get("result"):
            return dict(values["result"])
        return None

    def prune(self, task_id: str, keep: int) -> None:
        with self._prune_lock:
            prune_checkpoints(self.handle, task_id, keep)

    def close(self) -> None:
        self.handle.close()
