"""Cues hold at every call: a call that breaks a user's forbid rule never runs.

The model is asked again with the rule named; a model that insists fails the step with the
rule in the error; a user's stored cues apply to every task of theirs; an environment action
a cue forbids is not offered. Scripted backends stand in for the model (the wire format is
the backend's own: JSON text answers to ``LLMRequest``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from _dial_pack import PACK, DialSpec

from trellis import Agent, AgentConfig
from trellis.adapters import Cue, FunctionBackend, LLMRequest, ReminderAdapter, ReminderConfig
from trellis.planners import (
    CueStore,
    Plan,
    PlanOutcome,
    PlanRequest,
    ScriptedPlanner,
    call_violations,
)

PLAN = {
    "steps": [
        {"id": "1", "title": "wash the plates", "skill": "wash", "args": {"item": "plates"}},
    ]
}


def _agent(
    tmp_path: Path, answer: Callable[[LLMRequest], str], washed: list[str], **config: object
) -> Agent:
    def wash(item: str) -> str:
        """Wash one thing."""
        washed.append(item)
        return f"{item} washed"

    return Agent(
        config=AgentConfig(
            database_url=f"sqlite:///{tmp_path}/cues.db", use_plan_args=False, **config
        ),
        skills=[wash],
        backend=FunctionBackend(answer),
        planner=ScriptedPlanner({"wash the plates": PLAN}),
        reminder_adapter=ReminderAdapter(None, config=ReminderConfig(mode="rules")),
        router=None,
    )


def test_call_violations_name_the_rule_and_ignore_other_subjects() -> None:
    cue = Cue(
        constraint="never use the blue plates",
        subject="blue plates",
        kind="correction",
        polarity="forbid",
    )
    assert call_violations("wash", {"item": "blue plate"}, [cue])[0].count("never use") == 1
    assert call_violations("wash", {"item": "white plates"}, [cue]) == []
    opening = Cue(
        constraint="never open the fridge",
        subject="fridge",
        action="open",
        kind="correction",
        polarity="forbid",
    )
    assert call_violations("act", {"action": "open fridge"}, [opening])
    assert call_violations("act", {"action": "take milk from fridge"}, [opening]) == []


def test_a_forbidden_call_is_refused_and_the_model_asked_again(tmp_path: Path) -> None:
    answers = iter(["blue plates", "white plates"])
    prompts: list[str] = []

    def model(request: LLMRequest) -> str:
        prompts.append(request.prompt)
        return json.dumps({"skill": "wash", "args": {"item": next(answers)}})

    washed: list[str] = []
    with _agent(tmp_path, model, washed) as agent:
        result = agent.run("wash the plates", reminders=["never use the blue plates"])
    assert result.success
    assert washed == ["white plates"]  # the forbidden call never ran
    assert "never use the blue plates" in prompts[-1]  # the retry names the rule


def test_a_model_that_insists_fails_the_step_with_the_rule_named(tmp_path: Path) -> None:
    washed: list[str] = []

    def model(request: LLMRequest) -> str:
        return json.dumps({"skill": "wash", "args": {"item": "blue plates"}})

    with _agent(tmp_path, model, washed, max_replans=0) as agent:
        result = agent.run("wash the plates", reminders=["never use the blue plates"])
        nodes = agent.store.nodes(result.task_id)
    assert not result.success
    assert washed == []
    errors = [str((n.output or {}).get("error", "")) for n in nodes if n.parent_id is not None]
    assert any("never use the blue plates" in e for e in errors), errors


def test_stored_cues_hold_in_every_task_of_their_user(tmp_path: Path) -> None:
    washed: list[str] = []
    answers = iter(["blue plates", "white plates", "blue plates", "white plates"])

    def model(request: LLMRequest) -> str:
        return json.dumps({"skill": "wash", "args": {"item": next(answers)}})

    with _agent(tmp_path, model, washed) as agent:
        cue = Cue(
            constraint="never use the blue plates",
            subject="blue plates",
            kind="correction",
            polarity="forbid",
            scope="user",
        )
        CueStore(agent.store.engine).add("ann", [cue])
        first = agent.run("wash the plates", user_id="ann")
        second = agent.run("wash the plates", user_id="ann")
    assert first.success and second.success
    assert washed == ["white plates", "white plates"]


def test_a_forbidden_environment_action_is_never_offered(tmp_path: Path) -> None:
    offered: list[list[str]] = []

    def model(request: LLMRequest) -> str:
        actions = (request.json_schema or {})["properties"]["action"]["enum"]
        offered.append(list(actions))
        return json.dumps({"action": actions[0]})

    agent = Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/env.db", max_steps=3),
        backend=FunctionBackend(model),
        planner=ScriptedPlanner({}),
        reminder_adapter=ReminderAdapter(None, config=ReminderConfig(mode="rules")),
        router=None,
        environments=[PACK],
    )
    with agent:
        agent.run(env=DialSpec(code=[2]), reminders=["never turn up the dial"])
    assert offered, "the model was never asked"
    assert all(not any(a.startswith("turn up") for a in actions) for actions in offered)


class _CarelessPlanner:
    """An app's own planner that does not read the cues (the runtime must still hold them)."""

    def __init__(self, plan: dict[str, object]) -> None:
        self.fixed = Plan.model_validate(plan)

    async def plan(self, request: PlanRequest) -> PlanOutcome:
        return PlanOutcome(plan=self.fixed, attempts=1)

    def plan_sync(self, request: PlanRequest) -> PlanOutcome:
        return PlanOutcome(plan=self.fixed, attempts=1)


def test_a_planned_call_that_breaks_a_cue_goes_to_the_model(tmp_path: Path) -> None:
    """A plan's own arguments run without the model; a call among them that breaks a cue is
    handed to the model instead, and its call is checked too."""
    washed: list[str] = []
    asked: list[str] = []

    def model(request: LLMRequest) -> str:
        asked.append(request.prompt)
        return json.dumps({"skill": "wash", "args": {"item": "white plates"}})

    def wash(item: str) -> str:
        """Wash one thing."""
        washed.append(item)
        return "ok"

    blue = {"steps": [{**PLAN["steps"][0], "args": {"item": "blue plates"}}]}
    agent = Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/planned.db"),
        skills=[wash],
        backend=FunctionBackend(model),
        planner=_CarelessPlanner(blue),
        reminder_adapter=ReminderAdapter(None, config=ReminderConfig(mode="rules")),
        router=None,
    )
    with agent:
        result = agent.run("wash the plates", reminders=["never use the blue plates"])
    assert result.success
    assert washed == ["white plates"] and len(asked) == 1
