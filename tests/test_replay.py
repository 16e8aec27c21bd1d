"""Deterministic replay: record then replay is exact; changes are reported at the right event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from trellis.adapters import FunctionBackend, LLMRequest
from trellis.agent.runtime._config import AgentConfig
from trellis.agent.runtime._sdk import Agent
from trellis.agent.runtime._skills import skill
from trellis.agent.traces._replay import compare_traces, replay_many, replay_sync
from trellis.agent.traces._replay_check import check_trace
from trellis.agent.traces._trace import (
    LLMEvent,
    PlanEvent,
    SkillCallEvent,
    Trace,
    parse_trace_lines,
    read_trace,
)
from trellis.agent.traces._trace_cli import register
from trellis.agent.traces._trace_io import MemoryTraceSink, TraceWriter
from trellis.agent.traces._trace_record import TraceRecorder
from trellis.memory import run_sync
from trellis.planners import LLMPlanner, PlannerConfig, ScriptedPlanner

FIRST_PLAN = {
    "steps": [
        {"id": "look", "title": "look in the kitchen", "skill": "look",
         "args": {"room": "kitchen"}, "depends_on": []},
        {"id": "lift", "title": "lift the anvil", "skill": "pick_up",
         "args": {"item": "anvil"}, "depends_on": ["look"]},
        {"id": "grab", "title": "grab the spoon", "skill": "pick_up",
         "args": {"item": "spoon"}, "depends_on": ["look"]},
    ]
}  # fmt: skip
REPLAN = {
    "steps": [
        {"id": "mug", "title": "pick up the mug instead", "skill": "pick_up",
         "args": {"item": "mug"}, "depends_on": []},
    ]
}  # fmt: skip


@skill(side_effects=False)
def look(room: str) -> dict[str, Any]:
    """Look around a room."""
    return {"room": room, "items": ["mug", "anvil"]}


@skill
def pick_up(item: str) -> str:
    """Pick up an item."""
    if item == "anvil":
        raise ValueError("the anvil is too heavy")
    return f"holding {item}"


def scripted_model(request: LLMRequest) -> str:
    prompt = request.prompt or ""
    if prompt.startswith("Plan") or "steps" in json.dumps(request.json_schema or {}):
        return json.dumps(REPLAN if "anvil is too heavy" in prompt else FIRST_PLAN)
    # The act step: answer the step named in the prompt.
    step = next(line for line in prompt.splitlines() if line.startswith("Step: "))[6:]
    if step.startswith("look"):
        return json.dumps({"skill": "look", "args": {"room": "kitchen"}})
    item = "anvil" if "anvil" in step else "mug" if "mug" in step else "spoon"
    return json.dumps({"skill": "pick_up", "args": {"item": item}})


def record_run(sink: Any, *, planner: str = "llm") -> TraceRecorder:
    recorder = TraceRecorder(sink)
    backend = recorder.backend(FunctionBackend(scripted_model))
    if planner == "llm":
        inner: Any = LLMPlanner(backend, config=PlannerConfig(max_tokens=200))
    else:
        inner = ScriptedPlanner({"tidy the kitchen": FIRST_PLAN, "lift the anvil": REPLAN})
    agent = Agent(
        # Every step asks the model for its call, so act prompts are recorded too.
        config=AgentConfig(database_url="sqlite://", use_plan_args=planner != "llm"),
        backend=backend,
        planner=recorder.planner(inner),
        skills=recorder.skills([look, pick_up]),
    )
    try:
        recorder.run(agent, "tidy the kitchen", reminders=["never break anything"])
    finally:
        agent.close()
    return recorder


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "kitchen.jsonl"
    writer = TraceWriter(path)
    record_run(writer)
    writer.close()
    return path


def test_the_recorded_run_covers_failure_replan_and_an_act_call(trace_file: Path) -> None:
    trace = read_trace(trace_file)
    stages = [e.stage for e in trace.of_type(LLMEvent)]
    assert stages.count("plan") == 2 and stages.count("act") == 4
    plans = trace.of_type(PlanEvent)
    assert [p.replan for p in plans] == [False, True]
    end = trace.end
    assert end is not None and end.success and end.replans == 1
    by_id = {n.id: n for n in end.tree}
    repaired = next(n for n in end.tree if n.title == "pick up the mug instead")
    assert repaired.parent_id is not None and by_id[repaired.parent_id].title == "lift the anvil"
    assert all(n.status == "done" for n in end.tree if not n.superseded)


def test_record_then_replay_is_exact(trace_file: Path) -> None:
    trace = read_trace(trace_file)
    result = replay_sync(trace)
    assert result.error is None
    assert result.divergence is None, result.divergence.describe()
    assert result.ok and result.replayed_events == result.events == len(trace.events)


def test_replay_with_a_scripted_planner_is_exact() -> None:
    sink = MemoryTraceSink()
    record_run(sink, planner="scripted")
    trace = parse_trace_lines(sink.lines)
    assert trace.start.planner["kind"] == "ScriptedPlanner"
    assert not trace.of_type(LLMEvent)  # plans come from the script, calls from the plan
    assert [p.replan for p in trace.of_type(PlanEvent)] == [False, True]
    result = replay_sync(trace)
    assert result.ok, result.divergence


class _ChangedPromptPlanner(LLMPlanner):
    """The planner with one extra word in its prompt (through the goal line)."""

    async def plan(self, request: Any) -> Any:
        return await super().plan(request.model_copy(update={"goal": request.goal + " quickly"}))


def test_a_changed_planner_prompt_is_reported_at_the_plan_call(trace_file: Path) -> None:
    trace = read_trace(trace_file)
    result = replay_sync(
        trace,
        planner_factory=lambda backend: _ChangedPromptPlanner(
            backend, config=PlannerConfig(max_tokens=200)
        ),
    )
    assert not result.ok
    divergence = result.divergence
    assert divergence is not None
    first_plan_call = next(e for e in trace.of_type(LLMEvent) if e.stage == "plan")
    assert divergence.seq == first_plan_call.seq
    assert divergence.type == "llm_call"
    assert divergence.field.startswith("llm_call.prompt")
    assert "quickly" in str(divergence.got) and "quickly" not in str(divergence.expected)
    assert f"event {first_plan_call.seq} (llm_call)" in divergence.describe()


def test_a_changed_decision_in_the_recording_is_found(trace_file: Path) -> None:
    lines = trace_file.read_text().splitlines()
    trace = parse_trace_lines(lines)
    call = trace.of_type(SkillCallEvent)[0]
    edited = json.loads(lines[call.seq])
    edited["args"] = {"room": "garage"}
    lines[call.seq] = json.dumps(edited)
    result = replay_sync(parse_trace_lines(lines))
    assert result.divergence is not None
    assert result.divergence.seq == call.seq
    assert result.divergence.field == "skill_called.args.room"
    assert (result.divergence.expected, result.divergence.got) == ("garage", "kitchen")


def test_a_recording_that_stops_early_is_reported_as_such(trace_file: Path) -> None:
    trace = read_trace(trace_file)
    cut = Trace(header=trace.header, events=trace.events[:10], source="cut")
    result = replay_sync(cut)
    assert result.divergence is not None
    assert result.divergence.seq is None and result.divergence.expected == "(the recording ended)"


def test_compare_ignores_node_id_offsets(trace_file: Path) -> None:
    trace = read_trace(trace_file)
    shifted = [
        e.model_copy(update={"node_id": e.node_id + 100})
        if getattr(e, "node_id", None) is not None
        else e
        for e in trace.events
    ]
    # Shifting only some id fields breaks the correspondence with plan/end ids ...
    assert compare_traces(trace.events, shifted) is not None
    # ... while the same trace always matches itself.
    assert compare_traces(trace.events, list(trace.events)) is None


def test_the_fast_check_passes_recorded_runs_and_finds_changed_decisions(
    trace_file: Path,
) -> None:
    assert check_trace(read_trace(trace_file)).ok
    scripted = MemoryTraceSink()
    record_run(scripted, planner="scripted")
    assert check_trace(parse_trace_lines(scripted.lines)).ok
    lines = trace_file.read_text().splitlines()
    trace = parse_trace_lines(lines)
    # The act answer said "look in the kitchen"; a recorded call to the garage contradicts it.
    call = trace.of_type(SkillCallEvent)[0]
    edited = json.loads(lines[call.seq])
    edited["args"] = {"room": "garage"}
    changed = [*lines[: call.seq], json.dumps(edited), *lines[call.seq + 1 :]]
    result = check_trace(parse_trace_lines(changed))
    assert result.divergence is not None and result.divergence.seq == call.seq
    assert result.divergence.expected == {"skill": "look", "args": {"room": "kitchen"}}
    # A step recorded as done after its skill failed is caught at that status change.
    failed = next(e for e in trace.events if e.type == "skill_finished" and not e.ok)
    status = next(
        e
        for e in trace.events[failed.seq :]
        if e.type == "node_status" and e.node_id == failed.node_id
    )
    edited = json.loads(lines[status.seq])
    edited["status"] = "done"
    changed = [*lines[: status.seq], json.dumps(edited), *lines[status.seq + 1 :]]
    result = check_trace(parse_trace_lines(changed))
    assert result.divergence is not None and result.divergence.seq == status.seq
    assert (result.divergence.expected, result.divergence.got) == ("failed", "done")


def test_a_run_recorded_with_the_sdk_trace_option_replays_exactly(tmp_path: Path) -> None:
    backend = FunctionBackend(scripted_model)
    # The planner holds the plain backend: its calls must still reach the trace.
    planner = LLMPlanner(backend, config=PlannerConfig(max_tokens=200))
    path = tmp_path / "sdk.jsonl"
    with Agent(
        config=AgentConfig(database_url="sqlite://", use_plan_args=False),
        backend=backend,
        planner=planner,
        skills=[look, pick_up],
    ) as agent:
        result = agent.run("tidy the kitchen", reminders=["never break anything"], trace=path)
        recorded = path.read_text()
        trace = read_trace(path)
        assert trace.start.task_id == result.task_id and trace.start.goal == "tidy the kitchen"
        assert trace.end is not None and trace.end.success == result.success is True
        assert (trace.end.steps, trace.end.replans) == (result.steps, result.replans) == (4, 1)
        stages = [e.stage for e in trace.of_type(LLMEvent)]
        assert stages.count("plan") == 2 and stages.count("act") == 4
        # The agent itself is unchanged: a later run is not recorded anywhere.
        again = agent.run("tidy the kitchen")
        assert again.success and again.task_id != result.task_id
        assert planner.backend is backend and agent.deps.backend is backend
    assert path.read_text() == recorded
    replayed = replay_sync(trace)
    assert replayed.ok, replayed.divergence.describe() if replayed.divergence else replayed.error
    assert replayed.replayed_events == replayed.events == len(trace.events)


def _mixed_traces(trace_file: Path) -> tuple[list[Trace], int]:
    """A matching, a changed (first skill call's room), a scripted and the matching trace."""
    llm = read_trace(trace_file)
    scripted = MemoryTraceSink()
    record_run(scripted, planner="scripted")
    lines = trace_file.read_text().splitlines()
    call = llm.of_type(SkillCallEvent)[0]
    edited = json.loads(lines[call.seq])
    edited["args"] = {"room": "garage"}
    lines[call.seq] = json.dumps(edited)
    changed = parse_trace_lines(lines, source="changed")
    return [llm, changed, parse_trace_lines(scripted.lines), llm], call.seq


def test_one_replayer_for_many_traces_carries_nothing_between_them(trace_file: Path) -> None:
    traces, changed_seq = _mixed_traces(trace_file)
    results = run_sync(replay_many(traces))
    assert [r.ok for r in results] == [True, False, True, True]
    divergence = results[1].divergence
    assert divergence is not None and divergence.seq == changed_seq
    assert divergence.field == "skill_called.args.room"
    assert [r.replayed_events for r in results] == [len(t.events) for t in traces]


def test_worker_processes_reach_the_same_verdicts_in_order(trace_file: Path) -> None:
    traces, _seq = _mixed_traces(trace_file)
    results = run_sync(replay_many(traces))
    parallel = run_sync(replay_many(traces, workers=2))
    assert [(r.ok, r.replayed_events, r.divergence) for r in parallel] == [
        (r.ok, r.replayed_events, r.divergence) for r in results
    ]


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_replay_exit_codes(trace_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(_cli(), ["replay", str(trace_file)])
    assert ok.exit_code == 0, ok.output
    assert "replay matches" in ok.output
    quick = runner.invoke(_cli(), ["replay", "--check", str(trace_file)])
    assert quick.exit_code == 0 and "check passes" in quick.output
    lines = trace_file.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines[:4]) + "\n{not json\n")
    bad = runner.invoke(_cli(), ["replay", str(broken)])
    assert bad.exit_code == 2
    assert "line 5" in bad.output


@pytest.mark.slow
def test_record_then_replay_is_exact_with_the_embedded_model(tmp_path: Path) -> None:
    """Two real model moves in a twc game; the replay loads no model and matches exactly."""
    from trellis_twc import TwcConfig

    from trellis.adapters import EmbeddedBackend

    path = tmp_path / "embedded.jsonl"
    writer = TraceWriter(path)
    recorder = TraceRecorder(writer)
    model = EmbeddedBackend()
    backend = recorder.backend(model)
    agent = Agent(
        config=AgentConfig(database_url="sqlite://", max_steps=2, act_max_tokens=24),
        backend=backend,
        planner=recorder.planner(ScriptedPlanner({})),
    )
    try:
        recorder.run(agent, env=TwcConfig(seed=1, fold="train"))
    finally:
        agent.close()
        writer.close()
        run_sync(model.aclose())
    trace = read_trace(path)
    start = trace.start
    assert start.backend.startswith("embedded")
    assert start.model and start.model["name"] == "gemma-3-270m" and start.model["sha256"]
    calls = trace.of_type(LLMEvent)
    assert len(calls) >= 2 and all(c.stage == "act" and c.completion_tokens > 0 for c in calls)
    result = replay_sync(trace)
    assert result.ok, result.divergence.describe() if result.divergence else result.error


def test_a_run_paused_for_approval_is_recorded_and_replays() -> None:
    @skill(needs_approval=True)
    def throw_away(item: str) -> str:
        """Throw an item away (a human approves each call)."""
        return f"{item} is gone"

    plan = {"steps": [{"id": "bin", "title": "throw away the box", "skill": "throw_away",
                       "args": {"item": "box"}, "depends_on": []}]}  # fmt: skip
    sink = MemoryTraceSink()
    recorder = TraceRecorder(sink)
    agent = Agent(
        config=AgentConfig(database_url="sqlite://"),
        backend=recorder.backend(FunctionBackend(lambda request: "{}")),
        planner=recorder.planner(ScriptedPlanner({"clean up": plan})),
        skills=recorder.skills([throw_away]),
    )
    try:
        result = recorder.run(agent, "clean up")
    finally:
        agent.close()
    assert result.outcome == "interrupted"
    trace = parse_trace_lines(sink.lines)
    assert [e.type for e in trace.events][-2:] == ["approval_requested", "task_finished"]
    assert trace.events[-2].args == {"item": "box"}
    replayed = replay_sync(trace)
    assert replayed.ok, replayed.divergence


@pytest.mark.slow
def test_cli_record_with_the_embedded_defaults_then_replay(tmp_path: Path) -> None:
    out = tmp_path / "twc.jsonl"
    app = _cli()
    runner = CliRunner()
    recorded = runner.invoke(
        app,
        ["record", "--env", "twc", "--seed", "2", "--set", "fold=train", "--max-steps", "1",
         "--out", str(out), "--family", "twc", "--save"],
    )  # fmt: skip
    assert recorded.exit_code == 0, recorded.output
    trace = read_trace(out)
    assert trace.start.env and trace.start.env["seed"] == 2
    assert trace.start.metadata == {"family": "twc"} and trace.end is not None
    stored = recorded.output.split("stored as ")[1].split()[0]
    for args in (["replay", str(out)], ["replay", "--check", str(out)], ["replay", stored]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    # The same task live again, base model only: the same greedy model decides the same.
    evaluated = runner.invoke(
        app, ["eval", str(out), "--adapters", "none", "--out", str(tmp_path / "eval")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    run = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert [t["status"] for t in run["tasks"]] == ["ok"]
    assert run["tasks"][0]["success"] == trace.end.success
    assert (tmp_path / "eval" / "report.html").is_file()
    compared = runner.invoke(app, ["compare", str(out), str(tmp_path / "eval" / "run.json")])
    assert compared.exit_code == 0 and "negative flips 0" in compared.output


def test_model_extracted_and_stored_cues_replay_exactly(tmp_path: Path) -> None:
    """The trace holds how reminders became cues (the reminder model's calls, the user's
    stored cues), so a replay on an empty database makes the same cues and decisions."""
    from trellis.adapters import Cue, ReminderAdapter, ReminderConfig
    from trellis.agent.traces._trace import CuesEvent
    from trellis.planners import CueStore

    def model(request: LLMRequest) -> str:
        if request.adapter == "cues" or "polarity" in json.dumps(request.json_schema or {}):
            return '{"kind":"correction","polarity":"forbid","action":"pick","subject":"spoon"}'
        return scripted_model(request)

    backend = FunctionBackend(model)
    path = tmp_path / "cues.jsonl"
    with Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/rec.db", use_plan_args=False),
        backend=backend,
        planner=LLMPlanner(backend, config=PlannerConfig(max_tokens=200)),
        reminder_adapter=ReminderAdapter(backend, config=ReminderConfig(mode="model")),
        skills=[look, pick_up],
    ) as agent:
        stored = Cue(
            kind="correction", polarity="forbid", subject="anvil", constraint="never lift the anvil"
        )
        CueStore(agent.store.engine).add("kim", [stored])
        agent.run("tidy the kitchen", reminders=["don't take the spoon"], user_id="kim", trace=path)
    trace = read_trace(path)
    assert trace.start.reminder["mode"] == "model"
    cues = trace.of_type(CuesEvent)[0]
    assert [c["subject"] for c in cues.standing] == ["anvil"] and len(cues.cues) == 2
    assert any(e.stage == "remind" for e in trace.of_type(LLMEvent))
    replayed = replay_sync(trace)
    assert replayed.ok, replayed.divergence.describe() if replayed.divergence else replayed.error


@pytest.mark.parametrize("name", ["kitchen", "cues", "approval"])
def test_traces_recorded_in_format_1_still_replay_exactly(name: str) -> None:
    """Traces from before the stream and the trace shared one vocabulary replay unchanged."""
    trace = read_trace(Path(__file__).parent / "data" / "traces_v1" / f"{name}.jsonl")
    assert trace.header.version == "1.0"
    result = replay_sync(trace)
    assert result.ok, result.divergence.describe() if result.divergence else result.error
    assert check_trace(trace).ok


@pytest.mark.slow
def test_a_twc_game_recorded_in_format_1_still_replays_exactly() -> None:
    trace = read_trace(Path(__file__).parent / "data" / "traces_v1" / "twc.jsonl")
    assert trace.start.env and trace.start.env["kind"] == "twc"
    result = replay_sync(trace)
    assert result.ok, result.divergence.describe() if result.divergence else result.error
