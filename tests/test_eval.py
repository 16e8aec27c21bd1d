"""Evaluation and comparison: live re-runs of recorded twc tasks, flips, skipped tasks, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from trellis_twc import TwcConfig, TwcEnvironment
from typer.testing import CliRunner

from trellis.adapters import FunctionBackend, LLMRequest
from trellis.agent.runtime._config import AgentConfig
from trellis.agent.runtime._sdk import Agent
from trellis.agent.traces._eval import (
    EvalRun,
    TaskEval,
    compare_runs,
    evaluate_sync,
    load_run,
    run_from_traces,
)
from trellis.agent.traces._replay_check import check_trace
from trellis.agent.traces._report import write_report
from trellis.agent.traces._trace import Trace, read_trace
from trellis.agent.traces._trace_cli import register
from trellis.agent.traces._trace_io import TraceWriter
from trellis.agent.traces._trace_record import TraceRecorder
from trellis.planners import ScriptedPlanner

SEEDS = (1, 2, 3)


def _gold(config: TwcConfig) -> list[str]:
    env = TwcEnvironment(config)
    try:
        env.reset()
        return env.gold_actions()
    finally:
        env.close()


def _policy(gold: list[str] | None) -> FunctionBackend:
    """Follow the gold path (by how many actions were taken), or just keep looking around."""

    def answer(request: LLMRequest) -> str:
        actions = (request.json_schema or {})["properties"]["action"]["enum"]
        if gold is None:  # idle: look or examine, never take or put (the offer rules may
            # leave "look around" out of what is offered)
            idle = [a for a in actions if a.split(" ", 1)[0] in ("look", "examine", "inventory")]
            harmless = idle or [a for a in actions if not a.startswith(("take ", "put "))]
            return json.dumps({"action": (harmless or actions)[0]})
        taken = 0
        for line in (request.prompt or "").splitlines():
            if line.startswith("Done so far: "):
                taken = len(line[len("Done so far: ") :].split("; "))
        return json.dumps({"action": gold[taken] if taken < len(gold) else actions[0]})

    return FunctionBackend(answer)


def _agent(recorder: TraceRecorder, backend: FunctionBackend) -> Agent:
    wrapped = recorder.backend(backend)
    return Agent(
        config=AgentConfig(database_url="sqlite://", max_steps=6),
        backend=wrapped,
        planner=recorder.planner(ScriptedPlanner({})),
    )


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("twc-traces")
    for seed in SEEDS:
        # Every container offered, so the gold player's puts are always on offer.
        config = TwcConfig(seed=seed, fold="train", place_shortlist=0)
        writer = TraceWriter(folder / f"twc-{seed}.jsonl")
        recorder = TraceRecorder(writer, metadata={"family": "twc-1room"})
        agent = _agent(recorder, _policy(_gold(config)))
        try:
            recorder.run(agent, env=config)
        finally:
            agent.close()
            writer.close()
    return folder


def _evaluate(traces: Path, bad_seeds: set[int], name: str, out: Path | None = None) -> EvalRun:
    loaded = [read_trace(p) for p in sorted(traces.glob("*.jsonl"))]

    def factory(recorder: TraceRecorder, trace: Trace) -> Agent:
        env = TwcConfig.model_validate(
            {k: v for k, v in (trace.start.env or {}).items() if k != "kind"}
        )
        return _agent(recorder, _policy(None if env.seed in bad_seeds else _gold(env)))

    return evaluate_sync(loaded, factory, name=name, out_dir=out)


@pytest.fixture(scope="module")
def runs(traces: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[EvalRun, EvalRun]:
    good = _evaluate(traces, set(), "good", out=tmp_path_factory.mktemp("good"))
    return good, _evaluate(traces, {2, 3}, "worse")


def test_eval_reruns_recorded_tasks_and_flips_are_computed(
    traces: Path, runs: tuple[EvalRun, EvalRun]
) -> None:
    baseline = run_from_traces([traces], name="recorded")
    assert [t.success for t in baseline.tasks] == [True, True, True]
    assert all(check_trace(read_trace(p)).ok for p in traces.glob("*.jsonl"))
    good, worse = runs
    assert [(t.task, t.status, t.success) for t in good.tasks] == [
        ("twc-1", "ok", True), ("twc-2", "ok", True), ("twc-3", "ok", True),
    ]  # fmt: skip
    assert [t.success for t in worse.tasks] == [True, False, False]
    first = good.tasks[0]
    assert first.family == "twc-1room" and first.recorded_success is True
    assert first.steps == len(first.routes) > 0 and first.routing_agreement == 1.0
    assert first.prompt_tokens > 0 and first.trace and Path(first.trace).is_file()
    assert read_trace(first.trace).end is not None
    assert worse.tasks[1].steps == 6 and "max_steps" in worse.tasks[1].reason
    summary = worse.summary()
    assert summary.ran == 3 and summary.success_rate == pytest.approx(1 / 3)

    flips = compare_runs(good, worse)
    assert flips.common == 3 and (flips.success_a, flips.success_b) == (3, 1)
    assert flips.negative_flips == ["twc-2", "twc-3"] and flips.positive_flips == []
    assert flips.negative_flip_rate == pytest.approx(2 / 3)
    back = compare_runs(worse, good)
    assert back.positive_flips == ["twc-2", "twc-3"] and back.negative_flips == []
    assert compare_runs(baseline, good).negative_flips == []


def test_unrecreatable_environments_are_skipped_not_failed(traces: Path, tmp_path: Path) -> None:
    source = sorted(traces.glob("*.jsonl"))[0]
    lines = source.read_text().splitlines()
    start = json.loads(lines[1])
    other = tmp_path / "alien.jsonl"
    other.write_text(
        "\n".join([lines[0], json.dumps({**start, "env": {"kind": "alfworld"}}), *lines[2:]])
    )
    plain = tmp_path / "plain.jsonl"
    plain.write_text("\n".join([lines[0], json.dumps({**start, "env": None}), *lines[2:]]))
    held_out = tmp_path / "heldout.jsonl"
    held_out.write_text(
        "\n".join(
            [lines[0], json.dumps({**start, "env": {**start["env"], "fold": "test"}}), *lines[2:]]
        )
    )
    loaded = [read_trace(p) for p in (other, plain, held_out)]

    def factory(recorder: TraceRecorder, trace: Trace) -> Agent:
        raise AssertionError("no agent is built for a task that cannot be recreated")

    run = evaluate_sync(loaded, factory, name="skips")
    assert [t.status for t in run.tasks] == ["skipped", "skipped", "skipped"]
    assert "cannot be recreated" in run.tasks[0].reason
    assert "unknown environment kind 'alfworld'" in run.tasks[0].reason
    assert "no skills were given" in run.tasks[1].reason
    assert "held-out" in run.tasks[2].reason
    summary = run.summary()
    assert (summary.tasks, summary.ran, summary.skipped) == (3, 0, 3)
    good = EvalRun(name="a", tasks=[TaskEval(task="alien", goal="g", status="ok", success=True)])
    assert compare_runs(good, run).common == 0  # skipped tasks never count as flips


def test_compare_on_a_fixed_set() -> None:
    def task(name: str, success: bool, status: str = "ok") -> TaskEval:
        return TaskEval(task=name, goal=name, status=status, success=success)

    a = EvalRun(name="a", tasks=[task("t1", True), task("t2", True), task("t3", False),
                                 task("t4", False), task("t5", True), task("t6", True, "skipped")])  # fmt: skip
    b = EvalRun(name="b", tasks=[task("t1", True), task("t2", False), task("t3", True),
                                 task("t4", False), task("t6", False), task("t7", True)])  # fmt: skip
    c = compare_runs(a, b)
    assert c.common == 4
    assert c.negative_flips == ["t2"] and c.positive_flips == ["t3"]
    assert c.only_a == ["t5"] and c.only_b == ["t6", "t7"]
    assert c.negative_flip_rate == 0.25


def test_reports_and_cli_compare(
    traces: Path, runs: tuple[EvalRun, EvalRun], tmp_path: Path
) -> None:
    good, worse = runs
    good.save(tmp_path / "a" / "run.json")
    worse.save(tmp_path / "b" / "run.json")
    assert load_run(tmp_path / "b" / "run.json").tasks == worse.tasks
    paths = write_report(worse, tmp_path / "report", comparison=compare_runs(good, worse))
    markdown = paths["markdown"].read_text()
    assert "negative flips 2 (66.7%)" in markdown and "twc-3" in markdown
    assert paths["html"].read_text().count("<table>") == 2
    for plot in ("success_by_family", "latency", "router_confusion", "flips"):
        assert paths[plot].stat().st_size > 1000
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(
        app, ["compare", str(tmp_path / "a" / "run.json"), str(tmp_path / "b" / "run.json")]
    )
    assert result.exit_code == 0, result.output
    assert "negative flips 2" in result.output and "negative flip: twc-3" in result.output
    vs_traces = CliRunner().invoke(app, ["compare", str(traces), str(tmp_path / "b" / "run.json")])
    assert "negative flip: twc-3" in vs_traces.output
