"""The trace format: writing, reading, bad input, the JSON Schema file, database storage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trellis.adapters import FunctionBackend
from trellis.agent.errors import TraceFormatError, TraceVersionError
from trellis.agent.runtime import AgentEvent, LLMCall, SkillCalled, TaskFinished, TaskStarted
from trellis.agent.runtime._config import AgentConfig
from trellis.agent.runtime._sdk import Agent
from trellis.agent.runtime._skills import skill
from trellis.agent.traces._trace import (
    RECORDED_AS,
    EndEvent,
    LLMEvent,
    PlanEvent,
    SkillResultEvent,
    TaskStartEvent,
    parse_trace_lines,
    read_trace,
    render_schema,
    schema_path,
)
from trellis.agent.traces._trace_io import MemoryTraceSink, TraceWriter
from trellis.agent.traces._trace_record import TraceRecorder
from trellis.agent.traces._trace_store import TraceStore
from trellis.memory import make_engine, upgrade
from trellis.memory.errors import NotFoundError
from trellis.planners import LLMPlanner, PlannerConfig

RECORDED_TAGS = [cls.model_fields["type"].default for cls in RECORDED_AS]
V1_TRACES = Path(__file__).parent / "data" / "traces_v1"

PLAN = {
    "steps": [
        {"id": "a", "title": "look in the kitchen", "skill": "look",
         "args": {"room": "kitchen"}, "depends_on": []},
        {"id": "b", "title": "pick up the mug", "skill": "pick_up",
         "args": {"item": "mug"}, "depends_on": ["a"]},
    ]
}  # fmt: skip


@skill(side_effects=False)
def look(room: str) -> dict[str, object]:
    """Look around a room."""
    return {"room": room, "items": ["mug"]}


@skill
def pick_up(item: str) -> str:
    """Pick up an item."""
    if item == "anvil":
        raise ValueError("too heavy")
    return f"holding {item}"


def record(sink: object, *, plan: Any = PLAN, goal: str = "tidy the kitchen") -> TraceRecorder:
    recorder = TraceRecorder(sink, metadata={"family": "kitchen"})  # type: ignore[arg-type]
    backend = recorder.backend(FunctionBackend(lambda request: json.dumps(plan)))
    agent = Agent(
        config=AgentConfig(database_url="sqlite://"),
        backend=backend,
        planner=recorder.planner(LLMPlanner(backend, config=PlannerConfig(max_tokens=160))),
        skills=recorder.skills([look, pick_up]),
    )
    try:
        recorder.run(agent, goal, reminders=["mugs go in the dishwasher"])
    finally:
        agent.close()
    return recorder


@pytest.fixture(scope="module")
def recorded_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traces") / "kitchen.jsonl"
    writer = TraceWriter(path, fsync="event")
    record(writer)
    writer.close()
    return path


def test_a_recorded_run_has_every_kind_of_event_in_order(recorded_file: Path) -> None:
    trace = read_trace(recorded_file)
    assert trace.header.version == "2.1"
    types = [e.type for e in trace.events]
    assert types[0] == "task_started" and types[-1] == "task_finished"
    assert [e.seq for e in trace.events] == list(range(1, len(types) + 1))
    for kind in ("cues_made", "llm_call", "plan_made", "route", "skill_called",
                 "skill_finished", "node_status"):  # fmt: skip
        assert kind in types, kind
    assert {e.task_id for e in trace.events} == {trace.start.task_id}
    start = trace.start
    assert isinstance(start, TaskStartEvent)
    assert start.goal == "tidy the kitchen"
    assert start.reminders == ["mugs go in the dishwasher"]
    assert {s.name for s in start.skills} == {"look", "pick_up"}
    assert start.planner["kind"] == "llm"
    assert start.metadata == {"family": "kitchen"}
    llm = trace.of_type(LLMEvent)[0]
    assert llm.stage == "plan" and llm.prompt and "tidy the kitchen" in llm.prompt
    assert llm.schema_sha256 and len(llm.schema_sha256) == 64
    plan = trace.of_type(PlanEvent)[0]
    assert plan.llm_seqs == [llm.seq]
    assert [s["id"] for s in (plan.plan or {})["steps"]] == ["a", "b"]
    assert len(plan.node_ids) == 2
    results = trace.of_type(SkillResultEvent)
    assert results[0].result == {"room": "kitchen", "items": ["mug"]}
    end = trace.end
    assert isinstance(end, EndEvent)
    assert end.success and end.steps == 2 and end.outcome == "success"
    assert [n.status for n in end.tree] == ["done", "done", "done"]
    assert all(e.at >= trace.header.created - 1 for e in trace.events)


def test_a_truncated_trace_names_the_line(recorded_file: Path, tmp_path: Path) -> None:
    lines = recorded_file.read_text().splitlines()
    broken = tmp_path / "cut.jsonl"
    broken.write_text("\n".join(lines[:5]) + "\n" + lines[5][: len(lines[5]) // 2] + "\n")
    with pytest.raises(TraceFormatError, match=r"cut.jsonl line 6 is not valid JSON"):
        read_trace(broken)


def test_a_corrupted_event_names_the_line_and_field(recorded_file: Path) -> None:
    lines = recorded_file.read_text().splitlines()
    event = json.loads(lines[3])
    event["seq"] = "three"
    lines[3] = json.dumps(event)
    with pytest.raises(TraceFormatError, match=r"line 4 is not a valid trace event \(.*seq"):
        parse_trace_lines(lines, source="x.jsonl")
    lines = recorded_file.read_text().splitlines()
    del lines[2]
    with pytest.raises(TraceFormatError, match=r"line 3 has seq 3, expected 2"):
        parse_trace_lines(lines)


def test_a_newer_major_version_is_refused_clearly(recorded_file: Path) -> None:
    lines = recorded_file.read_text().splitlines()
    header = json.loads(lines[0])
    header["version"] = "3.0"
    with pytest.raises(TraceVersionError, match=r"version '3.0'.*reads versions 1.x, 2.x.*Upgrade"):
        parse_trace_lines([json.dumps(header), *lines[1:]])
    header["version"] = "2.7"  # a newer minor version only adds fields: accepted
    trace = parse_trace_lines([json.dumps(header), *lines[1:]])
    assert trace.header.version == "2.7"


def test_not_a_trace_and_empty_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="not a Trellis trace header"):
        parse_trace_lines(['{"hello": 1}'])
    with pytest.raises(TraceFormatError, match="is empty"):
        parse_trace_lines([])
    with pytest.raises(TraceFormatError, match="no trace file"):
        read_trace(tmp_path / "missing.jsonl")


def test_the_schema_file_is_up_to_date() -> None:
    assert schema_path().read_text() == render_schema(), (
        "run: python -m trellis.agent.traces._trace_schema"
    )
    schema = json.loads(render_schema())
    kinds = set(schema["event"]["discriminator"]["mapping"])
    # One vocabulary: a trace records the run's own events, under the stream's tags.
    assert kinds == set(RECORDED_TAGS) == {
        "task_started", "cues_made", "plan_made", "route", "llm_call", "skill_called",
        "skill_finished", "node_status", "approval_requested", "task_finished",
    }  # fmt: skip


def test_event_fsync_leaves_every_event_on_disk_before_close(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    writer = TraceWriter(path, fsync="event")
    recorder = record(writer)
    # Not closed: what was written is already complete and readable.
    assert len(read_trace(path).events) == len(recorder.events)
    writer.close()


def test_traces_are_stored_in_the_database(database_url: str) -> None:
    sink = MemoryTraceSink()
    record(sink)
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        store = TraceStore(engine)
        trace_id = store.save(sink.lines)
        loaded = store.load(trace_id)
        assert [e.model_dump() for e in loaded.events] == [
            e.model_dump() for e in parse_trace_lines(sink.lines).events
        ]
        listed = store.list()
        assert [(t.id, t.outcome, t.success, t.goal) for t in listed] == [
            (trace_id, "success", True, "tidy the kitchen")
        ]
        with pytest.raises(NotFoundError, match="no stored trace"):
            store.load("nope")
        with pytest.raises(TraceFormatError):
            store.save(['{"format": "trellis-trace", "version": "9.0"}'])
    finally:
        engine.dispose()


def test_otel_export_follows_the_genai_conventions(recorded_file: Path) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from trellis.agent.traces._trace_otel import export_otel

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace = read_trace(recorded_file)
    count = export_otel(trace, tracer_provider=provider, capture_content=True)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert count == len(exporter.get_finished_spans()) == 4
    root = spans["invoke_agent trellis"]
    root_attributes = dict(root.attributes or {})
    assert root_attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root_attributes["trellis.success"] is True
    llm = next(s for s in spans.values() if s.name.startswith("text_completion"))
    llm_attributes = dict(llm.attributes or {})
    llm_event = trace.of_type(LLMEvent)[0]
    assert llm_attributes["gen_ai.usage.input_tokens"] == llm_event.prompt_tokens
    assert llm_attributes["gen_ai.prompt"] == llm_event.prompt
    assert llm.parent is not None and root.context is not None
    assert llm.parent.span_id == root.context.span_id
    tool = spans["execute_tool pick_up"]
    assert dict(tool.attributes or {})["gen_ai.tool.name"] == "pick_up"
    assert (tool.start_time or 0) <= (tool.end_time or 0)
    assert any(e.name == "trellis.plan_made" for e in root.events)


def test_the_trace_records_the_run_events_themselves(recorded_file: Path) -> None:
    """Stream and trace share one vocabulary: each trace event is the run's event (same class
    by inheritance, same tag, same fields) plus its place in the trace and replay's detail."""
    from pydantic import TypeAdapter

    trace = read_trace(recorded_file)
    stream = TypeAdapter(AgentEvent)
    for event in trace.events:
        as_streamed = stream.validate_python(event.model_dump())
        assert isinstance(event, type(as_streamed)), (event.type, type(as_streamed))
        shared = as_streamed.model_dump()
        assert {k: v for k, v in event.model_dump().items() if k in shared} == shared
    assert isinstance(trace.start, TaskStarted) and isinstance(trace.end, TaskFinished)
    assert trace.of_type(SkillCalled) and trace.of_type(LLMCall) == trace.of_type(LLMEvent)
    llm = trace.of_type(LLMEvent)[0]
    assert llm.adapter is None and llm.requested_adapter is None  # the base model, asked and served


@pytest.mark.parametrize("name", ["kitchen", "cues", "approval", "twc"])
def test_a_trace_recorded_in_format_1_is_read_into_todays_events(name: str) -> None:
    raw = (V1_TRACES / f"{name}.jsonl").read_text().splitlines()
    old = [json.loads(line) for line in raw[1:]]
    trace = read_trace(V1_TRACES / f"{name}.jsonl")
    assert trace.header.version == "1.0" and len(trace.events) == len(old)
    renamed = {"task_start": TaskStartEvent, "llm": LLMEvent, "end": EndEvent}
    for before, event in zip(old, trace.events, strict=True):
        assert event.seq == before["seq"] and event.at == before["ts"]
        assert event.task_id == trace.start.task_id
        if before["type"] in renamed:
            assert isinstance(event, renamed[before["type"]])
        if before["type"] == "llm":  # 1.x named the requested adapter ``adapter``
            assert event.requested_adapter == before["adapter"]
            assert event.adapter == before["served_adapter"]
            assert event.text == before["text"]
    assert trace.end is not None


def test_a_trace_with_an_unknown_event_in_format_1_names_the_line(tmp_path: Path) -> None:
    lines = (V1_TRACES / "kitchen.jsonl").read_text().splitlines()
    event = json.loads(lines[2])
    event["type"] = "teleport"
    lines[2] = json.dumps(event)
    with pytest.raises(TraceFormatError, match=r"line 3 is not a valid trace event"):
        parse_trace_lines(lines, source="old.jsonl")


def test_every_model_call_says_why_its_adapter_served_it(recorded_file: Path) -> None:
    trace = read_trace(recorded_file)
    whys = {(e.stage, e.why) for e in trace.of_type(LLMEvent)}
    assert ("plan", "no adapter for the plan stage: base model") in whys
    assert all(why for _stage, why in whys)
