"""The trace format: versioned JSON Lines, one header line and then one event per line.

The first line is a :class:`TraceHeader` (``format: "trellis-trace"``, ``version: "2.1"``);
every later line is one :data:`TraceEvent`: one of the run's own events
(:data:`trellis.agent.runtime.AgentEvent`, same ``type`` tag, same fields, ``task_id`` and
Unix time ``at``) with its sequence number ``seq`` (1, 2, ...), seconds since the run
started ``t``, and what replay needs beyond the stream. A reader accepts ``2.x`` traces
(minor versions only add optional fields) and ``1.x`` traces (from before the stream and the
trace shared one vocabulary: read into today's events by :func:`upgrade_v1_event`), and
refuses another major version by name. ``agent/traces/trace_schema.json`` is the JSON Schema of both line kinds,
generated from these models by :func:`trace_json_schema`.

Traces are written to a file (:class:`TraceWriter`, fsync'd per event or per batch) or kept
in memory (:class:`MemoryTraceSink`) and stored in the database (:mod:`agent._trace_store`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from trellis.agent.errors import TraceFormatError, TraceVersionError
from trellis.agent.runtime import (
    ApprovalRequested,
    CuesMade,
    EventBase,
    LLMCall,
    NodeStatusChanged,
    PlanMade,
    RouteDecided,
    SkillCalled,
    SkillFinished,
    TaskFinished,
    TaskStarted,
)

__all__ = [
    "RECORDED_AS",
    "TRACE_FORMAT",
    "TRACE_VERSION",
    "CuesEvent",
    "EndEvent",
    "InterruptEvent",
    "LLMEvent",
    "PlanEvent",
    "RouteEvent",
    "SkillCallEvent",
    "SkillInfo",
    "SkillResultEvent",
    "TaskStartEvent",
    "Trace",
    "TraceEvent",
    "TraceHeader",
    "TreeEvent",
    "TreeNode",
    "iter_trace_files",
    "parse_trace_lines",
    "read_trace",
    "render_schema",
    "schema_path",
    "trace_json_schema",
    "upgrade_v1_event",
]

TRACE_FORMAT = "trellis-trace"
TRACE_VERSION = "2.1"
_MAJOR = TRACE_VERSION.split(".")[0]
_READABLE_MAJORS = ("1", "2")  # 1.x lines are upgraded as they are read


class TraceHeader(BaseModel):
    """The first line of every trace file."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    format: Literal["trellis-trace"] = "trellis-trace"
    """Always ``trellis-trace``."""
    version: str = TRACE_VERSION
    """``major.minor``; readers accept their own major version only."""
    created: float = Field(default_factory=time.time)
    """Unix time the trace was started."""
    producer: str = "trellis"
    """What wrote the trace."""


class _Recorded(BaseModel):
    """What a trace adds to every event of the run: its place in the trace."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    seq: int = Field(ge=1)
    """Position in the trace, from 1, without gaps."""
    t: float = 0.0
    """Seconds since the run started."""


class SkillInfo(BaseModel):
    """A skill of the catalogue as the run saw it (enough to rebuild its prompt line)."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    name: str
    """Skill name."""
    description: str
    """What it does."""
    args_schema: dict[str, Any]
    """JSON Schema of its arguments (pydantic's, as the prompts render it)."""
    side_effects: bool = True
    """Whether it changes the world."""
    needs_approval: bool = False
    """Whether a human approves each call."""
    timeout_s: float = 60.0
    """Its time limit."""


class TaskStartEvent(TaskStarted, _Recorded):
    """:class:`TaskStarted` as recorded: what the run was asked and with which configuration."""

    reminders: list[str] = []
    """The user's reminders, verbatim."""
    env: dict[str, Any] | None = None
    """Environment spec as the pack records it (``{"kind": ..., **fields}``) when the task has one."""
    config: dict[str, Any] = {}
    """The agent configuration (``AgentConfig``) in force."""
    planner: dict[str, Any] = {}
    """Planner kind (``llm`` or another name), its configuration and adapter."""
    reminder: dict[str, Any] = {}
    """How reminders became cues: ``mode``, ``adapter`` and ``config`` of the reminder
    adapter (empty in traces from before it was recorded: the rule extractor)."""
    backend: str = ""
    """The LLM backend's name."""
    model: dict[str, Any] | None = None
    """Base model name and content hash (``sha256``), when known."""
    adapters: list[dict[str, Any]] = []
    """Adapters available: name, base model, content hash of their weight files."""
    skills: list[SkillInfo] = []
    """The skill catalogue."""
    metadata: dict[str, Any] = {}
    """Free-form labels (task family, dataset name) used by reports."""


class CuesEvent(CuesMade, _Recorded):
    """:class:`CuesMade` as recorded (a replay uses exactly its ``standing`` cues)."""


class PlanEvent(PlanMade, _Recorded):
    """:class:`PlanMade` as recorded, with the planner's answers; also a plan that failed."""

    node_ids: list[int] = []
    """The nodes created, in plan order (none when planning failed)."""
    titles: list[str] = []
    """Their titles."""
    plan: dict[str, Any] | None = None
    """The parsed, validated plan (None when planning failed)."""
    raw_outputs: list[str] = []
    """The planner's raw answers, in order."""
    errors: list[str] = []
    """Validation errors of rejected attempts."""
    error: str | None = None
    """Why planning failed, when it did."""
    planner: str = ""
    """The planner that answered."""
    llm_seqs: list[int] = []
    """``seq`` of the ``llm_call`` events of this plan (their prompts are the plan prompts)."""
    examples: list[dict[str, Any]] | None = None
    """The past cases shown to the planner (``PastCase`` records), for a root plan; None for
    other plans and in traces from before cases were recorded."""
    other_steps: list[dict[str, Any]] | None = None
    """The steps already in the task that a sub-plan or replan was offered to wait for
    (``OtherStep`` records); None for root plans and in traces before format 2.1."""


class RouteEvent(RouteDecided, _Recorded):
    """:class:`RouteDecided` as recorded."""


class LLMEvent(LLMCall, _Recorded):
    """:class:`LLMCall` as recorded: the request and the response.

    Also the calls no stream event reports (the router's own model calls: stage ``route``).
    """

    node_id: int | None = None
    """Node it served, when known."""
    requested_adapter: str | None = None
    """Adapter the request named (None: base model); ``adapter`` is the one that served it."""
    prompt: str | None = None
    """Completion prompt (or None when ``messages`` is used)."""
    messages: list[dict[str, str]] | None = None
    """Chat messages, when the request was a chat."""
    sampling: dict[str, Any] = {}
    """Sampling parameters."""
    schema_sha256: str | None = None
    """Hash of the JSON schema that constrained the output, if any."""
    text: str
    """Generated text."""
    parsed: Any = None
    """Parsed JSON answer."""
    json_error: str | None = None
    """Why the text did not parse, when it did not."""
    prompt_tokens: int = 0
    """Prompt tokens."""
    completion_tokens: int = 0
    """Generated tokens."""
    latency_s: float = 0.0
    """Seconds the call took."""
    backend: str = ""
    """Backend that answered."""
    finish_reason: str = "stop"
    """``stop`` or ``length``."""


class SkillCallEvent(SkillCalled, _Recorded):
    """:class:`SkillCalled` as recorded."""


class SkillResultEvent(SkillFinished, _Recorded):
    """:class:`SkillFinished` as recorded, with the error's class."""

    error_type: str | None = None
    """Error class, on failure."""


class TreeEvent(NodeStatusChanged, _Recorded):
    """:class:`NodeStatusChanged` as recorded."""


class InterruptEvent(ApprovalRequested, _Recorded):
    """:class:`ApprovalRequested` as recorded."""


class TreeNode(BaseModel):
    """One node of the final tree."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    id: int
    """Node id (in the recording database)."""
    parent_id: int | None
    """Parent node."""
    key: str
    """Step key among siblings."""
    kind: str
    """goal, step, decompose, env."""
    title: str
    """Title."""
    status: str
    """Final status."""
    skill: str | None = None
    """Planned skill."""
    args: dict[str, Any] = {}
    """Planned arguments."""
    adapter: str | None = None
    """Adapter that served it."""
    depends_on: list[int] = []
    """Nodes it waited for."""
    superseded: bool = False
    """Replaced by a replan."""


class EndEvent(TaskFinished, _Recorded):
    """:class:`TaskFinished` as recorded, with the final tree (also when an exception stopped
    the run: then ``outcome`` is ``failed`` and ``error`` names it)."""

    llm_latency_s: float = 0.0
    """Seconds spent in model calls."""
    error: str | None = None
    """The exception that stopped the run, if one did."""
    tree: list[TreeNode] = []
    """Every node of the task at the end (superseded ones marked)."""


TraceEvent = Annotated[
    TaskStartEvent
    | CuesEvent
    | PlanEvent
    | RouteEvent
    | LLMEvent
    | SkillCallEvent
    | SkillResultEvent
    | TreeEvent
    | InterruptEvent
    | EndEvent,
    Field(discriminator="type"),
]
"""Any trace event: a run's event (:data:`trellis.agent.runtime.AgentEvent`) as recorded."""

RECORDED_AS: dict[type[EventBase], type[EventBase]] = {
    TaskStarted: TaskStartEvent,
    CuesMade: CuesEvent,
    PlanMade: PlanEvent,
    RouteDecided: RouteEvent,
    LLMCall: LLMEvent,
    SkillCalled: SkillCallEvent,
    SkillFinished: SkillResultEvent,
    NodeStatusChanged: TreeEvent,
    ApprovalRequested: InterruptEvent,
    TaskFinished: EndEvent,
}
"""The trace event class of each run event class (``LLMToken`` is not recorded)."""

# Trace format 1.x named the events differently and kept the recording time in ``ts``.
_V1_TYPES = {
    "task_start": "task_started",
    "cues": "cues_made",
    "plan": "plan_made",
    "route": "route",
    "llm": "llm_call",
    "skill_call": "skill_called",
    "skill_result": "skill_finished",
    "tree": "node_status",
    "interrupt": "approval_requested",
    "end": "task_finished",
}


def upgrade_v1_event(value: Any, task_id: str) -> Any:
    """A trace 1.x event line (parsed JSON) in today's vocabulary; other values unchanged."""
    if not isinstance(value, dict):
        return value
    event = dict(value)
    kind = event.get("type")
    event["type"] = _V1_TYPES.get(kind, kind) if isinstance(kind, str) else kind
    if "ts" in event:
        event["at"] = event.pop("ts")
    event.setdefault("task_id", task_id)
    if kind == "llm":  # 1.x: ``adapter`` was the one requested, ``served_adapter`` the server's
        event["requested_adapter"] = event.get("adapter")
        event["adapter"] = event.pop("served_adapter", event.get("adapter"))
    if kind == "end":
        for name, default in (("steps", 0), ("replans", 0), ("adapters", []),
                              ("prompt_tokens", 0), ("completion_tokens", 0),
                              ("elapsed_s", 0.0)):  # fmt: skip
            event.setdefault(name, default)
    return event


_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(TraceEvent)


class Trace(BaseModel):
    """A parsed trace: its header and its events in order."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    header: TraceHeader
    """The header line."""
    events: list[Any]
    """The events (``TraceEvent`` instances) in ``seq`` order."""
    source: str = ""
    """Where it was read from (file name or database id), for messages."""

    @property
    def start(self) -> TaskStartEvent:
        """The ``task_start`` event; :class:`TraceFormatError` when it is missing."""
        for event in self.events:
            if isinstance(event, TaskStartEvent):
                return event
        raise TraceFormatError(f"{self.source or 'the trace'} has no task_start event")

    @property
    def end(self) -> EndEvent | None:
        """The ``end`` event, or None when the run did not finish."""
        last = self.events[-1] if self.events else None
        return last if isinstance(last, EndEvent) else None

    def of_type(self, kind: type[Any]) -> list[Any]:
        """Events of one class, in order."""
        return [e for e in self.events if isinstance(e, kind)]


# --- reading -----------------------------------------------------------------------------------


def _check_header(value: Any, source: str) -> TraceHeader:
    where = f"{source} line 1"
    if not isinstance(value, dict) or value.get("format") != TRACE_FORMAT:
        raise TraceFormatError(
            f"{where} is not a Trellis trace header (expected "
            f'{{"format": "{TRACE_FORMAT}", "version": "{TRACE_VERSION}", ...}}); '
            "record traces with `Agent` tracing or `trellis eval`"
        )
    version = str(value.get("version", ""))
    major = version.split(".")[0]
    if major not in _READABLE_MAJORS:
        raise TraceVersionError(
            f"{source} is trace format version {version!r}; this Trellis reads versions "
            f"{', '.join(m + '.x' for m in _READABLE_MAJORS)}. "
            + (
                "Upgrade Trellis (pip install -U trellis-agent) to read it."
                if major.isdigit() and int(major) > int(_MAJOR)
                else "Re-record the trace with this version of Trellis."
            )
        )
    return TraceHeader.model_validate(value)


def _not_json(source: str, number: int, message: str, column: object) -> TraceFormatError:
    return TraceFormatError(
        f"{source} line {number} is not valid JSON ({message} at column {column}): "
        "the trace is truncated or corrupted there; cut the file before that line to "
        "replay the part that was recorded"
    )


def parse_trace_lines(lines: Iterable[str], *, source: str = "<trace>") -> Trace:
    """Parse JSONL lines of a trace; errors name the line number and what is wrong."""
    header: TraceHeader | None = None
    events: list[Any] = []
    number = 0
    upgrade = False
    task_id = ""  # 1.x events other than the first did not name their task
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        if header is None:
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _not_json(source, number, exc.msg, exc.colno) from None
            header = _check_header(value, source)
            upgrade = header.version.split(".")[0] == "1"
            continue
        try:
            if upgrade:
                value = upgrade_v1_event(json.loads(line), task_id)
                event = _EVENT_ADAPTER.validate_python(value)
            else:
                # pydantic parses the JSON itself: one pass, no intermediate dicts.
                event = _EVENT_ADAPTER.validate_json(line)
        except json.JSONDecodeError as exc:
            raise _not_json(source, number, exc.msg, exc.colno) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            if first.get("type") == "json_invalid":
                column = first.get("ctx", {}).get("column", "?")
                raise _not_json(source, number, str(first.get("msg")), column) from None
            loc = ".".join(str(p) for p in first.get("loc", ())) or "(event)"
            raise TraceFormatError(
                f"{source} line {number} is not a valid trace event ({loc}: {first.get('msg')})"
            ) from None
        if isinstance(event, TaskStartEvent):
            task_id = event.task_id
        expected = len(events) + 1
        if event.seq != expected:
            raise TraceFormatError(
                f"{source} line {number} has seq {event.seq}, expected {expected}: events are "
                "missing or out of order"
            )
        events.append(event)
    if header is None:
        raise TraceFormatError(f"{source} is empty: a trace starts with a header line")
    return Trace(header=header, events=events, source=source)


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a trace file; :class:`TraceFormatError` / :class:`TraceVersionError` when unusable."""
    file = Path(path)
    if not file.is_file():
        raise TraceFormatError(f"no trace file at {file}; pass the path of a .jsonl trace")
    with file.open("r", encoding="utf-8", errors="strict") as handle:
        try:
            return parse_trace_lines(handle, source=str(file))
        except UnicodeDecodeError as exc:
            raise TraceFormatError(f"{file} is not UTF-8 text ({exc.reason})") from None


def iter_trace_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Trace files named directly or found (``*.jsonl``) in named folders, sorted."""
    for item in paths:
        path = Path(item)
        if path.is_dir():
            yield from sorted(path.glob("*.jsonl"))
        else:
            yield path


def trace_json_schema() -> dict[str, Any]:
    """JSON Schema of a trace line: a header or one of the events."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Trellis trace line",
        "description": (
            f"A Trellis trace is JSON Lines. Line 1 is the header (format {TRACE_FORMAT!r}, "
            f"version {TRACE_VERSION!r}); every later line is one event with seq, t, task_id, "
            "at and type."
        ),
        "header": TraceHeader.model_json_schema(),
        "event": TypeAdapter(TraceEvent).json_schema(),
    }


def schema_path() -> Path:
    """Where the packaged JSON Schema of the trace format lives."""
    return Path(__file__).with_name("trace_schema.json")


def render_schema() -> str:
    """The text of ``trace_schema.json`` (``python -m trellis.agent.traces._trace_schema`` rewrites the file)."""
    return json.dumps(trace_json_schema(), indent=1, sort_keys=True) + "\n"
