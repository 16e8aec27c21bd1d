"""The Python SDK: ``Agent`` runs goals through the loop on the Trellis database.

Three lines run a task with the embedded defaults (SQLite file in TRELLIS_HOME, the
prepared gemma-3-270m in process, the registered adapters)::

    from trellis.agent import Agent
    result = Agent().run("put the dirty mug in the dishwasher")
    print(result.success, result.steps)

Apps register their own skills (``@skill``), adapters and reminders; tests and fixed
procedures pass a scripted model (``adapters.FunctionBackend``) and a scripted planner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from langgraph.types import Command
from pydantic import BaseModel, ConfigDict

from trellis.adapters import LLMBackend
from trellis.agent.env import Environment, EnvironmentPack, EnvironmentRegistry, EnvSpec
from trellis.agent.errors import ApprovalPendingError, NoPendingApprovalError
from trellis.agent.runtime._calls import EffectCheck
from trellis.agent.runtime._config import AgentConfig
from trellis.agent.runtime._defaults import default_reminder_adapter
from trellis.agent.runtime._env_skill import action_skill
from trellis.agent.runtime._events import AgentEvent, TaskFinished, TaskStarted
from trellis.agent.runtime._graph import LoopGraph
from trellis.agent.runtime._loop_state import STANDING_CUES_KEY, LoopDeps
from trellis.agent.runtime._runs import EventPipe, Turn, wait_all
from trellis.agent.runtime._skills import Skill, SkillLike, SkillRegistry
from trellis.memory import (
    START_KEY,
    NodeRecord,
    TaskRecord,
    TaskStatus,
    TaskStore,
    fact_rows,
    run_sync,
)
from trellis.memory.errors import UsageError
from trellis.planners import CueStore

__all__ = ["Agent", "RunResult", "TaskTree", "set_trace_recorder"]


class TraceRecorderFunction(Protocol):
    """Records one run of an agent to a trace file (``trellis.agent.traces.record_run``)."""

    def __call__(
        self,
        agent: Agent,
        path: str | os.PathLike[str],
        goal: str | None = None,
        *,
        reminders: Iterable[str] = (),
        env: EnvSpec | Mapping[str, Any] | None = None,
        user_id: str = "default",
    ) -> Awaitable[RunResult]: ...


# The runtime does not import the trace package (traces build on the runtime); the trace
# package installs its recorder here, and ``trellis.agent`` always imports it.
_trace_recorder: TraceRecorderFunction | None = None


def set_trace_recorder(recorder: TraceRecorderFunction) -> None:
    """Install what ``Agent.run(goal, trace=PATH)`` records with."""
    global _trace_recorder
    _trace_recorder = recorder


class RunResult(BaseModel):
    """How a run ended."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    """The task (use it with ``resume``, ``tree``, ``approve``)."""
    outcome: str
    """``success``, ``failed``, ``budget_exhausted`` or ``interrupted`` (waiting for approval)."""
    success: bool
    """Whether the goal was achieved."""
    steps: int
    """Skill calls made."""
    replans: int
    """Plan repairs."""
    adapters: list[str]
    """Adapters used (``base``: the base model)."""
    prompt_tokens: int
    """Prompt tokens over all model calls."""
    completion_tokens: int
    """Generated tokens."""
    elapsed_s: float
    """Seconds in the loop over all resumes."""
    reason: str
    """Why it ended."""
    pending_approval: dict[str, Any] | None = None
    """The call waiting for a human, when ``outcome`` is ``interrupted``."""


@dataclass(frozen=True)
class TaskTree:
    """A task and its nodes (superseded ones included, marked), as stored."""

    task: TaskRecord
    nodes: list[NodeRecord]

    def live(self) -> list[NodeRecord]:
        """Nodes not replaced by replanning."""
        return [n for n in self.nodes if not n.superseded]

    def env_actions(self) -> list[str]:
        """The moves the environment accepted, in order (superseded nodes included: a move
        made in the environment cannot be unmade by replanning)."""
        return [
            str(node.output["result"]["action"])
            for node in self.nodes
            if node.kind == "env"
            and isinstance(node.output, dict)
            and isinstance(node.output.get("result"), dict)
            and "action" in node.output["result"]
        ]


class Agent:
    """Runs goals as tasks: plan, route, act, observe, replan, with durable state."""

    def __init__(
        self,
        *,
        config: AgentConfig | None = None,
        skills: Iterable[SkillLike] = (),
        backend: LLMBackend | None = None,
        planner: Any = None,
        router: Any = None,
        reminder_adapter: Any = None,
        store: TaskStore | None = None,
        skill_context: dict[str, Any] | None = None,
        environments: Iterable[EnvironmentPack] = (),
        effect_check: EffectCheck | None = None,
        cases: Any = None,
    ) -> None:
        """``cases``: the users' past successes (a ``trellis.planners.CaseMemory``), shown to
        the planner as examples and updated when tasks end; by default (``past_cases`` in the
        config) the default planner gets one on the agent's database.

        ``environments``: packs this agent can run tasks in, beside the installed ones
        (entry-point group ``trellis.environments``); a pack given here wins over an
        installed pack of the same kind.

        ``effect_check(idempotency_key, skill, args)``: asked about a side-effecting call
        whose outcome was lost (the process stopped during it, or it timed out) before the
        planner decides: True (it acted: the step is done), False (it did not: the step
        failed and may be retried), None (unknown). Skills see the key as
        ``SkillContext.idempotency_key``."""
        self.config = config or AgentConfig()
        self.environments = EnvironmentRegistry(environments)
        self.store = store or TaskStore.open(self.config.database_url)
        self.skills = SkillRegistry(skills)
        self._backend = backend
        self._planner = planner
        self._router = router
        self._reminder_adapter = reminder_adapter
        self._defaults_ready = False
        self.deps = LoopDeps(
            store=self.store,
            skills=self.skills,
            backend=backend,  # type: ignore[arg-type]  # filled lazily by _ensure_defaults
            planner=planner,
            router=router,
            # Rules until _ensure_defaults knows whether a reminder adapter is registered.
            reminder_adapter=reminder_adapter or default_reminder_adapter(),
            config=self.config,
            env_factory=self._env_factory,
            skill_context=dict(skill_context or {}),
        )
        self.deps.calls.effect_check = effect_check
        self.deps.cases = cases
        self._runs: dict[int, threading.Event] = {}
        """Runs starting or going, each set when it ends (see ``_take_turn``)."""
        self.loop_graph = LoopGraph(self.deps)

    def _env_factory(self, spec: dict[str, Any]) -> tuple[Environment, str]:
        """Rebuild a task's environment from its recorded spec (resume, replay)."""
        pack, validated = self.environments.for_spec(spec)
        return pack.create(validated), self._register_pack(pack)

    def _register_pack(self, pack: EnvironmentPack) -> str:
        """Make the pack's action skill available; its name."""
        if pack.skill_name not in self.skills:
            self.skills.register(action_skill(pack))
        return pack.skill_name

    # --- defaults --------------------------------------------------------------------------

    def _ensure_defaults(self) -> None:
        """Fill in what the caller left out: backend, planner, router, reminder adapter."""
        if self._defaults_ready:
            return
        from trellis.agent.runtime import _defaults

        shipped = self.config.shipped_adapters
        if shipped is None:  # auto: only a backend built here is known to load them
            shipped = self.deps.backend is None
        registry = None
        if (
            self.deps.backend is None
            or self.deps.planner is None
            or self._router is None
            or self._reminder_adapter is None
        ):
            registry = _defaults.default_registry(self.store.engine, shipped=shipped)
        if self.deps.backend is None:
            self.deps.backend = _defaults.default_backend(registry)
        if self.deps.planner is None:
            self.deps.planner = _defaults.default_planner(
                self.deps.backend, registry, shipped=shipped
            )
        if self.deps.router is None and self._router is None:
            self.deps.router = _defaults.default_router(
                self.store.engine, self.deps.backend, registry, shipped=shipped
            )
        if self._reminder_adapter is None:
            self.deps.reminder_adapter = _defaults.default_reminder_adapter(
                self.deps.backend, registry, shipped=shipped
            )
        if self.deps.cases is None and self._planner is None and self.config.past_cases:
            self.deps.cases = _defaults.default_cases(self.store.engine)
        self._defaults_ready = True

    def register(self, item: SkillLike, *, replace: bool = False) -> Skill:
        """Add a skill (or a plain typed function) to this agent."""
        return self.skills.register(item, replace=replace)

    # --- running ---------------------------------------------------------------------------

    def _new_task(
        self,
        goal: str | None,
        reminders: Iterable[str],
        user_id: str,
        env: Any,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        # One reminder given as a plain string is that reminder, not a list of characters.
        given = [reminders] if isinstance(reminders, str) else list(reminders)
        metadata: dict[str, Any] = {"reminders": [str(r) for r in given]}
        # The user's stored cues are taken now, in the caller's thread: the task keeps the
        # rules in force when it was asked, through resumes.
        standing = self.deps.standing_cues or CueStore(self.store.engine).active_cues
        metadata[STANDING_CUES_KEY] = [c.model_dump(mode="json") for c in standing(user_id, None)]
        if labels:
            metadata["labels"] = {str(k): str(v) for k, v in labels.items()}
        environment: tuple[Environment, str] | None = None
        if env is not None:
            pack, spec = self.environments.for_spec(env)
            created = pack.create(spec)
            try:
                state = created.reset()
            except BaseException:
                created.close()
                raise
            environment = (created, self._register_pack(pack))
            goal = goal or state.task_description
            metadata["env"] = spec.record()
            facts = fact_rows(created.observed_facts(state))
            if facts:  # the world memory starts with what the starting state shows
                metadata[START_KEY] = facts
        if not goal or not goal.strip():
            if environment is not None:
                environment[0].close()
            raise UsageError("the goal is empty: say what the task should achieve")
        task = self.store.create_task(goal.strip(), user_id=user_id, metadata=metadata)
        if environment is not None:
            self.deps.envs[task.id] = environment
        return task.id

    async def stream(
        self,
        goal: str | None = None,
        *,
        reminders: Iterable[str] = (),
        user_id: str = "default",
        env: EnvSpec | Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> AsyncIterator[AgentEvent]:
        """Run a new task, yielding typed events; the last one is :class:`TaskFinished`.

        ``labels`` are stored with the task (``TaskRecord.metadata["labels"]``) for the app
        that resumes it; the CLI keeps its ``--skills`` modules there.
        """
        turn = await self._take_turn()
        try:
            task_id = self._new_task(goal, reminders, user_id, env, labels)
        except BaseException:
            turn.end()
            raise
        # aclosing: a consumer that stops early still ends the run's generator at once.
        async with contextlib.aclosing(self._drive(task_id, {}, turn=turn)) as events:
            async for event in events:
                yield event

    async def stream_resume(
        self, task_id: str, *, command: Any = None, fence: Callable[[], None] | None = None
    ) -> AsyncIterator[AgentEvent]:
        """Continue a task from its last checkpoint, yielding events.

        ``fence``: called before every stage, skill call and outcome write; it raises (the
        service's ``LeaseLostError``) when this process may no longer write to the task, and
        the run stops there."""
        turn = await self._take_turn()
        try:
            resumed = self._resume_events(task_id, command, fence, turn)
            async with contextlib.aclosing(resumed) as events:
                async for event in events:
                    yield event
        finally:
            turn.end()  # when the run never started (a finished task, a refusal)

    async def _resume_events(
        self,
        task_id: str,
        command: Any,
        fence: Callable[[], None] | None,
        turn: Turn,
    ) -> AsyncGenerator[AgentEvent, None]:
        task = self.store.get_task(task_id)  # UnknownTaskError names the fix
        if (
            command is None
            and task.status in (TaskStatus.DONE, TaskStatus.FAILED)
            and self.loop_graph.finished_result(task_id) is None
        ):
            # Finished earlier and its checkpoints were pruned: the tree has the answer.
            yield self._finished_from_tree(task_id)
            return
        if command is None:
            pending = self.loop_graph.pending_approval(task_id)
            if pending is not None:
                raise ApprovalPendingError(task_id, str(pending.get("skill")))
            if self.loop_graph.finished_result(task_id) is not None:
                yield self._finished_event(task_id)
                return
            start: Any = None if self.loop_graph.has_checkpoint(task_id) else {}
        else:
            start = command
        async with contextlib.aclosing(
            self._drive(task_id, start, resumed=True, fence=fence, turn=turn)
        ) as events:
            async for event in events:
                yield event

    async def _take_turn(self) -> Turn:
        """Register a run about to start. An in-memory SQLite database is one shared
        connection, so its runs take turns: this waits for the runs still going on it (a run
        whose consumer stopped reading goes on to its end in the background)."""
        url = self.store.engine.url
        in_memory = url.get_backend_name() == "sqlite" and (url.database or "") in ("", ":memory:")
        while in_memory and self._runs:
            await asyncio.to_thread(wait_all, list(self._runs.values()))
        # Registered before any other await: a run that starts next sees this one.
        turn = Turn(self._runs)
        return turn

    async def _drive(
        self,
        task_id: str,
        start: Any,
        *,
        resumed: bool = False,
        fence: Callable[[], None] | None = None,
        turn: Turn,
    ) -> AsyncGenerator[AgentEvent, None]:
        try:
            self._ensure_defaults()
            loop = asyncio.get_running_loop()
            pipe = EventPipe(loop)
            self.deps.sinks[task_id] = pipe
            goal = self.store.get_task(task_id).goal
            yield TaskStarted(task_id=task_id, goal=goal, resumed=resumed)
        except BaseException:
            self.deps.sinks.pop(task_id, None)
            turn.end()  # the run never started
            raise

        def work() -> None:
            try:
                # Rides out a database blip (resuming from the last checkpoint); raises
                # DatabaseUnavailable naming resume when it lasts too long.
                self.loop_graph.drive_until_done(task_id, start)
            finally:
                pipe.close()
                turn.end()

        if fence is not None:
            self.loop_graph.fences[task_id] = fence
        job = loop.run_in_executor(None, work)
        finished = False
        try:
            async for event in pipe.events():
                if isinstance(event, TaskFinished):
                    if finished:
                        continue  # the finish stage ran again after a lost connection
                    finished = True
                yield event  # type: ignore[misc]
            await job  # re-raises a failure of the run
        finally:
            self.deps.sinks.pop(task_id, None)
            self.loop_graph.fences.pop(task_id, None)
            if not job.done():
                with contextlib.suppress(Exception):
                    await job
            elif not job.cancelled():
                job.exception()  # the consumer stopped first: its failure is not this one
        if not finished:
            yield self._finished_event(task_id)

    def _finished_from_tree(self, task_id: str) -> TaskFinished:
        task = self.store.get_task(task_id)
        nodes = self.store.nodes(task_id, include_superseded=True)
        success = task.status is TaskStatus.DONE
        return TaskFinished(
            task_id=task_id,
            outcome="success" if success else "failed",
            success=success,
            steps=sum(n.attempts for n in nodes if n.parent_id is not None),
            replans=len({n.parent_id for n in nodes if n.superseded}),
            adapters=sorted({n.adapter for n in nodes if n.adapter}),
            prompt_tokens=0,
            completion_tokens=0,
            elapsed_s=0.0,
            reason="finished earlier; its checkpoints were pruned, so this summary is from the tree",
        )

    def _finished_event(self, task_id: str) -> TaskFinished:
        values = self.loop_graph.values(task_id)
        result = self.loop_graph.finished_result(task_id)
        pending = self.loop_graph.pending_approval(task_id)
        if result is None:
            outcome = "interrupted"
            reason = (
                f"waiting for approval of {pending.get('skill')!r}"
                if pending
                else "stopped before finishing"
            )
            result = {"outcome": outcome, "reason": reason}
        return TaskFinished(
            task_id=task_id,
            outcome=result["outcome"],
            success=result["outcome"] == "success",
            steps=values.get("steps", 0),
            replans=values.get("replans", 0),
            adapters=list(values.get("adapters", [])),
            prompt_tokens=values.get("prompt_tokens", 0),
            completion_tokens=values.get("completion_tokens", 0),
            elapsed_s=values.get("elapsed_s", 0.0),
            reason=result["reason"],
        )

    async def _collect(self, events: AsyncIterator[AgentEvent]) -> RunResult:
        last: TaskFinished | None = None
        async for event in events:
            if isinstance(event, TaskFinished):
                last = event
        if last is None:  # _drive always ends with TaskFinished; this guards API misuse
            raise UsageError("the run produced no result")
        return RunResult(
            task_id=last.task_id,
            outcome=last.outcome,
            success=last.success,
            steps=last.steps,
            replans=last.replans,
            adapters=last.adapters,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens,
            elapsed_s=last.elapsed_s,
            reason=last.reason,
            pending_approval=self.loop_graph.pending_approval(last.task_id),
        )

    async def arun(
        self,
        goal: str | None = None,
        *,
        reminders: Iterable[str] = (),
        user_id: str = "default",
        env: EnvSpec | Mapping[str, Any] | None = None,
        trace: str | os.PathLike[str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run a new task to its end (or to an approval it waits for).

        ``trace`` records the run to that JSONL file (``trellis replay FILE`` re-runs it and
        compares every decision); the recording covers this run, not a later resume.
        ``labels`` are stored with the task (see :meth:`stream`).
        """
        if trace is not None:
            if _trace_recorder is None:  # trellis.agent.traces installs it when imported
                raise UsageError("recording needs trellis.agent.traces: import trellis.agent")
            if labels:
                raise UsageError("labels are not recorded in traces; run without trace=")
            return await _trace_recorder(
                self, trace, goal, reminders=reminders, env=env, user_id=user_id
            )
        stream = self.stream(goal, reminders=reminders, user_id=user_id, env=env, labels=labels)
        return await self._collect(stream)

    def run(
        self,
        goal: str | None = None,
        *,
        reminders: Iterable[str] = (),
        user_id: str = "default",
        env: EnvSpec | Mapping[str, Any] | None = None,
        trace: str | os.PathLike[str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Blocking :meth:`arun`."""
        return run_sync(
            self.arun(
                goal, reminders=reminders, user_id=user_id, env=env, trace=trace, labels=labels
            )
        )

    async def aresume(self, task_id: str) -> RunResult:
        """Continue a task from its last checkpoint (after a crash or a stop)."""
        return await self._collect(self.stream_resume(task_id))

    def resume(self, task_id: str) -> RunResult:
        """Blocking :meth:`aresume`."""
        return run_sync(self.aresume(task_id))

    async def adecide(self, task_id: str, approved: bool) -> RunResult:
        """Answer the approval a task waits for, and continue it."""
        if self.loop_graph.pending_approval(task_id) is None:
            raise NoPendingApprovalError(task_id)
        command: Command[Any] = Command(resume={"approved": approved})
        return await self._collect(self.stream_resume(task_id, command=command))

    def approve(self, task_id: str) -> RunResult:
        """Approve the waiting call and continue the task."""
        return run_sync(self.adecide(task_id, True))

    def reject(self, task_id: str) -> RunResult:
        """Reject the waiting call (the step fails, the planner may repair) and continue."""
        return run_sync(self.adecide(task_id, False))

    def pending_approval(self, task_id: str) -> dict[str, Any] | None:
        """The call a task waits for, or None."""
        return self.loop_graph.pending_approval(task_id)

    # --- reading ---------------------------------------------------------------------------

    def tree(self, task_id: str) -> TaskTree:
        """The task and all its nodes."""
        return TaskTree(
            task=self.store.get_task(task_id),
            nodes=self.store.nodes(task_id, include_superseded=True),
        )

    def tasks(self, *, user_id: str | None = None, limit: int = 50) -> list[TaskRecord]:
        """Recent tasks, newest first."""
        return self.store.list_tasks(user_id=user_id, limit=limit)

    def close(self) -> None:
        """Release environments, the checkpointer connection and the database."""
        for env, _skill in self.deps.envs.values():
            env.close()
        self.deps.envs.clear()
        self.loop_graph.close()
        self.store.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
