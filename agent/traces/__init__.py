"""Traces: record a run, replay it decision by decision, evaluate and report.

Importing this package installs :func:`record_run` as the recorder behind
``Agent.run(goal, trace=PATH)`` (the runtime does not import its own consumers).
"""

from trellis.agent.runtime import set_trace_recorder
from trellis.agent.traces._eval import (
    Comparison,
    EvalRun,
    EvalSummary,
    TaskEval,
    compare_runs,
    evaluate,
    evaluate_sync,
    load_run,
    run_from_traces,
)
from trellis.agent.traces._replay import (
    Divergence,
    Replayer,
    ReplayResult,
    compare_traces,
    replay,
    replay_many,
    replay_sync,
)
from trellis.agent.traces._replay_check import check_trace
from trellis.agent.traces._trace import (
    RECORDED_AS,
    TRACE_FORMAT,
    TRACE_VERSION,
    CuesEvent,
    EndEvent,
    InterruptEvent,
    LLMEvent,
    PlanEvent,
    RouteEvent,
    SkillCallEvent,
    SkillInfo,
    SkillResultEvent,
    TaskStartEvent,
    Trace,
    TraceEvent,
    TraceHeader,
    TreeEvent,
    TreeNode,
    iter_trace_files,
    parse_trace_lines,
    read_trace,
    render_schema,
    schema_path,
    trace_json_schema,
)
from trellis.agent.traces._trace_io import MemoryTraceSink, TraceSink, TraceWriter
from trellis.agent.traces._trace_otel import export_otel
from trellis.agent.traces._trace_record import TraceRecorder, record_run
from trellis.agent.traces._trace_store import StoredTrace, TraceStore

set_trace_recorder(record_run)

__all__ = [
    "RECORDED_AS",
    "TRACE_FORMAT",
    "TRACE_VERSION",
    "Comparison",
    "CuesEvent",
    "Divergence",
    "EndEvent",
    "EvalRun",
    "EvalSummary",
    "InterruptEvent",
    "LLMEvent",
    "MemoryTraceSink",
    "PlanEvent",
    "ReplayResult",
    "Replayer",
    "RouteEvent",
    "SkillCallEvent",
    "SkillInfo",
    "SkillResultEvent",
    "StoredTrace",
    "TaskEval",
    "TaskStartEvent",
    "Trace",
    "TraceEvent",
    "TraceHeader",
    "TraceRecorder",
    "TraceSink",
    "TraceStore",
    "TraceWriter",
    "TreeEvent",
    "TreeNode",
    "check_trace",
    "compare_runs",
    "compare_traces",
    "evaluate",
    "evaluate_sync",
    "export_otel",
    "iter_trace_files",
    "load_run",
    "parse_trace_lines",
    "read_trace",
    "record_run",
    "render_schema",
    "replay",
    "replay_many",
    "replay_sync",
    "run_from_traces",
    "schema_path",
    "trace_json_schema",
]
