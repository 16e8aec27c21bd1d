"""The trace format: versioned JSON Lines, one header line and then one event per line.

The first line is a :class:`TraceHeader` (``format: "trellis-trace"``, ``version: "1.0"``);
every later line is one :data:`TraceEvent` with a sequence number ``seq`` (1, 2, ...), a
Unix timestamp ``ts``, seconds since the run started ``t`` and a ``type`` tag. A reader
accepts any ``1.x`` trace (minor versions only add optional fields) and refuses another
major version by name. ``agent/trace_schema.json`` is the JSON Schema of both line kinds,
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

__all__ = [
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
]

TRACE_FORMAT = "trellis-trace"
TRACE_VERSION = "1.0"
_MAJOR = TRACE_VERSION.split(".")[0]


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


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    seq: int = Field(ge=1)
    """Position in the trace, from 1, without gaps."""
    ts: float
    """Unix time the event was recorded."""
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


class TaskStartEvent(_Event):
    """The run started: what it was asked and with which configuration."""

    type: Literal["task_start"] = "task_start"
    task_id: str
    """The task id in the recording database."""
    goal: str
    """The task's goal."""
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


class CuesEvent(_Event):
    """Reminders became cues for the planner."""

    type: Literal["cues"] = "cues"
    cues: list[str]
    """Rendered cues, as the planner reads them."""
    standing: list[dict[str, Any]] = []
    """The user's stored cues in force (``Cue`` records); a replay uses exactly these."""


class PlanEvent(_Event):
    """The planner added (or failed to add) steps under a node."""

    type: Literal["plan"] = "plan"
    parent_id: int | None
    """The node planned (the root, a decomposed step, or a replanned failed step)."""
    replan: bool = False
    """True when the plan repairs a failed step."""
    node_ids: list[int] = []
    """The nodes created, in plan order."""
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
    """``seq`` of the ``llm`` events of this plan (their prompts are the plan prompts)."""


class RouteEvent(_Event):
    """The router chose an adapter (or the base model) for a node."""

    type: Literal["route"] = "route"
    node_id: int
    """The routed node."""
    adapter: str | None
    """Chosen adapter; None is the base model."""
    score: float | None = None
    """The router's score."""
    reason: str = ""
    """Why."""


class LLMEvent(_Event):
    """One model call: the request and the response."""

    type: Literal["llm"] = "llm"
    stage: str
    """Loop stage that made it: remind, plan, act or route."""
    node_id: int | None = None
    """Node it served, when known."""
    adapter: str | None = None
    """Adapter requested (None: base model)."""
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
    served_adapter: str | None = None
    """Adapter that actually served it."""
    backend: str = ""
    """Backend that answered."""
    finish_reason: str = "stop"
    """``stop`` or ``length``."""


class SkillCallEvent(_Event):
    """A skill call is about to run."""

    type: Literal["skill_call"] = "skill_call"
    node_id: int
    """The executed node."""
    skill: str
    """The skill."""
    args: dict[str, Any]
    """Validated arguments."""


class SkillResultEvent(_Event):
    """A skill call ended."""

    type: Literal["skill_result"] = "skill_result"
    node_id: int
    """The node."""
    skill: str
    """The skill."""
    ok: bool
    """Whether it succeeded."""
    result: Any = None
    """JSON result."""
    error_type: str | None = None
    """Error class, on failure."""
    error: str | None = None
    """Error message, on failure."""
    duration_s: float = 0.0
    """Seconds it ran."""
    reused: bool = False
    """True when a resumed run reused the recorded result."""


class TreeEvent(_Event):
    """A Task Memory Tree node changed status."""

    type: Literal["tree"] = "tree"
    node_id: int
    """The node."""
    title: str
    """Its title."""
    status: str
    """New status."""
    error: str | None = None
    """Why it failed."""


class InterruptEvent(_Event):
    """The run paused for a human approval."""

    type: Literal["interrupt"] = "interrupt"
    node_id: int
    """The node whose call waits."""
    skill: str
    """The skill."""
    args: dict[str, Any]
    """Arguments it would run with."""


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


class EndEvent(_Event):
    """The run ended: outcome, metrics and the final tree."""

    type: Literal["end"] = "end"
    outcome: str
    """success, failed, budget_exhausted or interrupted."""
    success: bool
    """Whether the goal was achieved."""
    steps: int = 0
    """Skill calls made."""
    replans: int = 0
    """Plan repairs."""
    adapters: list[str] = []
    """Adapters used."""
    prompt_tokens: int = 0
    """Prompt tokens."""
    completion_tokens: int = 0
    """Generated tokens."""
    llm_latency_s: float = 0.0
    """Seconds spent in model calls."""
    elapsed_s: float = 0.0
    """Seconds in the loop."""
    reason: str = ""
    """Why it ended."""
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
"""Any trace event."""

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
    if major != _MAJOR:
        raise TraceVersionError(
            f"{source} is trace format version {version!r}; this Trellis reads version "
            f"{_MAJOR}.x only. "
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
            continue
        try:
            # pydantic parses the JSON itself: one pass, no intermediate dicts.
            event = _EVENT_ADAPTER.validate_json(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            if first.get("type") == "json_invalid":
                column = first.get("ctx", {}).get("column", "?")
                raise _not_json(source, number, str(first.get("msg")), column) from None
            loc = ".".join(str(p) for p in first.get("loc", ())) or "(event)"
            raise TraceFormatError(
                f"{source} line {number} is not a valid trace event ({loc}: {first.get('msg')})"
            ) from None
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
            f"version {TRACE_VERSION!r}); every later line is one event with seq, ts, t and type."
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
