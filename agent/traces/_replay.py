"""Deterministic replay: re-run a recorded task with the trace's answers, compare decisions.

The real loop runs again (the same ``Agent``, graph and Task Memory Tree code) on an
in-memory database, but every model answer, plan (for non-LLM planners), route and skill
result is taken from the trace, so no model is loaded and no skill touches the world. The
replayed run is recorded too, and its decision events (cues, plans, routes, model requests,
skill calls and results, status changes, the final tree) are compared one by one with the
recording; the first difference is reported with its event number, the field, the recorded
value and the replayed one. Node ids are compared by order of appearance, so a replay on a
database with other tasks still matches.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict

from trellis.adapters import Cue, LLMBackend, ReminderAdapter, ReminderConfig
from trellis.agent.env import EnvironmentPack
from trellis.agent.runtime import AgentConfig, SkillRegistry
from trellis.agent.traces._replay_world import (
    ReplayBackend,
    ReplayCases,
    ReplayPlanner,
    ReplayRouter,
    ReplaySkill,
)
from trellis.agent.traces._trace import (
    CuesEvent,
    EndEvent,
    InterruptEvent,
    LLMEvent,
    PlanEvent,
    RouteEvent,
    SkillCallEvent,
    SkillResultEvent,
    TaskStartEvent,
    Trace,
    TreeEvent,
)
from trellis.agent.traces._trace_io import MemoryTraceSink
from trellis.agent.traces._trace_record import TraceRecorder
from trellis.memory import TaskStore, run_sync
from trellis.memory.errors import UsageError

__all__ = [
    "Divergence",
    "ReplayResult",
    "Replayer",
    "compare_traces",
    "replay",
    "replay_many",
    "replay_sync",
]

PlannerFactory = Callable[[LLMBackend], Any]


class Divergence(BaseModel):
    """Where a replay first differs from the recording."""

    model_config = ConfigDict(frozen=True)

    seq: int | None
    """Recorded event number (None: the replay produced more events than were recorded)."""
    replay_seq: int | None
    """Event number in the replayed run (None: the replay stopped earlier)."""
    type: str
    """Recorded event type (or the replayed one when the recording had none)."""
    field: str
    """Which part differs."""
    expected: Any
    """The recorded value."""
    got: Any
    """The replayed value."""

    def describe(self) -> str:
        """One paragraph naming the event, the field and both values."""
        where = f"event {self.seq}" if self.seq is not None else "after the last recorded event"
        return (
            f"replay diverged at {where} ({self.type}), field {self.field}:\n"
            f"  expected: {_short(self.expected)}\n  got:      {_short(self.got)}"
        )


class ReplayResult(BaseModel):
    """The outcome of one replay."""

    model_config = ConfigDict(frozen=True)

    source: str
    """The trace replayed."""
    ok: bool
    """True when every decision matched."""
    events: int
    """Events in the recording."""
    replayed_events: int
    """Events the replay produced."""
    divergence: Divergence | None = None
    """The first difference, when there is one."""
    error: str | None = None
    """An exception that stopped the replayed run."""
    duration_s: float = 0.0
    """Seconds the replay took."""

    @property
    def events_per_s(self) -> float:
        """Recorded events replayed per second."""
        return self.events / self.duration_s if self.duration_s > 0 else 0.0


# Settings added after traces were first recorded, as runs behaved before they existed.
_SETTINGS_BEFORE_THEY_WERE_RECORDED: dict[str, Any] = {
    "world_memory_chars": 0,
    "case_examples": 0,
    "shared_steps": 0,
}


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# --- comparing -----------------------------------------------------------------------------


class _Ids:
    """Node ids by order of first appearance (ids differ between databases)."""

    def __init__(self) -> None:
        self.map: dict[int, int] = {}

    def __call__(self, node_id: int | None) -> int | None:
        if node_id is None:
            return None
        if node_id not in self.map:
            self.map[node_id] = len(self.map)
        return self.map[node_id]


def _view(event: Any, ids: _Ids) -> dict[str, Any] | None:
    """The decision content of an event (None for events that carry no decision)."""
    if isinstance(event, TaskStartEvent):
        return {"goal": event.goal, "reminders": event.reminders, "env": event.env}
    if isinstance(event, CuesEvent):
        return {"cues": event.cues}
    if isinstance(event, TreeEvent):
        return {"node": ids(event.node_id), "status": event.status, "error": event.error}
    if isinstance(event, LLMEvent):
        return {
            "stage": event.stage,
            "node": ids(event.node_id),
            "adapter": event.requested_adapter,
            "prompt": event.prompt,
            "messages": event.messages,
            "schema_sha256": event.schema_sha256,
            "max_tokens": event.sampling.get("max_tokens"),
        }
    if isinstance(event, PlanEvent):
        return {
            "parent": ids(event.parent_id),
            "replan": event.replan,
            "nodes": [ids(n) for n in event.node_ids],
            "plan": event.plan,
            "error": event.error,
        }
    if isinstance(event, RouteEvent):
        return {"node": ids(event.node_id), "adapter": event.adapter}
    if isinstance(event, SkillCallEvent):
        return {"node": ids(event.node_id), "skill": event.skill, "args": event.args}
    if isinstance(event, SkillResultEvent):
        return {
            "node": ids(event.node_id),
            "skill": event.skill,
            "ok": event.ok,
            "result": event.result,
            "error": event.error,
        }
    if isinstance(event, InterruptEvent):
        return {"node": ids(event.node_id), "skill": event.skill, "args": event.args}
    if isinstance(event, EndEvent):
        tree = [
            {
                "node": ids(n.id),
                "parent": ids(n.parent_id),
                "key": n.key,
                "kind": n.kind,
                "title": n.title,
                "status": n.status,
                "skill": n.skill,
                "args": n.args,
                "adapter": n.adapter,
                "depends_on": [ids(d) for d in n.depends_on],
                "superseded": n.superseded,
            }
            for n in sorted(event.tree, key=lambda n: n.id)
        ]
        return {
            "outcome": event.outcome,
            "steps": event.steps,
            "replans": event.replans,
            "tree": tree,
        }
    return None


def _first_difference(expected: Any, got: Any, path: str) -> tuple[str, Any, Any] | None:
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in list(expected) + [k for k in got if k not in expected]:
            found = _first_difference(expected.get(key), got.get(key), f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(expected, list) and isinstance(got, list):
        for index, (a, b) in enumerate(zip(expected, got, strict=False)):
            found = _first_difference(a, b, f"{path}[{index}]")
            if found is not None:
                return found
        if len(expected) != len(got):
            return f"{path} (length)", len(expected), len(got)
        return None
    if expected != got:
        if (
            isinstance(expected, str)
            and isinstance(got, str)
            and max(len(expected), len(got)) > 120
        ):
            # Point at the first differing character: prompts are long.
            at = next(
                (i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
                min(len(expected), len(got)),
            )
            start = max(0, at - 40)
            return f"{path} (from character {at})", expected[start : at + 80], got[start : at + 80]
        return path, expected, got
    return None


def compare_traces(recorded: list[Any], replayed: list[Any]) -> Divergence | None:
    """The first decision that differs between two event lists, or None."""
    ids_a, ids_b = _Ids(), _Ids()
    a = [(e, _view(e, ids_a)) for e in recorded]
    b = [(e, _view(e, ids_b)) for e in replayed]
    a = [(e, v) for e, v in a if v is not None]
    b = [(e, v) for e, v in b if v is not None]
    for (ea, va), (eb, vb) in zip(a, b, strict=False):
        if ea.type != eb.type:
            return Divergence(
                seq=ea.seq, replay_seq=eb.seq, type=ea.type, field="type",
                expected=ea.type, got=eb.type,
            )  # fmt: skip
        found = _first_difference(va, vb, ea.type)
        if found is not None:
            field, expected, got = found
            return Divergence(
                seq=ea.seq, replay_seq=eb.seq, type=ea.type, field=field,
                expected=expected, got=got,
            )  # fmt: skip
    if len(a) > len(b):
        ea = a[len(b)][0]
        return Divergence(
            seq=ea.seq, replay_seq=None, type=ea.type, field="type",
            expected=ea.type, got="(the replay ended)",
        )  # fmt: skip
    if len(b) > len(a):
        eb = b[len(a)][0]
        return Divergence(
            seq=None, replay_seq=eb.seq, type=eb.type, field="type",
            expected="(the recording ended)", got=eb.type,
        )  # fmt: skip
    return None


# --- running -------------------------------------------------------------------------------


def _reminder_adapter(recorded: dict[str, Any], backend: Any) -> ReminderAdapter:
    """The reminder adapter the trace was recorded with, answering from the recorded calls."""
    mode = recorded.get("mode", "rules")
    if mode == "rules":
        return ReminderAdapter(None, config=ReminderConfig(mode="rules"))
    # Traces from before strict forbids recorded no such setting: they ran without it.
    config = ReminderConfig.model_validate(
        {"strict_forbids": False, **(recorded.get("config") or {"mode": mode})}
    )
    return ReminderAdapter(backend, adapter=recorded.get("adapter"), config=config)


class Replayer:
    """Replays traces one after the other on one store, one agent and one compiled graph.

    The agent (its compiled LangGraph graph, its checkpointer) is built once; before each
    trace only what the trace decides is bound to it: the recorded model, planner, router,
    skills and configuration. Nothing else is carried between traces (node ids are compared by order
    of appearance, so earlier tasks in the store do not matter). One replay at a time.
    """

    def __init__(
        self,
        *,
        database_url: str = "sqlite://",
        store: TaskStore | None = None,
        planner_factory: PlannerFactory | None = None,
        environments: Iterable[EnvironmentPack] = (),
    ) -> None:
        """``environments``: packs beside the installed ones that recorded worlds may need."""
        from trellis.agent.runtime import Agent

        self._own_store = store is None
        self.store = store if store is not None else TaskStore.open(database_url)
        self._database_url = database_url
        self._planner_factory = planner_factory
        # Placeholders until a trace binds its own; given, so no default is ever built (no
        # model loaded, no registered adapter routing a replay). Reminders become cues by
        # the rule extractor, as in every replay.
        self.agent = Agent(
            config=AgentConfig(database_url=database_url),
            store=self.store,
            backend=ReplayBackend([], "replay"),
            planner=ReplayPlanner([]),
            router=ReplayRouter([]),
            reminder_adapter=ReminderAdapter(None, config=ReminderConfig(mode="rules")),
            environments=environments,
        )

    def _bind(self, trace: Trace, recorder: TraceRecorder) -> Any:
        """Give the agent this trace's recorded world; returns the environment spec."""
        start = trace.start
        # The planner gets the recording wrapper too, so its model calls land in the replay trace.
        backend = recorder.backend(ReplayBackend(trace.of_type(LLMEvent), start.backend))
        if self._planner_factory is not None:
            planner = self._planner_factory(backend)
        elif start.planner.get("kind") == "llm":
            from trellis.planners import LLMPlanner, PlannerConfig

            planner = LLMPlanner(
                backend,
                adapter=start.planner.get("adapter"),
                config=PlannerConfig.model_validate(start.planner.get("config") or {}),
            )
        else:
            planner = ReplayPlanner(trace.of_type(PlanEvent))
        routes = trace.of_type(RouteEvent)
        router = ReplayRouter(routes) if any(r.adapter or r.reason for r in routes) else None
        env = None
        env_names: set[str] = set()
        if start.env:
            # The pack recreates the world (UnknownEnvironmentError names a missing pack).
            pack, env = self.agent.environments.for_spec(start.env)
            env_names.add(pack.skill_name)
        results = trace.of_type(SkillResultEvent)
        # With a recreated environment its own skill runs (the prompts show its state).
        skills = [ReplaySkill(info, results) for info in start.skills if info.name not in env_names]
        config = AgentConfig.model_validate(
            {
                **_SETTINGS_BEFORE_THEY_WERE_RECORDED,
                **start.config,
                "database_url": self._database_url,
                # Checkpoint frequency does not change decisions; replays need no crash safety.
                "durability": "exit",
                "keep_checkpoints": 0,
            }
        )
        agent, deps = self.agent, self.agent.deps
        agent.config = deps.config = config
        agent.skills = deps.skills = SkillRegistry(recorder.skills(skills))
        deps.backend = backend
        deps.planner = recorder.planner(planner)
        deps.router = router
        deps.reminder_adapter = _reminder_adapter(start.reminder, backend)
        cue_events = trace.of_type(CuesEvent)
        standing = [Cue.model_validate(c) for c in (cue_events[0].standing if cue_events else [])]
        deps.standing_cues = lambda _user, _task: list(standing)
        deps.cases = ReplayCases(trace.of_type(PlanEvent))
        return env

    async def replay(self, trace: Trace) -> ReplayResult:
        """Re-run the recorded task with recorded answers and compare every decision."""
        started = time.perf_counter()
        recorder = TraceRecorder(MemoryTraceSink(), describe_models=False)
        error: str | None = None
        try:
            env = self._bind(trace, recorder)
            await recorder.arun(
                self.agent,
                trace.start.goal,
                reminders=trace.start.reminders,
                env=env,
                raise_errors=False,
            )
        except Exception as exc:  # a replay reports failures; it never raises for a bad run
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._close_envs()
        end = recorder.events[-1] if recorder.events else None
        if error is None and isinstance(end, EndEvent):
            error = end.error
        divergence = compare_traces(trace.events, recorder.events)
        return ReplayResult(
            source=trace.source,
            ok=divergence is None and error is None,
            events=len(trace.events),
            replayed_events=len(recorder.events),
            divergence=divergence,
            error=error,
            duration_s=time.perf_counter() - started,
        )

    def _close_envs(self) -> None:
        # A finished task closes its environment; one stopped by an error or an approval
        # still holds it.
        envs = self.agent.deps.envs
        for env, _skill in envs.values():
            env.close()
        envs.clear()

    def close(self) -> None:
        """Release the agent's checkpointer, and the store when this replayer opened it."""
        self._close_envs()
        self.agent.loop_graph.close()
        if self._own_store:
            self.store.close()


async def replay(
    trace: Trace,
    *,
    planner_factory: PlannerFactory | None = None,
    database_url: str = "sqlite://",
    store: TaskStore | None = None,
    environments: Iterable[EnvironmentPack] = (),
) -> ReplayResult:
    """Re-run the recorded task with recorded answers and compare every decision.

    ``planner_factory(backend)`` replaces the recorded planner (to check what a planner
    change does to recorded runs). ``database_url`` is where the replayed tree lives
    (an in-memory SQLite database by default); pass ``store`` to reuse one open store
    (it is left open). For many traces :func:`replay_many` builds the agent only once.
    """
    started = time.perf_counter()
    replayer = Replayer(
        database_url=database_url,
        store=store,
        planner_factory=planner_factory,
        environments=environments,
    )
    try:
        result = await replayer.replay(trace)
    finally:
        replayer.close()
    return result.model_copy(update={"duration_s": time.perf_counter() - started})


def replay_sync(trace: Trace, **kwargs: Any) -> ReplayResult:
    """Blocking :func:`replay`."""
    return run_sync(replay(trace, **kwargs))


async def replay_many(
    traces: list[Trace], *, database_url: str = "sqlite://", workers: int = 1
) -> list[ReplayResult]:
    """Replay several traces one after the other with one :class:`Replayer`.

    ``workers`` above 1 splits the traces into that many contiguous chunks, each replayed
    by its own process on its own store; results keep the input order and do not depend
    on the split (each replay is independent of the tasks before it).
    """
    if workers < 1:
        raise UsageError(f"workers must be 1 or more, got {workers}")
    if workers > 1 and len(traces) > 1:
        return await _replay_in_processes(traces, database_url, min(workers, len(traces)))
    replayer = Replayer(database_url=database_url)
    try:
        return [await replayer.replay(trace) for trace in traces]
    finally:
        replayer.close()


def _replay_chunk(traces: list[Trace], database_url: str) -> list[ReplayResult]:
    return run_sync(replay_many(traces, database_url=database_url))


async def _replay_in_processes(
    traces: list[Trace], database_url: str, workers: int
) -> list[ReplayResult]:
    # Spawned, not forked: a fork would copy the parent's busy event-loop threads.
    context = multiprocessing.get_context("spawn")
    size = -(-len(traces) // workers)
    chunks = [traces[i : i + size] for i in range(0, len(traces), size)]
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(len(chunks), mp_context=context) as pool:
        parts = await asyncio.gather(
            *(loop.run_in_executor(pool, _replay_chunk, chunk, database_url) for chunk in chunks)
        )
    return [result for part in parts for result in part]
