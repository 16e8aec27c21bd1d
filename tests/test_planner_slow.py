"""The real planner and reminder extraction with the embedded gemma-3-270m (short generations)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from trellis.adapters import (
    CueDraft,
    EmbeddedBackend,
    ReminderAdapter,
    ReminderConfig,
    rule_extract,
)
from trellis.agent.runtime._defaults import default_planner
from trellis.planners import LLMPlanner, PlanRequest, SkillSpec, validate_plan

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prepared_model")]


class Obj(BaseModel):
    obj: str


SKILLS = (
    SkillSpec("open", "Open a container.", Obj),
    SkillSpec("close", "Close a container.", Obj),
)


@pytest.fixture(scope="module")
def backend() -> EmbeddedBackend:
    return EmbeddedBackend()


async def test_the_real_planner_makes_a_valid_plan_at_the_first_attempt(
    backend: EmbeddedBackend,
) -> None:
    """Under the runtime's planner settings, constrained decoding leaves the model no way to
    write an invalid plan: the first answer is valid, names catalogue skills with typed
    arguments, and obeys the cue (never opening the oven)."""
    cues = tuple(rule_extract("never open the oven"))
    config = default_planner(backend).config.model_copy(update={"max_steps": 3, "max_tokens": 160})
    planner = LLMPlanner(backend, config=config)
    outcome = await planner.plan(PlanRequest(goal="open the fridge", skills=SKILLS, cues=cues))
    assert outcome.error is None and outcome.plan is not None, outcome.errors
    assert outcome.attempts == 1 and outcome.first_attempt_valid
    (answer,) = outcome.llm_results
    assert answer.finish_reason == "stop" and answer.json_error is None
    assert validate_plan(answer.text, SKILLS, cues, max_steps=3) == outcome.plan
    assert all(step.skill in {"open", "close"} for step in outcome.plan.steps)
    assert all(isinstance(step.args.get("obj"), str) for step in outcome.plan.steps)
    assert not any(
        step.skill == "open" and "oven" in str(step.args.get("obj")) for step in outcome.plan.steps
    )


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
