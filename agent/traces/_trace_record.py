"""Recording a run as a trace: wrappers at the model, planner and skill boundaries.

The loop itself is not changed. :class:`TraceRecorder` wraps the LLM backend, the planner
and the skills; what they see (requests, responses, plan outcomes, skill outcomes) waits in
a queue until the agent's own event stream says where it belongs (stage, node), and is then
written in the stream's order::

    recorder = TraceRecorder(TraceWriter("run.jsonl"))
    backend = recorder.backend(my_backend)
    agent = Agent(backend=backend, planner=recorder.planner(LLMPlanner(backend)),
                  skills=recorder.skills([look, pick_up]))
    result = recorder.run(agent, "tidy the kitchen", reminders=["mugs go in the dishwasher"])

One recorder records one run at a time (the wrappers do not know which task a call is for).
An existing agent records a run with ``agent.run(goal, trace="run.jsonl")``, which goes
through :func:`record_run` (a recording twin of the agent, on the same store and model).
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel

from trellis.adapters import LLMBackend, LLMRequest, LLMResult
from trellis.agent.env import EnvSpec
from trellis.agent.runtime import (
    EventBase,
    LLMCall,
    NodeStatusChanged,
    PlanMade,
    RouteDecided,
    Skill,
    SkillFinished,
    SkillLike,
    SkillOutcome,
    SkillRegistry,
    TaskFinished,
    TaskStarted,
    action_skill,
)
from trellis.agent.traces._trace import (
    RECORDED_AS,
    EndEvent,
    LLMEvent,
    PlanEvent,
    TraceHeader,
    TreeNode,
)
from trellis.agent.traces._trace_io import (
    TraceSink,
    TraceWriter,
    event_line,
    folder_sha256,
    header_line,
    json_sha256,
)
from trellis.agent.traces._trace_wrappers import (
    RecordingBackend,
    RecordingPlanner,
    RecordingSkill,
    planner_info,
    skill_info,
)
from trellis.memory import run_sync
from trellis.memory.errors import TrellisError

if TYPE_CHECKING:
    from trellis.agent.runtime import Agent, RunResult

__all__ = ["RecordingBackend", "RecordingPlanner", "TraceRecorder", "record_run", "skill_info"]


class TraceRecorder:
    """Turns one run (agent events + model, planner and skill calls) into trace events."""

    def __init__(
        self,
        sink: TraceSink,
        *,
        metadata: dict[str, Any] | None = None,
        describe_models: bool = True,
    ) -> None:
        """``describe_models=False`` leaves the base model's and the adapters' identities
        (content hashes of their files) out of ``task_started``: a replay compares decisions,
        and hashing folders for every replayed task would cost more than the task."""
        self.sink = sink
        self.metadata = dict(metadata or {})
        self.describe_models = describe_models
        self.events: list[BaseModel] = []
        self._lock = threading.Lock()
        self._llm: deque[tuple[LLMRequest, LLMResult]] = deque()
        self._plans: deque[Any] = deque()
        self._skills: deque[tuple[int | None, SkillOutcome]] = deque()
        self._plan_llm: list[int] = []
        self._started = time.perf_counter()
        self._header_written = False
        self._task_id = ""
        self._wrapped_backend: RecordingBackend | None = None

    # --- wrappers ----------------------------------------------------------------------------

    def backend(self, inner: LLMBackend) -> RecordingBackend:
        """``inner`` with every call recorded (give the same wrapper to the planner)."""
        wrapped = inner if isinstance(inner, RecordingBackend) else RecordingBackend(inner, self)
        self._wrapped_backend = wrapped
        return wrapped

    def planner(self, inner: Any) -> RecordingPlanner:
        """``inner`` with every plan outcome recorded."""
        return inner if isinstance(inner, RecordingPlanner) else RecordingPlanner(inner, self)

    def skills(self, items: Iterable[SkillLike]) -> list[Skill]:
        """The skills with every outcome recorded (error types included)."""
        wrapped: list[Skill] = []
        for item in SkillRegistry(items):
            if isinstance(item, RecordingSkill):
                wrapped.append(item)
                continue
            copy = RecordingSkill.__new__(RecordingSkill)
            copy.__dict__.update(item.__dict__)
            copy._recorder = self
            copy._inner = item
            wrapped.append(copy)
        return wrapped

    def llm_done(self, request: LLMRequest, result: LLMResult) -> None:
        with self._lock:
            self._llm.append((request, result))

    def plan_done(self, outcome: Any, request: Any = None) -> None:
        with self._lock:
            self._plans.append((outcome, request))

    def skill_done(self, node_id: int | None, outcome: SkillOutcome) -> None:
        with self._lock:
            self._skills.append((node_id, outcome))

    # --- writing -----------------------------------------------------------------------------

    def _write(self, cls: type[BaseModel], **fields: Any) -> BaseModel:
        if not self._header_written:
            self.sink.write_line(header_line(TraceHeader()))
            self._header_written = True
        fields.setdefault("task_id", self._task_id)
        event = cls(
            seq=len(self.events) + 1,
            t=round(time.perf_counter() - self._started, 6),
            **fields,
        )
        self.events.append(event)
        self.sink.write_line(event_line(event))
        return event

    def _llm_fields(self, item: tuple[LLMRequest, LLMResult]) -> dict[str, Any]:
        request, result = item
        return {
            "adapter": result.adapter,
            "requested_adapter": request.adapter,
            "prompt": request.prompt,
            "messages": [m.model_dump() for m in request.messages] if request.messages else None,
            "sampling": request.sampling.model_dump(mode="json"),
            "schema_sha256": json_sha256(request.json_schema) if request.json_schema else None,
            "text": result.text,
            "parsed": result.parsed,
            "json_error": result.json_error,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "latency_s": result.latency_s,
            "backend": result.backend,
            "finish_reason": result.finish_reason,
        }

    def _take_llm(self, call: LLMCall) -> tuple[LLMRequest, LLMResult] | None:
        with self._lock:
            for index, (_req, res) in enumerate(self._llm):
                if (
                    res.prompt_tokens == call.prompt_tokens
                    and res.completion_tokens == call.completion_tokens
                    and res.adapter == call.adapter
                ):
                    del self._llm[index]
                    return _req, res
            return self._llm.popleft() if self._llm else None

    def _flush_llm(self, stage: str, node_id: int | None) -> None:
        """Model calls no run event reported (the router's own calls) are recorded here."""
        while True:
            with self._lock:
                item = self._llm.popleft() if self._llm else None
            if item is None:
                return
            why = "the router's own model call" if stage == "route" else ""
            self._write(LLMEvent, stage=stage, node_id=node_id, why=why, **self._llm_fields(item))

    def _plan_fields(self, made: PlanMade | None) -> dict[str, Any]:
        with self._lock:
            outcome, request = self._plans.popleft() if self._plans else (None, None)
        plan = getattr(outcome, "plan", None)
        # Past cases shown to a root plan (a replan's request names its node): a replay
        # shows the same ones.
        examples = None
        if request is not None and getattr(request, "node_id", 0) is None:
            examples = [c.model_dump(mode="json") for c in getattr(request, "examples", ())]
        # The steps of other branches a sub-plan may wait for: the replay check validates
        # its dependencies against them.
        other_steps = None
        if request is not None and getattr(request, "node_id", None) is not None:
            other_steps = [o.model_dump(mode="json") for o in getattr(request, "other_steps", ())]
        fields: dict[str, Any] = {
            "plan": plan.model_dump(mode="json") if isinstance(plan, BaseModel) else None,
            "raw_outputs": list(getattr(outcome, "raw_outputs", [])),
            "errors": list(getattr(outcome, "errors", [])),
            "error": getattr(outcome, "error", None),
            "planner": str(getattr(outcome, "planner", "")),
            "llm_seqs": self._plan_llm,
            "examples": examples,
            "other_steps": other_steps,
        }
        self._plan_llm = []
        return fields

    def _flush_failed_plans(self) -> None:
        """A plan that failed has no run event: it is recorded before the next event."""
        with self._lock:
            failed = bool(self._plans) and getattr(self._plans[0][0], "plan", None) is None
        if not failed:
            return
        # The node it was for: the one its model calls served.
        planned = next(
            (
                getattr(e, "node_id", None)
                for e in self.events
                if self._plan_llm and getattr(e, "seq", 0) == self._plan_llm[-1]
            ),
            None,
        )
        self._write(PlanEvent, parent_id=planned, **self._plan_fields(None))

    def _start_fields(self, agent: Agent, event: TaskStarted) -> dict[str, Any]:
        self._task_id = event.task_id
        task = agent.store.get_task(event.task_id)
        metadata = task.metadata or {}
        backend = agent.deps.backend
        inner = backend.inner if isinstance(backend, RecordingBackend) else backend
        return {
            "reminders": [str(r) for r in metadata.get("reminders", [])],
            "env": metadata.get("env"),
            "config": agent.config.model_dump(mode="json"),
            "planner": planner_info(agent.deps.planner),
            "reminder": _reminder_info(agent.deps.reminder_adapter),
            "backend": str(getattr(inner, "name", "")),
            "model": _model_info(inner) if self.describe_models else None,
            "adapters": _adapter_infos(agent) if self.describe_models else [],
            "skills": [skill_info(s) for s in agent.skills],
            "metadata": self.metadata,
        }

    def _detail(self, agent: Agent, event: EventBase) -> dict[str, Any] | None:
        """What the trace adds to a run event (None: the event is not recorded)."""
        if isinstance(event, TaskStarted):
            return self._start_fields(agent, event)
        if isinstance(event, LLMCall):
            item = self._take_llm(event)
            return None if item is None else self._llm_fields(item)
        if isinstance(event, PlanMade):
            return self._plan_fields(event)
        if isinstance(event, SkillFinished):
            with self._lock:
                for index, (node_id, outcome) in enumerate(self._skills):
                    if node_id == event.node_id and outcome.skill == event.skill:
                        del self._skills[index]
                        return {"error_type": outcome.error_type}
            return {}
        if isinstance(event, RouteDecided):
            self._flush_llm("route", event.node_id)
        return {}

    def on_event(self, agent: Agent, event: Any) -> None:
        """Record one run event (in the stream's order) as its trace event."""
        recorded = RECORDED_AS.get(type(event))
        if recorded is None or isinstance(event, TaskFinished):
            return  # tokens are not recorded; the end is written by finish()
        if isinstance(event, (RouteDecided, NodeStatusChanged)):
            self._flush_failed_plans()
        detail = self._detail(agent, event)
        if detail is None:
            return
        written = self._write(recorded, **{**event.model_dump(exclude={"type"}), **detail})
        if isinstance(event, LLMCall) and event.stage == "plan":
            self._plan_llm.append(int(getattr(written, "seq", 0)))

    def finish(
        self, agent: Agent, task_id: str, last: TaskFinished | None, error: str | None
    ) -> None:
        """Write the ``end`` event with the final tree, then flush the sink."""
        self._flush_failed_plans()
        self._flush_llm("unknown", None)
        nodes = agent.store.nodes(task_id, include_superseded=True)
        tree = [
            TreeNode(
                id=n.id,
                parent_id=n.parent_id,
                key=n.key,
                kind=n.kind,
                title=n.title,
                status=n.status.value,
                skill=(n.input or {}).get("skill") if isinstance(n.input, dict) else None,
                args=dict((n.input or {}).get("args") or {}) if isinstance(n.input, dict) else {},
                adapter=n.adapter,
                depends_on=sorted(n.depends_on),
                superseded=n.superseded,
            )
            for n in nodes
        ]
        latency = sum(e.latency_s for e in self.events if isinstance(e, LLMEvent))
        if last is None:  # an exception stopped the run before it finished
            last = TaskFinished(
                task_id=task_id, outcome="failed", success=False, steps=0, replans=0,
                adapters=[], prompt_tokens=0, completion_tokens=0, elapsed_s=0.0,
                reason=error or "",
            )  # fmt: skip
        self._write(
            EndEvent,
            **last.model_dump(exclude={"type", "at"}),
            llm_latency_s=round(latency, 6),
            error=error,
            tree=tree,
        )
        self.sink.flush()

    # --- running -----------------------------------------------------------------------------

    async def arun(
        self,
        agent: Agent,
        goal: str | None = None,
        *,
        reminders: Iterable[str] = (),
        env: EnvSpec | Mapping[str, Any] | None = None,
        user_id: str = "default",
        raise_errors: bool = True,
    ) -> RunResult:
        """Run ``goal`` on ``agent`` and record it; the trace ends with an ``end`` event.

        With ``raise_errors=False`` an exception that stops the run is recorded on the
        ``end`` event and the result reports ``failed`` instead of raising.
        """
        from trellis.agent.runtime import RunResult

        if env is not None:
            # The environment's action skill, wrapped like the others so its outcomes record.
            pack, _spec = agent.environments.for_spec(env)
            for item in self.skills([action_skill(pack)]):
                if item.name not in agent.skills:
                    agent.register(item)
        self._started = time.perf_counter()
        task_id: str | None = None
        last: TaskFinished | None = None
        error: str | None = None
        try:
            async for event in agent.stream(goal, reminders=reminders, env=env, user_id=user_id):
                if isinstance(event, TaskStarted):
                    task_id = event.task_id
                if isinstance(event, TaskFinished):
                    last = event
                self.on_event(agent, event)
        except Exception as exc:
            if task_id is None:
                raise
            error = f"{type(exc).__name__}: {exc}"
            if raise_errors:
                self.finish(agent, task_id, last, error)
                raise
        if task_id is None:  # stream() always starts with TaskStarted
            raise RuntimeError("the run produced no events")
        self.finish(agent, task_id, last, error)
        end = cast(EndEvent, self.events[-1])  # written just above
        return RunResult(
            task_id=task_id,
            outcome=end.outcome,
            success=end.success,
            steps=end.steps,
            replans=end.replans,
            adapters=end.adapters,
            prompt_tokens=end.prompt_tokens,
            completion_tokens=end.completion_tokens,
            elapsed_s=end.elapsed_s,
            reason=end.reason,
        )

    def run(
        self,
        agent: Agent,
        goal: str | None = None,
        *,
        reminders: Iterable[str] = (),
        env: EnvSpec | Mapping[str, Any] | None = None,
        user_id: str = "default",
        raise_errors: bool = True,
    ) -> RunResult:
        """Blocking :meth:`arun`."""
        return run_sync(
            self.arun(
                agent,
                goal,
                reminders=reminders,
                env=env,
                user_id=user_id,
                raise_errors=raise_errors,
            )
        )


def _reminder_info(adapter: Any) -> dict[str, Any]:
    """What a replay needs to turn reminders into cues the same way (model calls included)."""
    config = getattr(adapter, "config", None)
    if config is None:
        return {}
    mode = getattr(config, "mode", "rules")
    if getattr(adapter, "backend", None) is None:
        mode = "rules"  # without a model only the rules run, whatever the mode says
    return {
        "mode": mode,
        "adapter": getattr(adapter, "adapter", None),
        "config": config.model_dump(mode="json"),
    }


async def record_run(
    agent: Agent,
    path: str | os.PathLike[str],
    goal: str | None = None,
    *,
    reminders: Iterable[str] = (),
    env: EnvSpec | Mapping[str, Any] | None = None,
    user_id: str = "default",
    metadata: dict[str, Any] | None = None,
) -> RunResult:
    """Run ``goal`` on ``agent`` and record it to the trace file ``path`` (fsync'd per event).

    The run goes through a twin of ``agent`` that shares its store, configuration, model,
    router and reminder adapter, with the model, planner and skills wrapped for recording;
    ``agent`` itself is not changed, so its other runs are not recorded.
    """
    from trellis.agent.runtime import Agent

    agent._ensure_defaults()  # the twin shares the loaded model instead of loading another
    deps = agent.deps
    writer = TraceWriter(path, fsync="event")
    recorder = TraceRecorder(writer, metadata=metadata)
    backend = recorder.backend(deps.backend)

    def recording(part: Any) -> Any:
        # An LLM planner (or a router or reminder adapter that asks the model) calls the
        # model itself: a copy of it calls the recording backend instead.
        if getattr(part, "backend", None) is not deps.backend:
            return part
        part = copy.copy(part)
        part.backend = backend
        return part

    twin = Agent(
        config=agent.config,
        skills=recorder.skills(agent.skills),
        backend=backend,
        planner=recorder.planner(recording(deps.planner)),
        router=recording(deps.router),
        reminder_adapter=recording(deps.reminder_adapter),
        store=agent.store,
        skill_context=deps.skill_context,
        cases=deps.cases,
    )
    twin.environments = agent.environments
    try:
        result = await recorder.arun(twin, goal, reminders=reminders, env=env, user_id=user_id)
        pending = twin.loop_graph.pending_approval(result.task_id)
        return result.model_copy(update={"pending_approval": pending})
    finally:
        for environment, _skill in twin.deps.envs.values():
            environment.close()  # a task waiting for approval rebuilds it when resumed
        twin.loop_graph.close()
        writer.close()


def _model_info(backend: Any) -> dict[str, Any] | None:
    """Name and content hash of the base model behind a backend, when it can be known."""
    config = getattr(backend, "config", None)
    if config is not None and hasattr(config, "model_dir"):
        from trellis.adapters import model_identity, resolve_model_dir

        try:
            return dict(model_identity(resolve_model_dir(config.model_dir)))
        except (TrellisError, OSError):
            return None
    name = getattr(config, "base_model", None) or getattr(backend, "model", None)
    return {"name": str(name), "sha256": ""} if isinstance(name, str) else None


def _adapter_infos(agent: Agent) -> list[dict[str, Any]]:
    from trellis.adapters import AdapterRegistry

    try:
        # The agent's store is already at the current schema: no Alembic run per trace.
        records = AdapterRegistry(agent.store.engine, migrate=False).list()
    except Exception:  # a database without the registry tables has no adapters to record
        return []
    infos = []
    for record in records:
        try:
            digest = folder_sha256(record.path)
        except OSError:
            digest = ""
        infos.append({"name": record.name, "base_model": record.base_model, "sha256": digest})
    return infos
