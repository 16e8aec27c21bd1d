"""A planned step whose route names an adapter is carried out through that adapter: the
adapter fills the step's arguments (with no route, the plan's own arguments run as planned)."""

from __future__ import annotations

import json
from pathlib import Path

from trellis import Agent, AgentConfig
from trellis.adapters import FunctionBackend, LLMRequest, RouteDecision, StepContext
from trellis.memory import run_sync
from trellis.planners import ScriptedPlanner

PLAN = {
    "steps": [
        {"id": "1", "title": "label the jar", "skill": "label", "args": {"text": "jam"}},
    ]
}


class _Pinned:
    """A router that sends every step to one adapter (an app's own routing policy)."""

    def __init__(self, adapter: str | None) -> None:
        self.adapter = adapter

    async def route(self, context: StepContext) -> RouteDecision:
        return RouteDecision(
            adapter=self.adapter, score=1.0, policy="rule", reason=f"pinned for {context.text}"
        )


def _run(tmp_path: Path, adapter: str | None) -> tuple[list[str], list[LLMRequest]]:
    labels: list[str] = []
    asked: list[LLMRequest] = []

    def label(text: str) -> str:
        """Write a label."""
        labels.append(text)
        return "labelled"

    def model(request: LLMRequest) -> str:
        asked.append(request)
        return json.dumps({"skill": "label", "args": {"text": "strawberry jam"}})

    with Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/{adapter}.db"),
        skills=[label],
        backend=FunctionBackend(model),
        planner=ScriptedPlanner({"label the jar": PLAN}),
        router=_Pinned(adapter),
    ) as agent:
        assert agent.run("label the jar").success
    return labels, asked


def test_a_routed_step_is_filled_by_its_adapter(tmp_path: Path) -> None:
    labels, asked = _run(tmp_path, "labels")
    assert labels == ["strawberry jam"]
    assert [r.adapter for r in asked] == ["labels"]


def test_an_unrouted_step_runs_the_plans_arguments_without_a_model_call(tmp_path: Path) -> None:
    labels, asked = _run(tmp_path, None)
    assert labels == ["jam"] and asked == []


def test_the_act_call_says_the_routers_reason(tmp_path: Path) -> None:
    from trellis.agent.runtime import LLMCall

    def model(request: LLMRequest) -> str:
        return json.dumps({"skill": "label", "args": {"text": "jam"}})

    def label(text: str) -> str:
        """Write a label."""
        return "labelled"

    with Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/why.db"),
        skills=[label],
        backend=FunctionBackend(model),
        planner=ScriptedPlanner({"label the jar": PLAN}),
        router=_Pinned("labels"),
    ) as agent:

        async def collect() -> list[object]:
            return [e async for e in agent.stream("label the jar")]

        calls = [e for e in run_sync(collect()) if isinstance(e, LLMCall)]
    assert [(c.stage, c.why) for c in calls] == [("act", "routed: pinned for label the jar")]
