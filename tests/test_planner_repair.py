"""The LLM planner's repair loop and the scripted planner, with a scripted model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from trellis.adapters import FunctionBackend, LLMRequest, rule_extract
from trellis.planners import (
    LLMPlanner,
    Plan,
    PlannerConfig,
    PlanRequest,
    ScriptedPlanner,
    SkillSpec,
    build_plan_prompt,
    plan_json_schema,
    replan_request,
)
from trellis.planners._cases import PastCase


class Obj(BaseModel):
    obj: str


class Put(BaseModel):
    obj: str
    container: str


SKILLS = (
    SkillSpec("pick_up", "Pick up an object.", Obj),
    SkillSpec("put", "Put an object into a container.", Put),
    SkillSpec("open", "Open a container.", Obj),
    SkillSpec("close", "Close a container.", Obj),
)
GOOD = {
    "steps": [
        {"id": "a", "title": "open fridge", "skill": "open", "args": {"obj": "fridge"}, "depends_on": []},
        {"id": "b", "title": "take milk", "skill": "pick_up", "args": {"obj": "milk"}, "depends_on": ["a"]},
        {"id": "c", "title": "close fridge", "skill": "close", "args": {"obj": "fridge"}, "depends_on": ["b"]},
    ]
}  # fmt: skip


def scripted(*answers: str) -> FunctionBackend:
    it: Iterator[str] = iter(answers)
    return FunctionBackend(lambda request: next(it))


def request(**extra: object) -> PlanRequest:
    return PlanRequest(goal="get the milk", skills=SKILLS, **extra)  # type: ignore[arg-type]


async def test_first_answer_valid() -> None:
    backend = scripted(json.dumps(GOOD))
    outcome = await LLMPlanner(backend).plan(request())
    assert outcome.ok and outcome.first_attempt_valid and outcome.error is None
    assert [s.skill for s in outcome.plan.steps] == ["open", "pick_up", "close"]  # type: ignore[union-attr]
    sent = backend.requests[0]
    assert sent.json_schema == plan_json_schema(SKILLS)
    assert sent.prompt == build_plan_prompt(request())
    assert outcome.llm_results[0].backend == "function"


BAD_ANSWERS = {
    "not json": ("Sure! First open the fridge.", "not JSON"),
    "not a plan": ('{"answer": "open the fridge"}', "not a plan"),
    "unknown skill": (json.dumps({"steps": [GOOD["steps"][0] | {"skill": "yank"}]}), "unknown skill 'yank'"),
    "bad args": (json.dumps({"steps": [GOOD["steps"][0] | {"args": {"thing": "fridge"}}]}), "unexpected argument(s) thing"),
    "cycle": (json.dumps({"steps": [GOOD["steps"][0] | {"depends_on": ["b"]}, GOOD["steps"][1]]}), "cycle: a -> b -> a"),
    "dangling": (json.dumps({"steps": [GOOD["steps"][1]]}), "depends on 'a', which is not a step id"),
    "empty": ('{"steps": []}', "no steps"),
    "cue violation": (json.dumps({"steps": GOOD["steps"][:2]}), "add a step that does 'close fridge'"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_ANSWERS))
async def test_bad_answer_is_repaired_with_exact_feedback(case: str) -> None:
    bad, expected = BAD_ANSWERS[case]
    backend = scripted(bad, json.dumps(GOOD))
    cues = tuple(rule_extract("close the fridge afterwards"))
    outcome = await LLMPlanner(backend).plan(request(cues=cues))
    assert outcome.ok and outcome.attempts == 2 and not outcome.first_attempt_valid
    assert len(outcome.errors) == 1 and expected in outcome.errors[0]
    repair_prompt = backend.requests[1].prompt or ""
    assert repair_prompt.startswith(build_plan_prompt(request(cues=cues)))
    assert f"Error: {outcome.errors[0]}" in repair_prompt
    assert bad.strip()[:50] in repair_prompt
    assert outcome.raw_outputs == [bad, json.dumps(GOOD)]


async def test_attempts_are_bounded_and_failure_recorded() -> None:
    backend = FunctionBackend(lambda request: "no idea")
    outcome = await LLMPlanner(backend, config=PlannerConfig(max_attempts=3)).plan(request())
    assert outcome.plan is None and outcome.attempts == 3 and len(backend.requests) == 3
    assert outcome.error is not None and "planning failed after 3 attempt(s)" in outcome.error
    assert "not JSON" in outcome.error


async def test_backend_exceptions_do_not_escape() -> None:
    def boom(request: LLMRequest) -> str:
        raise ConnectionError("server went away")

    outcome = await LLMPlanner(FunctionBackend(boom), config=PlannerConfig(max_attempts=2)).plan(
        request()
    )
    assert outcome.plan is None and outcome.attempts == 2
    assert outcome.errors == ["model call failed: ConnectionError: server went away"] * 2


@pytest.mark.parametrize(
    ("goal", "expected"), [("   ", "goal is empty"), ("x" * 1001, "over the limit of 1000")]
)
async def test_bad_goal_is_recorded_without_calling_the_model(goal: str, expected: str) -> None:
    backend = scripted(json.dumps(GOOD))
    outcome = await LLMPlanner(backend).plan(PlanRequest(goal=goal, skills=SKILLS))
    assert outcome.plan is None and expected in (outcome.error or "")
    assert backend.requests == []


async def test_prompt_carries_context_cues_examples_and_failure() -> None:
    cues = tuple(rule_extract("never use the blue plates"))
    example = PastCase(goal="get the juice", plan=Plan.model_validate(GOOD))
    req = request(
        cues=cues, examples=(example,), context="root: breakfast\n" + "y" * 3000,
        failure="the fridge is locked", observation="You see a locked fridge.",
    )  # fmt: skip
    prompt = build_plan_prompt(req, max_context_chars=100)
    assert prompt == build_plan_prompt(req, max_context_chars=100)  # pure
    assert "- pick_up(obj: str) - Pick up an object." in prompt
    assert "- [forbid] never use the blue plates" in prompt
    assert "Goal: get the juice\nPlan: " + json.dumps(GOOD, separators=(",", ":")) in prompt
    assert "root: breakfast" not in prompt and "..." + "y" * 100 in prompt
    assert "Previous attempt failed: the fridge is locked" in prompt
    assert "Observation: You see a locked fridge." in prompt
    assert prompt.endswith("Goal: get the milk\nPlan:")


async def test_replan_request_and_budget() -> None:
    node = SimpleNamespace(id=7, task_id="t1", title="get the milk")
    req = replan_request(node, "fridge locked", skills=SKILLS, replan_count=1)
    assert (req.goal, req.node_id, req.task_id, req.failure) == (
        "get the milk",
        7,
        "t1",
        "fridge locked",
    )
    planner = LLMPlanner(scripted(json.dumps(GOOD)), config=PlannerConfig(max_replans_per_task=1))
    outcome = await planner.plan(req)
    assert outcome.plan is None and "replan budget exhausted" in (outcome.error or "")
    ok = await planner.plan(replan_request(node, "fridge locked", skills=SKILLS, replan_count=0))
    assert ok.ok


async def test_scripted_planner_sequences_and_validates() -> None:
    second = {"steps": [GOOD["steps"][0]]}
    planner = ScriptedPlanner({"get the milk": [Plan.model_validate(GOOD), second]})
    first = await planner.plan(request())
    again = await planner.plan(request())
    third = planner.plan_sync(request())
    assert first.ok and len(first.plan.steps) == 3  # type: ignore[union-attr]
    assert again.ok and len(again.plan.steps) == 1 and third.plan == again.plan  # type: ignore[union-attr]
    missing = await planner.plan(PlanRequest(goal="dance", skills=SKILLS))
    assert missing.plan is None and "no scripted plan for goal 'dance'" in (missing.error or "")


async def test_scripted_plans_obey_cues_and_scripts_cannot_crash() -> None:
    cues = tuple(rule_extract("don't open the fridge"))
    planner = ScriptedPlanner({"get the milk": GOOD})
    outcome = await planner.plan(request(cues=cues))
    assert outcome.plan is None and 'breaks the rule "don\'t open the fridge"' in (
        outcome.error or ""
    )

    def broken(req: PlanRequest) -> Plan:
        raise KeyError("oops")

    crashed = await ScriptedPlanner(broken).plan(request())
    assert crashed.plan is None and "script failed: KeyError" in (crashed.error or "")
    by_function = await ScriptedPlanner(lambda req: GOOD["steps"]).plan(request())
    assert by_function.ok
