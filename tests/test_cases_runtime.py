"""Past successes in the loop: a success is stored, a similar goal is planned with it as an
example, outcomes update its value, and a trace replays with the cases it was shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trellis.adapters import FunctionBackend, HashingEmbedder, LLMRequest
from trellis.agent.runtime import Agent, AgentConfig, skill
from trellis.agent.runtime._planning import worked_plan
from trellis.agent.traces import PlanEvent, read_trace, replay_sync
from trellis.planners import CaseConfig, CaseMemory, LLMPlanner, Plan, PlannerConfig

PLAN = {
    "steps": [
        {"id": "1", "title": "go to the sink", "skill": "go_to", "args": {"place": "sink"},
         "depends_on": []},
        {"id": "2", "title": "wash the mug", "skill": "wash", "args": {"item": "mug"},
         "depends_on": ["1"]},
    ]
}  # fmt: skip


@skill
def go_to(place: str) -> str:
    """Walk to a place."""
    return f"at {place}"


@skill
def wash(item: str) -> str:
    """Wash an item."""
    if item == "anvil":
        raise ValueError("the anvil does not fit in the sink")
    return f"{item} is clean"


class Model:
    """Plans ``PLAN`` for any goal and keeps every plan prompt it was asked."""

    def __init__(self) -> None:
        self.plan_prompts: list[str] = []

    def __call__(self, request: LLMRequest) -> str:
        self.plan_prompts.append(request.prompt or "")
        return json.dumps(PLAN)


def _agent(url: str, model: Model, memory: CaseMemory | None = None) -> Agent:
    backend = FunctionBackend(model)
    return Agent(
        config=AgentConfig(database_url=url),
        backend=backend,
        planner=LLMPlanner(backend, config=PlannerConfig(max_tokens=200)),
        skills=[go_to, wash],
        cases=memory,
    )


def test_a_success_becomes_an_example_for_a_similar_goal(database_url: str) -> None:
    model = Model()
    with _agent(database_url, model) as agent:
        memory = CaseMemory(agent.store.engine, HashingEmbedder(), CaseConfig(explore=False))
        agent.deps.cases = memory
        first = agent.run("wash the blue mug", user_id="kim")
        assert first.success
        stored = memory.cases("kim")
        assert [c.goal for c in stored] == ["wash the blue mug"]
        assert [s.skill for s in stored[0].plan.steps] == ["go_to", "wash"]
        assert stored[0].plan.steps[1].depends_on == ["1"]
        assert "wash the blue mug" not in model.plan_prompts[0].split("Goal:")[0]

        second = agent.run("wash the red mug", user_id="kim")
        assert second.success
        # The plan prompt of the similar goal shows the stored success as an example.
        assert "wash the blue mug" in model.plan_prompts[-1]
        assert memory.used(second.task_id) == [stored[0].id]
        assert memory.get(stored[0].id or 0).value > stored[0].value  # rewarded
        # Another user's cases are never shown.
        agent.run("wash the red mug", user_id="lee")
        assert "wash the blue mug" not in model.plan_prompts[-1]


def test_the_default_planner_gets_cases_and_an_explicit_planner_only_when_asked() -> None:
    with Agent(config=AgentConfig(database_url="sqlite://"), skills=[go_to]) as agent:
        agent.deps.backend = FunctionBackend(lambda r: "{}")  # no model is loaded here
        agent._ensure_defaults()
        assert isinstance(agent.deps.cases, CaseMemory)
    off = AgentConfig(database_url="sqlite://", past_cases=False)
    with Agent(config=off, backend=FunctionBackend(lambda r: "{}"), skills=[go_to]) as agent:
        agent._ensure_defaults()
        assert agent.deps.cases is None
    with _agent("sqlite://", Model()) as agent:
        agent._ensure_defaults()
        assert agent.deps.cases is None


def test_the_plan_that_worked_puts_a_replanned_step_in_place(tmp_path: Path) -> None:
    plan = {"steps": [PLAN["steps"][0], {**PLAN["steps"][1], "args": {"item": "anvil"}}]}
    repair = {"steps": [{"id": "1", "title": "wash the mug", "skill": "wash",
                         "args": {"item": "mug"}, "depends_on": []}]}  # fmt: skip

    def model(request: LLMRequest) -> str:
        return json.dumps(repair if "does not fit" in (request.prompt or "") else plan)

    backend = FunctionBackend(model)
    with Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/t.db"),
        backend=backend,
        planner=LLMPlanner(backend, config=PlannerConfig(max_tokens=200)),
        skills=[go_to, wash],
    ) as agent:
        result = agent.run("wash something")
        assert result.success and result.replans == 1
        worked = worked_plan(agent.store, result.task_id)
    assert worked is not None
    assert [(s.skill, s.args) for s in worked.steps] == [
        ("go_to", {"place": "sink"}),
        ("wash", {"item": "mug"}),
    ]


def test_a_run_shown_past_cases_replays_exactly(tmp_path: Path) -> None:
    model = Model()
    with _agent(f"sqlite:///{tmp_path}/rec.db", model) as agent:
        agent.deps.cases = CaseMemory(agent.store.engine, HashingEmbedder())
        agent.run("wash the blue mug", user_id="kim")
        path = tmp_path / "second.jsonl"
        agent.run("wash the red mug", user_id="kim", trace=path)
    trace = read_trace(path)
    plans = trace.of_type(PlanEvent)
    examples: Any = plans[0].examples
    assert examples and examples[0]["goal"] == "wash the blue mug"
    # The replay runs on an empty database: the cases come from the trace.
    replayed = replay_sync(trace)
    assert replayed.ok, replayed.divergence.describe() if replayed.divergence else replayed.error


@pytest.mark.parametrize("past_cases", [True, False])
def test_case_settings_are_validated(past_cases: bool) -> None:
    config = AgentConfig(past_cases=past_cases, case_examples=3)
    assert config.case_examples == 3
    with pytest.raises(ValueError, match="case_examples"):
        AgentConfig(case_examples=-1)


def test_a_case_that_calls_a_skill_the_agent_lacks_is_not_shown() -> None:
    model = Model()
    with _agent("sqlite://", model) as agent:
        memory = CaseMemory(agent.store.engine, HashingEmbedder(), CaseConfig(explore=False))
        agent.deps.cases = memory
        foreign = [*PLAN["steps"][:1], {**PLAN["steps"][1], "skill": "scrub"}]
        memory.index("kim", "wash the blue mug", Plan.model_validate({"steps": foreign}))
        result = agent.run("wash the blue mug", user_id="kim")
        assert result.success and memory.used(result.task_id) == []
        assert "scrub" not in model.plan_prompts[0]
