"""Export a trace as OpenTelemetry spans following the GenAI semantic conventions.

One ``invoke_agent`` span covers the run; under it each model call is a
``text_completion`` / ``chat`` span (``gen_ai.*`` request and usage attributes) and each
skill call an ``execute_tool`` span; plans, routes and status changes are span events.
Timestamps come from the trace, so a recorded run shows with its real timing. Spans go to
whatever tracer provider the application configured (an OTLP exporter to Langfuse,
Phoenix or Jaeger, for example); with only ``opentelemetry-api`` installed they are
no-ops.
"""

from __future__ import annotations

import json
from typing import Any

from trellis.agent.traces._trace import (
    CuesEvent,
    EndEvent,
    InterruptEvent,
    LLMEvent,
    PlanEvent,
    RouteEvent,
    SkillCallEvent,
    SkillResultEvent,
    Trace,
    TreeEvent,
)
from trellis.memory.errors import UsageError

__all__ = ["export_otel"]

_NS = 1_000_000_000


def _ns(seconds: float) -> int:
    return int(seconds * _NS)


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    # OpenTelemetry attributes are scalars or lists of scalars; None is dropped.
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str | bool | int | float) else json.dumps(value)
    return out


def export_otel(trace: Trace, *, tracer_provider: Any = None, capture_content: bool = False) -> int:
    """Emit the trace's spans; returns how many spans were made.

    ``capture_content`` adds prompts and completions as attributes (off by default: they
    may hold private data).
    """
    try:
        from opentelemetry import trace as otel
        from opentelemetry.trace import Status, StatusCode
    except ImportError as exc:
        raise UsageError(
            "exporting spans needs OpenTelemetry: pip install opentelemetry-sdk and an exporter"
        ) from exc
    tracer = otel.get_tracer("trellis.trace", tracer_provider=tracer_provider)
    start = trace.start
    end = trace.end
    last_ts = trace.events[-1].at if trace.events else start.at
    model_name = (start.model or {}).get("name") or start.backend or "unknown"
    root = tracer.start_span(
        "invoke_agent trellis",
        start_time=_ns(start.at),
        attributes=_attrs(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "trellis",
                "gen_ai.conversation.id": start.task_id,
                "gen_ai.request.model": model_name,
                "trellis.goal": start.goal,
                "trellis.reminders": start.reminders or None,
                "trellis.env": start.env,
            }
        ),
    )
    count = 1
    context = otel.set_span_in_context(root)
    open_tools: dict[int, Any] = {}
    for event in trace.events:
        if isinstance(event, LLMEvent):
            operation = "chat" if event.messages else "text_completion"
            started = event.at - event.latency_s
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": event.backend or start.backend or "trellis",
                "gen_ai.request.model": event.requested_adapter or model_name,
                "gen_ai.response.model": event.adapter or model_name,
                "gen_ai.request.max_tokens": event.sampling.get("max_tokens"),
                "gen_ai.request.temperature": event.sampling.get("temperature"),
                "gen_ai.usage.input_tokens": event.prompt_tokens,
                "gen_ai.usage.output_tokens": event.completion_tokens,
                "gen_ai.response.finish_reasons": [event.finish_reason],
                "trellis.stage": event.stage,
                "trellis.node_id": event.node_id,
                "trellis.seq": event.seq,
            }
            if capture_content:
                attributes["gen_ai.prompt"] = event.prompt or json.dumps(event.messages)
                attributes["gen_ai.completion"] = event.text
            span = tracer.start_span(
                f"{operation} {event.requested_adapter or model_name}",
                context=context,
                start_time=_ns(started),
                attributes=_attrs(attributes),
            )
            span.end(end_time=_ns(event.at))
            count += 1
        elif isinstance(event, SkillCallEvent):
            open_tools[event.node_id] = tracer.start_span(
                f"execute_tool {event.skill}",
                context=context,
                start_time=_ns(event.at),
                attributes=_attrs(
                    {
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": event.skill,
                        "gen_ai.tool.call.arguments": event.args if capture_content else None,
                        "trellis.node_id": event.node_id,
                        "trellis.seq": event.seq,
                    }
                ),
            )
            count += 1
        elif isinstance(event, SkillResultEvent):
            span = open_tools.pop(event.node_id, None)
            if span is not None:
                if not event.ok:
                    span.set_status(Status(StatusCode.ERROR, event.error or ""))
                    span.set_attribute("error.type", event.error_type or "SkillError")
                span.end(end_time=_ns(event.at))
        elif isinstance(event, PlanEvent | RouteEvent | TreeEvent | CuesEvent | InterruptEvent):
            fields = event.model_dump(exclude={"at", "t", "type", "task_id", "raw_outputs", "plan"})
            root.add_event(
                f"trellis.{event.type}", attributes=_attrs(fields), timestamp=_ns(event.at)
            )
    for span in open_tools.values():
        span.end(end_time=_ns(last_ts))
    if isinstance(end, EndEvent):
        root.set_attributes(
            _attrs(
                {
                    "trellis.outcome": end.outcome,
                    "trellis.success": end.success,
                    "trellis.steps": end.steps,
                    "trellis.replans": end.replans,
                    "gen_ai.usage.input_tokens": end.prompt_tokens,
                    "gen_ai.usage.output_tokens": end.completion_tokens,
                }
            )
        )
        if not end.success:
            root.set_status(Status(StatusCode.ERROR, end.reason))
    root.end(end_time=_ns(last_ts))
    return count
