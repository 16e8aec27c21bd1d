"""The act step: prompts, constrained schemas and how unusable model answers are handled."""

from __future__ import annotations

import json

from trellis.adapters import FunctionBackend, LLMRequest
from trellis.agent import SkillRegistry, act_json_schema, build_act_prompt, choose_call, skill


@skill
def wash(item: str) -> str:
    """Wash one item."""
    return item


@skill(side_effects=False)
def look(room: str) -> str:
    """Describe a room."""
    return room


SPECS = SkillRegistry([wash, look]).specs()


def test_prompt_is_pure_and_short() -> None:
    kwargs = {
        "goal": "tidy up",
        "step": "take the next action",
        "observation": "You are in the kitchen. " * 100,
        "valid_actions": ["take mug", "look around"],
        "history": [f"a{i}" for i in range(20)],
        "cues": ["[forbid] never use the blue plates"],
    }
    first = build_act_prompt(**kwargs)  # type: ignore[arg-type]
    assert first == build_act_prompt(**kwargs)  # type: ignore[arg-type]
    assert "take mug; look around" in first and "blue plates" in first
    assert "a19" in first and "a0;" not in first  # only the recent history
    assert len(first) < 1200  # the observation is cut
    catalogue = build_act_prompt(goal="g", step="s", skills=SPECS)
    assert "wash(item: str) - Wash one item." in catalogue


def test_schemas() -> None:
    env_schema = act_json_schema(valid_actions=["a", "b"])
    assert env_schema["properties"]["action"] == {"enum": ["a", "b"]}
    skills_schema = act_json_schema(SPECS)
    consts = [v["properties"]["skill"]["const"] for v in skills_schema["anyOf"]]
    assert consts == ["wash", "look"]
    json.dumps(skills_schema)


async def test_invented_skill_is_retried_then_recorded() -> None:
    backend = FunctionBackend(lambda request: '{"skill": "teleport", "args": {}}')
    chosen = await choose_call(
        backend, prompt_args={"goal": "g", "step": "s"}, skills=SPECS, adapter=None, attempts=2
    )
    assert chosen.skill is None and chosen.error_type == "UnknownSkillError"
    assert "teleport" in (chosen.error or "") and "wash" in (chosen.error or "")
    assert len(chosen.llm) == 2
    # The retry told the model what was wrong.
    assert "teleport" in (backend.requests[1].prompt or "")


async def test_bad_then_good_answer() -> None:
    answers = iter(["not json", '{"skill": "wash", "args": {"item": "cup"}}'])

    def answer(request: LLMRequest) -> str:
        return next(answers)

    chosen = await choose_call(
        FunctionBackend(answer),
        prompt_args={"goal": "g", "step": "s"},
        skills=SPECS,
        adapter="kitchen",
    )
    assert chosen.error is None and chosen.skill == "wash" and chosen.args == {"item": "cup"}
    assert chosen.llm[-1].adapter == "kitchen"


async def test_environment_action_must_be_valid() -> None:
    answers = iter(['{"action": "fly away"}', '{"action": "take mug"}'])
    chosen = await choose_call(
        FunctionBackend(lambda request: next(answers)),
        prompt_args={"goal": "g", "step": "s", "observation": "a mug"},
        skills=[wash.spec],
        adapter=None,
        env_skill="wash",
        valid_actions=["take mug", "look around"],
    )
    assert chosen.skill == "wash" and chosen.args == {"action": "take mug"}
    assert len(chosen.llm) == 2
