"""The recorded world a replay runs in: the model, planner, router and skills answer from the trace."""

from __future__ import annotations

from collections import deque
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model, model_validator

from trellis.adapters import LLMRequest, LLMResult
from trellis.adapters.errors import ReplayMismatchError
from trellis.agent.runtime import Skill, SkillContext, SkillOutcome
from trellis.agent.traces._trace import (
    LLMEvent,
    PlanEvent,
    RouteEvent,
    SkillInfo,
    SkillResultEvent,
)
from trellis.agent.traces._trace_io import json_sha256
from trellis.memory import run_sync
from trellis.planners import SkillSpec

__all__ = [
    "ReplayBackend",
    "ReplayPlanner",
    "ReplayRouter",
    "ReplaySkill",
    "args_model_from_schema",
]


# --- the recorded world --------------------------------------------------------------------


class ReplayBackend:
    """Answers model calls with the recorded responses, in order."""

    def __init__(self, events: list[LLMEvent], name: str) -> None:
        self._queue = deque(e for e in events if e.stage != "route")
        self.name = name or "replay"

    async def generate(self, request: LLMRequest) -> LLMResult:
        if not self._queue:
            raise ReplayMismatchError(
                "the replayed run asked the model more often than the recording did; "
                "the decisions before this call already differ"
            )
        event = self._queue.popleft()
        return LLMResult(
            text=event.text,
            parsed=event.parsed,
            json_error=event.json_error,
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            latency_s=event.latency_s,
            adapter=event.adapter,
            backend=event.backend,
            finish_reason="length" if event.finish_reason == "length" else "stop",
        )

    async def stream(self, request: LLMRequest) -> Any:
        result = await self.generate(request)
        yield result.text

    async def aclose(self) -> None:
        return None


class ReplayCases:
    """The past cases each root plan of the recording was shown, in order; nothing is stored
    or rewarded (a replay decides the same, it does not learn)."""

    def __init__(self, events: list[PlanEvent]) -> None:
        self._queue = deque(e.examples for e in events if e.examples is not None)

    def retrieve(self, user_id: str, goal: str, k: int = 3, *, cues: Any = ()) -> list[Any]:
        from trellis.planners import PastCase

        if not self._queue:
            return []
        return [PastCase.model_validate(c) for c in self._queue.popleft()]

    def note_use(self, task_id: str, user_id: str, case_ids: Any) -> None:
        return None

    def settle(self, task_id: str, user_id: str, **outcome: Any) -> None:
        return None


class ReplayPlanner:
    """Returns the recorded plan outcomes in order (for planners that are not LLM planners)."""

    def __init__(self, events: list[PlanEvent]) -> None:
        self._queue = deque(events)
        self.name = events[0].planner if events else "replay"

    async def plan(self, request: Any) -> Any:
        from trellis.planners import Plan, PlanOutcome

        if not self._queue:
            return PlanOutcome(planner=self.name, error="the recording has no further plan")
        event = self._queue.popleft()
        return PlanOutcome(
            plan=Plan.model_validate(event.plan) if event.plan is not None else None,
            attempts=max(1, len(event.raw_outputs)),
            errors=list(event.errors),
            raw_outputs=list(event.raw_outputs),
            error=event.error,
            planner=event.planner,
        )

    def plan_sync(self, request: Any) -> Any:
        return run_sync(self.plan(request))


class ReplayRouter:
    """Returns the recorded route decisions in order."""

    def __init__(self, events: list[RouteEvent]) -> None:
        self._queue = deque(events)

    async def route(self, context: Any) -> Any:
        from trellis.adapters import RouteDecision

        if not self._queue:
            raise ReplayMismatchError("the replayed run routed more steps than were recorded")
        event = self._queue.popleft()
        return RouteDecision(
            adapter=event.adapter,
            score=event.score if event.score is not None else 0.0,
            policy="rule",
            reason=event.reason,
        )


_ARGS_MODELS: dict[tuple[str, str], type[BaseModel]] = {}


def args_model_from_schema(info: SkillInfo) -> type[BaseModel]:
    """An argument model that checks required and known names and renders the recorded schema."""
    schema = info.args_schema
    key = (info.name, json_sha256(schema))
    cached = _ARGS_MODELS.get(key)
    if cached is not None:  # building a pydantic model is slow; traces share catalogues
        return cached
    required = set(schema.get("required", ()))
    known = set(schema.get("properties", {}))
    closed = schema.get("additionalProperties") is False or bool(known)

    def check(cls: type[BaseModel], value: Any) -> Any:
        if isinstance(value, dict):
            missing = sorted(required - set(value))
            if missing:
                raise ValueError(f"missing required argument(s) {', '.join(missing)}")
            unknown = sorted(set(value) - known) if closed else []
            if unknown:
                raise ValueError(f"unexpected argument(s) {', '.join(unknown)}")
        return value

    model = create_model(
        "".join(p.title() for p in info.name.split("_")) + "Args",
        __config__=ConfigDict(extra="allow"),
        __validators__={"check": model_validator(mode="before")(check)},  # type: ignore[dict-item]
    )
    # Prompts render the recorded schema, so the replayed prompts equal the recorded ones.
    model.model_json_schema = classmethod(lambda cls, *a, **k: dict(schema))  # type: ignore[method-assign,assignment]
    _ARGS_MODELS[key] = model
    return model


class ReplaySkill(Skill):
    """A skill whose calls return the recorded outcomes, in order."""

    def __init__(self, info: SkillInfo, results: list[SkillResultEvent]) -> None:
        spec = SkillSpec(
            name=info.name,
            description=info.description,
            args_model=args_model_from_schema(info),
            side_effects=info.side_effects,
            needs_approval=info.needs_approval,
            timeout_s=info.timeout_s,
        )
        super().__init__(_never_called, spec, context_param=None, model_param=None)
        self._results = deque(r for r in results if r.skill == info.name and not r.reused)

    async def invoke(self, args: Any, context: SkillContext) -> SkillOutcome:
        return self.invoke_sync(args, context)

    def invoke_sync(self, args: Any, context: SkillContext) -> SkillOutcome:
        if not self._results:
            return SkillOutcome(
                skill=self.name,
                ok=False,
                error_type="ReplayMismatchError",
                error=f"the recording has no further result of {self.name!r}",
            )
        event = self._results.popleft()
        return SkillOutcome(
            skill=self.name,
            ok=event.ok,
            result=event.result,
            error_type=event.error_type,
            error=event.error,
            duration_s=event.duration_s,
        )


def _never_called() -> None:
    return None
