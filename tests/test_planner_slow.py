"""The real planner and reminder extraction with the embedded gemma-3-270m (short generations)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from trellis.adapters import (
    CueDraft,
    EmbeddedBackend,
    ReminderAdapter,
    ReminderConfig,
    default_model_dir,
    rule_extract,
    verify_model,
)
from trellis.planners import LLMPlanner, PlannerConfig, PlanRequest, SkillSpec, validate_plan

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not verify_model(default_model_dir(), full=False),
        reason="the base model is not prepared (trellis model prepare)",
    ),
]


class Obj(BaseModel):
    obj: str


SKILLS = (
    SkillSpec("open", "Open a container.", Obj),
    SkillSpec("close", "Close a container.", Obj),
)


@pytest.fixture(scope="module")
def backend() -> EmbeddedBackend:
    return EmbeddedBackend()


async def test_real_planner_returns_a_valid_plan_or_a_recorded_error(
    backend: EmbeddedBackend,
) -> None:
    cues = tuple(rule_extract("never open the oven"))
    planner = LLMPlanner(backend, config=PlannerConfig(max_attempts=2, max_tokens=96, max_steps=3))
    outcome = await planner.plan(PlanRequest(goal="open the fridge", skills=SKILLS, cues=cues))
    assert outcome.attempts >= 1 and outcome.llm_results
    # Constrained decoding: every answer that was not cut short is schema-valid JSON.
    for result in outcome.llm_results:
        if result.finish_reason == "stop":
            assert result.json_error is None and isinstance(result.parsed, dict)
            assert all(s["skill"] in {"open", "close", "decompose"} for s in result.parsed["steps"])
    if outcome.plan is not None:
        assert validate_plan(outcome.plan, SKILLS, cues) == outcome.plan
        assert outcome.error is None
    else:
        assert outcome.error and "planning failed after" in outcome.error


async def test_real_reminder_extraction_is_schema_valid(backend: EmbeddedBackend) -> None:
    adapter = ReminderAdapter(backend, config=ReminderConfig(mode="model", max_attempts=1))
    result = await adapter.extract("never use the blue plates")
    assert len(result.raw_outputs) == 1
    draft = CueDraft.model_validate_json(result.raw_outputs[0])
    assert result.method == "model" and result.model_cues[0].polarity == draft.polarity
    assert result.rule_cues[0].polarity == "forbid"
    assert result.agreement == (
        draft.polarity == "forbid" and result.model_cues[0].subject == "blue plates"
    )
