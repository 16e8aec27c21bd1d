"""The LangGraph StateGraph of the loop, its checkpointer, and how one run is driven.

remind -> plan -> select -> select ... -> finish. One ``select`` superstep takes a step
through select, route, act, execute and observe when its call is fixed by the plan; a call
the model chose, or one that needs approval, is checkpointed first and runs in ``execute``
(after ``approve``). select also leads to plan (decompose a step, or the next environment
move), replan (a step failed) and finish. Each superstep writes one checkpoint, so fewer
supersteps per step is most of the loop's overhead. The thread id is the task id; the
checkpointer lives in the same database as the Task Memory Tree.

A task may have a fence (the service's lease): it is checked before every stage, before a
skill runs and before its outcome is written, and raises when this process may no longer
write to the task (another worker took it over), so a paused worker that wakes up late
stops instead of running steps a second time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Annotated, Any, TypedDict, cast

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from trellis.agent.runtime._checkpoint import CheckpointHandle, open_checkpointer, prune_checkpoints
from trellis.agent.runtime._loop import Stages
from trellis.agent.runtime._loop_state import LoopDeps, LoopState
from trellis.memory import (
    DatabaseUnavailable,
    describe_db_error,
    is_transient,
    retry_budget,
    retry_transient,
    wait_until_reachable,
)

__all__ = ["LoopGraph"]

log = logging.getLogger("trellis.agent")

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


Fence = Callable[[], None]
"""Raises (e.g. ``LeaseLostError``) when this process may no longer write to a task."""


def _one_channel(
    stage: Callable[[LoopState], dict[str, Any]], fence: Callable[[str], None]
) -> Callable[[GraphState], Any]:
    def node(state: GraphState) -> dict[str, Any]:
        loop = cast(LoopState, state["loop"])
        fence(str(loop.get("task_id", "")))
        return {"loop": stage(loop)}

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
        self.fences: dict[str, Fence] = {}
        """Per task: checked before every stage, skill call and outcome write."""
        self._progress: dict[str, int] = {}
        """Supersteps completed per task (tells a new outage from the same one)."""
        deps.prune = self.prune
        stages = Stages(deps)
        stages.fence_check = self.check_fence
        graph = StateGraph(GraphState)
        for name in _STAGES:
            graph.add_node(name, cast(Any, _one_channel(getattr(stages, name), self.check_fence)))
        graph.add_edge(START, "remind")
        graph.add_edge("remind", "plan")
        graph.add_conditional_edges("plan", _next, _AFTER_PLAN)
        graph.add_conditional_edges("select", _next, _SELECT_ROUTES)
        graph.add_edge("approve", "execute")
        graph.add_edge("execute", "select")
        graph.add_conditional_edges("replan", _next, _AFTER_PLAN)
        graph.add_edge("finish", END)
        self.graph = graph.compile(checkpointer=self.handle.saver)

    def check_fence(self, task_id: str) -> None:
        """Raise when the task's fence says this process may no longer write to it."""
        fence = self.fences.get(task_id)
        if fence is not None:
            fence()

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
                self._progress[task_id] = self._progress.get(task_id, 0) + 1
                self._flush(task_id)
        finally:
            self._flush(task_id)
        if self.finished_result(task_id) is not None:
            keep = self.deps.config.keep_checkpoints
            if keep is not None:
                self.prune(task_id, keep)

    def drive_until_done(self, task_id: str, start: Any) -> None:
        """:meth:`drive`, riding out a dropped or unreachable database.

        A run that fails on a lost connection resumes from its last checkpoint as soon as
        the database answers again, exactly as after a crash (every stage is safe to run
        again, a side-effecting call cut off is never repeated). After ``retry_s``
        (``DatabaseConfig``) without progress it raises :class:`DatabaseUnavailable`
        naming ``resume``.
        """
        engine = self.deps.store.engine
        payload = start
        first_failure: float | None = None
        progress = self._progress.get(task_id, 0)
        try:
            while True:
                try:
                    self.drive(task_id, payload)
                    return
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    now = time.monotonic()
                    if first_failure is None or self._progress.get(task_id, 0) > progress:
                        first_failure = now  # progress since the last failure: a new outage
                    progress = self._progress.get(task_id, 0)
                    remaining = retry_budget(engine) - (now - first_failure)
                    detail = describe_db_error(exc)
                    if remaining <= 0:
                        raise DatabaseUnavailable(
                            detail, task_id=task_id, waited_s=now - first_failure
                        ) from exc
                    log.warning(
                        "database connection lost; resuming from the last checkpoint",
                        extra={"task_id": task_id, "error": detail},
                    )
                    self._forget(task_id)
                    try:
                        wait_until_reachable(engine, budget_s=remaining, task_id=task_id)
                        payload = self._restart_payload(task_id, start)
                    except DatabaseUnavailable as down:
                        raise DatabaseUnavailable(
                            down.detail, task_id=task_id, waited_s=time.monotonic() - first_failure
                        ) from exc
        finally:
            self._progress.pop(task_id, None)

    def _forget(self, task_id: str) -> None:
        """Drop what this process holds of a task in memory: as after a crash, its
        environment is rebuilt from the call log when the run resumes."""
        env = self.deps.envs.pop(task_id, None)
        if env is not None:
            try:
                env[0].close()
            except Exception:
                log.exception("closing an environment failed", extra={"task_id": task_id})

    def _restart_payload(self, task_id: str, start: Any) -> Any:
        """What to drive with after a failure: the same approval answer while its interrupt
        is still pending, the first input when no checkpoint was written, else nothing
        (resume from the last checkpoint)."""
        if start is None:
            return None
        if isinstance(start, Command):
            return start if self.pending_approval(task_id) is not None else None
        return None if self.has_checkpoint(task_id) else start

    def _flush(self, task_id: str) -> None:
        sink = self.deps.sinks.get(task_id)
        if sink is not None:
            sink.flush()

    def _state(self, task_id: str) -> Any:
        # Reads retry a dropped connection like every store call (the pool replaces it).
        return retry_transient(
            lambda: self.graph.get_state(self.config(task_id)), engine=self.deps.store.engine
        )

    def values(self, task_id: str) -> dict[str, Any]:
        """The latest checkpointed state of the task (empty when it has none)."""
        snapshot = self._state(task_id)
        return dict((snapshot.values or {}).get("loop") or {})

    def has_checkpoint(self, task_id: str) -> bool:
        return (
            retry_transient(
                lambda: self.handle.saver.get_tuple(self.config(task_id)),
                engine=self.deps.store.engine,
            )
            is not None
        )

    def pending_approval(self, task_id: str) -> dict[str, Any] | None:
        """The call waiting for approval, if the task is paused on one."""
        snapshot = self._state(task_id)
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
