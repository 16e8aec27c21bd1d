"""Shared steps: a sub-plan may wait for a step of another branch, and no dependency the tree
accepts can deadlock (a parent finishes only after its children)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trellis.adapters import FunctionBackend, LLMRequest
from trellis.agent import Agent, AgentConfig, skill
from trellis.agent.traces import read_trace
from trellis.agent.traces._replay import replay_sync
from trellis.agent.traces._replay_check import check_trace
from trellis.agent.traces._trace import PlanEvent
from trellis.memory import NodeSpec, TaskStore
from trellis.memory.errors import CycleError
from trellis.planners import LLMPlanner, PlannerConfig

# --- the tree: precedence through parents ---------------------------------------------------


@pytest.fixture
def store(database_url: str) -> Iterator[TaskStore]:
    with TaskStore.open(database_url) as opened:
        yield opened


def test_waiting_for_what_waits_for_ones_parent_is_refused(store: TaskStore) -> None:
    """b waits for a, and a finishes only after its child a1: a1 waiting for b would
    deadlock. The refusal names the chain and writes nothing."""
    task = store.create_task("host dinner")
    root = store.root(task.id)
    a, b, c = store.add_children(
        task.id,
        root.id,
        [NodeSpec(key="a"), NodeSpec(key="b", depends_on=["a"]), NodeSpec(key="c")],
    )
    (a1,) = store.add_children(task.id, a.id, [NodeSpec(key="a1")])
    with pytest.raises(CycleError) as refused:
        store.add_dependency(a1.id, b.id)
    assert refused.value.cycle == [a1.id, b.id, a.id, a1.id]
    with pytest.raises(CycleError) as batch:
        store.add_children(task.id, a.id, [NodeSpec(key="a2", depends_on=[b.id])])
    assert batch.value.cycle == ["a2", b.id, a.id, "a2"]
    # Deeper: d waits for b; a grandchild of a waiting for d closes a longer chain.
    (d,) = store.add_children(task.id, root.id, [NodeSpec(key="d", depends_on=[b.id])])
    with pytest.raises(CycleError) as longer:
        store.add_children(task.id, a1.id, [NodeSpec(key="x", depends_on=[d.id])])
    assert longer.value.cycle == ["x", d.id, b.id, a.id, a1.id, "x"]
    assert [n.key for n in store.children(a.id)] == ["a1"]
    assert store.get_node(a1.id).depends_on == ()
    # Another branch that does not wait for a is fine, and what the tree offers.
    assert {n.key for n in store.dependable(a.id)} == {"c"}
    assert {n.key for n in store.dependable(a1.id)} == {"c"}
    assert {n.key for n in store.dependable(c.id)} == {"a", "a1", "b", "d"}
    store.add_dependency(a1.id, c.id)
    (a3,) = store.add_children(task.id, a.id, [NodeSpec(key="a3", depends_on=[c.id])])
    assert a3.depends_on == (c.id,)


# --- the loop: a sub-plan waits for a step of another branch --------------------------------

LOG: list[str] = []


@skill
def boil() -> str:
    """Boil water in the kettle."""
    LOG.append("boil")
    return "hot water"


@skill
def fetch_cup() -> str:
    """Fetch a cup from the cupboard."""
    LOG.append("fetch")
    return "a cup"


@skill
def pour() -> str:
    """Pour the hot water into the cup."""
    LOG.append("pour")
    return "tea"


def _step(k: int, title: str, skill: str, deps: list[str] | None = None) -> dict[str, Any]:
    return {"id": str(k), "title": title, "skill": skill, "args": {}, "depends_on": deps or []}


ROOT_PLAN = {
    "steps": [
        _step(1, "boil water", "boil"),
        _step(2, "make the tea", "decompose"),
        _step(3, "fetch a cup", "fetch_cup"),
    ]
}


class TeaModel:
    """Plans like a model that reads the prompt: the sub-plan of "make the tea" pours once
    the cup, a step of the root plan not yet done, is there."""

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []

    def __call__(self, request: LLMRequest) -> str:
        self.requests.append(request)
        prompt = request.prompt or ""
        if prompt.rstrip().endswith("Goal: make the tea\nPlan:"):
            return json.dumps({"steps": [_step(1, "pour the tea", "pour", ["task.3"])]})
        return json.dumps(ROOT_PLAN)


def _agent(url: str, model: TeaModel) -> Agent:
    backend = FunctionBackend(model)
    planner = LLMPlanner(backend, config=PlannerConfig(max_attempts=1))
    return Agent(
        config=AgentConfig(database_url=url, past_cases=False),
        backend=backend,
        planner=planner,
        skills=[boil, fetch_cup, pour],
    )


def test_a_sub_plan_waits_for_a_step_of_another_branch(tmp_path: Path) -> None:
    LOG.clear()
    model = TeaModel()
    path = tmp_path / "tea.jsonl"
    with _agent(f"sqlite:///{tmp_path}/t.db", model) as agent:
        result = agent.run("make a cup of tea", trace=path)
        assert result.success, result
        # Without the shared step the sub-plan would pour before the cup was fetched.
        assert LOG == ["boil", "fetch", "pour"]
        nodes = {n.title: n for n in agent.tree(result.task_id).nodes}
        poured = nodes["pour the tea"]
        assert poured.parent_id == nodes["make the tea"].id
        assert poured.depends_on == (nodes["fetch a cup"].id,)
    sub = model.requests[1]
    assert "Steps already in the task (a step may also depend on these):" in (sub.prompt or "")
    assert "- task.3: fetch a cup (pending)" in (sub.prompt or "")
    # Not offered: the step being planned, and a step already done (waiting orders nothing).
    assert "task.2" not in (sub.prompt or "") and "task.1" not in (sub.prompt or "")
    deps = sub.json_schema["$defs"]["deps_1"]["items"]["enum"]  # type: ignore[index]
    assert deps == ["task.3"]
    # The trace keeps what was offered; replay and the fast check agree with the recording.
    trace = read_trace(path)
    plans = trace.of_type(PlanEvent)
    assert plans[0].other_steps is None
    assert [o["id"] for o in plans[1].other_steps or []] == ["task.3"]
    replayed = replay_sync(trace)
    assert replayed.ok, replayed.divergence.describe() if replayed.divergence else replayed.error
    checked = check_trace(trace)
    assert checked.ok, checked.divergence.describe() if checked.divergence else checked


def test_a_step_that_waits_for_the_planned_one_is_never_offered(tmp_path: Path) -> None:
    """Step 2 waits for step 1: a sub-plan of step 1 waiting for step 2 would deadlock, so
    the schema does not let the model write it and the validator refuses it by name."""
    LOG.clear()
    plans = [
        {"steps": [_step(1, "make the tea", "decompose"), _step(2, "boil water", "boil", ["1"])]},
        {"steps": [_step(1, "pour the tea", "pour", ["task.2"])]},
    ]
    model_calls: list[LLMRequest] = []

    def model(request: LLMRequest) -> str:
        model_calls.append(request)
        return json.dumps(plans[min(len(model_calls), 2) - 1])

    backend = FunctionBackend(model)
    with Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/t.db", past_cases=False),
        backend=backend,
        planner=LLMPlanner(backend, config=PlannerConfig(max_attempts=1)),
        skills=[boil, pour],
    ) as agent:
        result = agent.run("make a cup of tea")
        assert not result.success and LOG == []
        assert "'task.2', which is not a step id of this plan" in result.reason, result.reason
    assert "Steps already in the task" not in (model_calls[1].prompt or "")


def test_shared_steps_zero_offers_none(tmp_path: Path) -> None:
    LOG.clear()
    model = TeaModel()
    backend = FunctionBackend(model)
    with Agent(
        config=AgentConfig(
            database_url=f"sqlite:///{tmp_path}/t.db", past_cases=False, shared_steps=0
        ),
        backend=backend,
        planner=LLMPlanner(backend, config=PlannerConfig(max_attempts=1)),
        skills=[boil, fetch_cup, pour],
    ) as agent:
        result = agent.run("make a cup of tea")
    assert not result.success and "'task.3', which is not a step id" in result.reason
    assert "Steps already in the task" not in (model.requests[1].prompt or "")
