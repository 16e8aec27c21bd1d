"""Recording wrappers at the model, planner and skill boundaries (see ``_trace_record``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from trellis.adapters import LLMBackend, LLMRequest, LLMResult
from trellis.agent.runtime import (
    Skill,
    SkillContext,
    SkillOutcome,
)
from trellis.agent.traces._trace import (
    SkillInfo,
)
from trellis.memory import run_sync

if TYPE_CHECKING:
    from trellis.agent.traces._trace_record import TraceRecorder

__all__ = ["RecordingBackend", "RecordingPlanner", "RecordingSkill", "planner_info", "skill_info"]


def skill_info(skill: Skill) -> SkillInfo:
    """The trace form of a skill's spec."""
    spec = skill.spec
    return SkillInfo(
        name=spec.name,
        description=spec.description,
        args_schema=spec.args_model.model_json_schema(),
        side_effects=spec.side_effects,
        needs_approval=spec.needs_approval,
        timeout_s=spec.timeout_s,
    )


class RecordingBackend:
    """An LLM backend that passes requests to ``inner`` and remembers each call."""

    def __init__(self, inner: LLMBackend, recorder: TraceRecorder) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "backend")
        self._recorder = recorder

    async def generate(self, request: LLMRequest) -> LLMResult:
        result = await self.inner.generate(request)
        self._recorder.llm_done(request, result)
        return result

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        # Streamed text is recorded as one call: the loop consumes whole results.
        result = await self.generate(request)
        yield result.text

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordingPlanner:
    """A planner that passes requests to ``inner`` and remembers each outcome."""

    def __init__(self, inner: Any, recorder: TraceRecorder) -> None:
        self.inner = inner
        self._recorder = recorder

    async def plan(self, request: Any) -> Any:
        outcome = await self.inner.plan(request)
        self._recorder.plan_done(outcome, request)
        return outcome

    def plan_sync(self, request: Any) -> Any:
        return run_sync(self.plan(request))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordingSkill(Skill):
    _recorder: TraceRecorder
    _inner: Skill

    async def invoke(self, args: Any, context: SkillContext) -> SkillOutcome:
        outcome = await self._inner.invoke(args, context)
        self._recorder.skill_done(context.node_id, outcome)
        return outcome

    def invoke_sync(self, args: Any, context: SkillContext) -> SkillOutcome:
        outcome = self._inner.invoke_sync(args, context)
        self._recorder.skill_done(context.node_id, outcome)
        return outcome


def planner_info(planner: Any) -> dict[str, Any]:
    inner = planner.inner if isinstance(planner, RecordingPlanner) else planner
    from trellis.planners import LLMPlanner

    if isinstance(inner, LLMPlanner):
        return {
            "kind": "llm",
            "name": inner.name,
            "adapter": inner.adapter,
            "config": inner.config.model_dump(mode="json"),
        }
    info: dict[str, Any] = {"kind": type(inner).__name__, "name": getattr(inner, "name", "")}
    config = getattr(inner, "config", None)
    if isinstance(config, BaseModel):
        info["config"] = config.model_dump(mode="json")
    return info
