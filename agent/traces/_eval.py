"""Evaluation: re-run recorded tasks live against another configuration, and compare runs.

:func:`evaluate` takes recorded traces, recreates each task's environment when the trace
allows it (a recorded environment spec, or skills the caller passes), runs it live through a fresh agent
from ``agent_factory`` while recording a new trace, and reports per task and overall:
success, steps, replans, routing agreement with the recording, tokens and latency. A task
whose environment cannot be recreated is **skipped**, not failed.

:func:`compare_runs` lists positive and negative flips between two runs. Following the
MUSCLE paper (Echterhoff et al., 2024), a negative flip is a task that run A (the old
configuration) got right and run B (the new one) gets wrong; a positive flip the reverse.
Only tasks evaluated in both runs count.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trellis.agent.errors import TraceFormatError
from trellis.agent.traces._trace import (
    EndEvent,
    LLMEvent,
    RouteEvent,
    Trace,
    iter_trace_files,
    read_trace,
)
from trellis.agent.traces._trace_io import MemoryTraceSink, TraceWriter
from trellis.agent.traces._trace_record import TraceRecorder
from trellis.memory import run_sync
from trellis.memory.errors import TrellisError, UsageError

__all__ = [
    "Comparison",
    "EvalRun",
    "EvalSummary",
    "TaskEval",
    "compare_runs",
    "evaluate",
    "evaluate_sync",
    "load_run",
    "run_from_traces",
]

AgentFactory = Callable[[TraceRecorder, Trace], Any]
"""``factory(recorder, trace) -> Agent``: build the agent under test with the recorder's
wrapped backend/planner/skills (``recorder.backend(...)`` etc.)."""


class TaskEval(BaseModel):
    """One task of an evaluation run."""

    model_config = ConfigDict(extra="ignore")

    task: str
    """Stable task name (the trace file's stem): the key runs are compared by."""
    goal: str
    """The goal."""
    family: str = "default"
    """Task family for reports (trace metadata ``family``, else the environment kind)."""
    status: Literal["ok", "skipped", "error"]
    """ok: ran; skipped: its environment could not be recreated; error: the run crashed."""
    reason: str = ""
    """Why it was skipped or crashed, or how it ended."""
    success: bool = False
    """Whether the live run achieved the goal."""
    recorded_success: bool | None = None
    """Whether the recorded run did."""
    steps: int = 0
    """Skill calls."""
    replans: int = 0
    """Plan repairs."""
    prompt_tokens: int = 0
    """Prompt tokens."""
    completion_tokens: int = 0
    """Generated tokens."""
    llm_latency_s: float = 0.0
    """Seconds in model calls."""
    elapsed_s: float = 0.0
    """Seconds in the loop."""
    routes: list[tuple[str, str]] = []
    """(recorded adapter, live adapter) per routed step, in order (``base``: no adapter)."""
    routing_agreement: float | None = None
    """Share of routed steps whose adapter equals the recording's (None: nothing routed)."""
    trace: str | None = None
    """Where the live run's trace was written."""


class EvalSummary(BaseModel):
    """Totals over the tasks that ran."""

    model_config = ConfigDict(frozen=True)

    tasks: int
    """Tasks in the run (skipped included)."""
    ran: int
    """Tasks that ran."""
    skipped: int
    """Tasks skipped."""
    errors: int
    """Tasks whose run crashed (counted as failures)."""
    success_rate: float
    """Successes / ran."""
    mean_steps: float
    """Mean skill calls per task that ran."""
    mean_replans: float
    """Mean plan repairs."""
    routing_agreement: float | None
    """Agreement over all routed steps."""
    prompt_tokens: int
    """Total prompt tokens."""
    completion_tokens: int
    """Total generated tokens."""
    mean_llm_latency_s: float
    """Mean seconds in model calls per task."""


class EvalRun(BaseModel):
    """An evaluation run: its configuration and its tasks."""

    model_config = ConfigDict(extra="ignore")

    name: str
    """Run name (reports and comparisons show it)."""
    created: float = Field(default_factory=time.time)
    """Unix time."""
    config: dict[str, Any] = {}
    """What was evaluated (backend, adapters, planner)."""
    tasks: list[TaskEval] = []
    """Per-task results."""

    def summary(self) -> EvalSummary:
        """Totals over the tasks."""
        ran = [t for t in self.tasks if t.status != "skipped"]
        routes = [pair for t in ran for pair in t.routes]
        agree = sum(1 for a, b in routes if a == b)
        n = max(1, len(ran))
        return EvalSummary(
            tasks=len(self.tasks),
            ran=len(ran),
            skipped=len(self.tasks) - len(ran),
            errors=sum(1 for t in ran if t.status == "error"),
            success_rate=sum(1 for t in ran if t.success) / n,
            mean_steps=sum(t.steps for t in ran) / n,
            mean_replans=sum(t.replans for t in ran) / n,
            routing_agreement=agree / len(routes) if routes else None,
            prompt_tokens=sum(t.prompt_tokens for t in ran),
            completion_tokens=sum(t.completion_tokens for t in ran),
            mean_llm_latency_s=sum(t.llm_latency_s for t in ran) / n,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the run as JSON (``trellis compare`` reads it)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = {**self.model_dump(mode="json"), "summary": self.summary().model_dump()}
        target.write_text(json.dumps(data, indent=1))
        return target


def _family(trace: Trace) -> str:
    start = trace.start
    family = start.metadata.get("family")
    if isinstance(family, str) and family:
        return family
    return str((start.env or {}).get("kind", "default"))


def _route_name(adapter: str | None) -> str:
    return adapter or "base"


def _task_from_events(
    name: str, trace: Trace, events: list[Any], recorded: Trace | None
) -> TaskEval:
    end = next((e for e in reversed(events) if isinstance(e, EndEvent)), None)
    live_routes = [e for e in events if isinstance(e, RouteEvent)]
    routes: list[tuple[str, str]] = []
    if recorded is not None:
        old_routes = recorded.of_type(RouteEvent)
        routes = [
            (_route_name(a.adapter), _route_name(b.adapter))
            for a, b in zip(old_routes, live_routes, strict=False)
        ]
    recorded_end = recorded.end if recorded is not None else trace.end
    latency = sum(e.latency_s for e in events if isinstance(e, LLMEvent))
    return TaskEval(
        task=name,
        goal=trace.start.goal,
        family=_family(trace),
        status="error" if end is None or end.error else "ok",
        reason=(end.error or end.reason) if end is not None else "the run recorded no end",
        success=bool(end and end.success and not end.error),
        recorded_success=recorded_end.success if recorded_end is not None else None,
        steps=end.steps if end else 0,
        replans=end.replans if end else 0,
        prompt_tokens=end.prompt_tokens if end else 0,
        completion_tokens=end.completion_tokens if end else 0,
        llm_latency_s=round(latency, 6),
        elapsed_s=end.elapsed_s if end else 0.0,
        routes=routes,
        routing_agreement=(sum(1 for a, b in routes if a == b) / len(routes)) if routes else None,
    )


def _environment(trace: Trace, skills: Sequence[Any] | None) -> tuple[Any, str | None]:
    """The env config to run with, or (None, why it cannot be recreated)."""
    spec = trace.start.env
    if spec:
        from trellis.agent.env import EnvironmentRegistry

        try:
            return EnvironmentRegistry().for_spec(spec)[1], None
        except TrellisError as exc:
            return None, f"the recorded environment cannot be recreated: {exc}"
    if skills is None:
        return None, (
            "the trace has no recreatable environment (no env spec) and no skills were given "
            "to run it with"
        )
    return None, None


async def evaluate(
    traces: Iterable[Trace],
    agent_factory: AgentFactory,
    *,
    name: str = "eval",
    config: dict[str, Any] | None = None,
    skills: Sequence[Any] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> EvalRun:
    """Run every recorded task live with agents from ``agent_factory``; returns the run.

    ``skills`` are used for traces without an environment (the caller's real skills);
    without them such traces are skipped. ``out_dir`` receives the live traces.
    """
    run = EvalRun(name=name, config=dict(config or {}))
    folder = Path(out_dir) if out_dir is not None else None
    for trace in traces:
        task_name = Path(trace.source).stem if trace.source else f"task{len(run.tasks) + 1}"
        env, why = _environment(trace, skills)
        if why is not None:
            run.tasks.append(
                TaskEval(
                    task=task_name,
                    goal=trace.start.goal,
                    family=_family(trace),
                    status="skipped",
                    reason=why,
                    recorded_success=trace.end.success if trace.end else None,
                )
            )
            continue
        target = folder / f"{task_name}.jsonl" if folder is not None else None
        sink: Any = TraceWriter(target, fsync="none") if target is not None else MemoryTraceSink()
        recorder = TraceRecorder(sink, metadata=dict(trace.start.metadata))
        agent = None
        try:
            agent = agent_factory(recorder, trace)
            if skills is not None and env is None:
                for item in recorder.skills(skills):
                    if item.name not in agent.skills:
                        agent.register(item)
            await recorder.arun(
                agent, trace.start.goal, reminders=trace.start.reminders, env=env,
                raise_errors=False,
            )  # fmt: skip
            task = _task_from_events(task_name, trace, recorder.events, trace)
        except TrellisError as exc:
            task = TaskEval(
                task=task_name,
                goal=trace.start.goal,
                family=_family(trace),
                status="skipped" if "environment" in type(exc).__name__.lower() else "error",
                reason=f"{type(exc).__name__}: {exc}",
                recorded_success=trace.end.success if trace.end else None,
            )
        finally:
            sink.close()
            if agent is not None:
                agent.close()
        if target is not None and task.status != "skipped":
            task.trace = str(target)
        run.tasks.append(task)
    return run


def evaluate_sync(traces: Iterable[Trace], agent_factory: AgentFactory, **kwargs: Any) -> EvalRun:
    """Blocking :func:`evaluate`."""
    return run_sync(evaluate(traces, agent_factory, **kwargs))


def run_from_traces(paths: Iterable[str | os.PathLike[str]], *, name: str) -> EvalRun:
    """An :class:`EvalRun` made from recorded traces themselves (the baseline of a comparison)."""
    run = EvalRun(name=name, config={"source": "recorded traces"})
    for file in iter_trace_files(paths):
        trace = read_trace(file)
        task = _task_from_events(file.stem, trace, trace.events, None)
        task.recorded_success = task.success
        task.trace = str(file)
        run.tasks.append(task)
    return run


def load_run(path: str | os.PathLike[str], *, name: str | None = None) -> EvalRun:
    """An evaluation run from its JSON file, or from a folder (or file) of traces."""
    target = Path(path)
    if target.is_dir() or target.suffix == ".jsonl":
        return run_from_traces([target], name=name or target.stem)
    if not target.is_file():
        raise UsageError(f"no run at {target}: pass an eval result .json or a folder of traces")
    try:
        run = EvalRun.model_validate_json(target.read_text())
    except ValueError as exc:
        raise TraceFormatError(f"{target} is not an eval result file ({exc})") from None
    if name:
        run.name = name
    return run


class Comparison(BaseModel):
    """Flips between two runs (A: before, B: after)."""

    model_config = ConfigDict(frozen=True)

    run_a: str
    """Name of run A."""
    run_b: str
    """Name of run B."""
    common: int
    """Tasks evaluated (not skipped) in both runs."""
    success_a: int
    """Successes of A on the common tasks."""
    success_b: int
    """Successes of B on the common tasks."""
    positive_flips: list[str]
    """Tasks that failed in A and pass in B."""
    negative_flips: list[str]
    """Tasks that passed in A and fail in B."""
    only_a: list[str]
    """Tasks evaluated only in A."""
    only_b: list[str]
    """Tasks evaluated only in B."""

    @property
    def negative_flip_rate(self) -> float:
        """Negative flips / common tasks (the MUSCLE NFR)."""
        return len(self.negative_flips) / self.common if self.common else 0.0

    @property
    def positive_flip_rate(self) -> float:
        """Positive flips / common tasks."""
        return len(self.positive_flips) / self.common if self.common else 0.0


def compare_runs(run_a: EvalRun, run_b: EvalRun) -> Comparison:
    """Positive and negative flips of ``run_b`` relative to ``run_a``."""
    a = {t.task: t for t in run_a.tasks if t.status != "skipped"}
    b = {t.task: t for t in run_b.tasks if t.status != "skipped"}
    common = sorted(set(a) & set(b))
    return Comparison(
        run_a=run_a.name,
        run_b=run_b.name,
        common=len(common),
        success_a=sum(1 for k in common if a[k].success),
        success_b=sum(1 for k in common if b[k].success),
        positive_flips=[k for k in common if not a[k].success and b[k].success],
        negative_flips=[k for k in common if a[k].success and not b[k].success],
        only_a=sorted(set(a) - set(b)),
        only_b=sorted(set(b) - set(a)),
    )
