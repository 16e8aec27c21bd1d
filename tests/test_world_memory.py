"""World memory: facts folded in order, rendered under a budget, rebuilt from the tree; the
twc pack's facts read from real game text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from trellis_twc import TwcConfig, TwcEnvironment
from trellis_twc._facts import look_facts, move_facts

from trellis.memory import (
    FACTS_KEY,
    START_KEY,
    NodeSpec,
    NodeStatus,
    TaskStore,
    fact_rows,
    fold_facts,
    render_world,
    world_memory,
)


def test_the_latest_object_wins_and_an_empty_one_forgets() -> None:
    memory = fold_facts({}, [["key", "seen", "kitchen"], ["kitchen", "exit south", "corridor"]])
    fold_facts(memory, [["key", "seen", "carried"], ["kitchen", "exit south", ""]])
    assert memory == {("key", "seen"): "carried"}


def test_rendering_puts_focused_subjects_first_and_keeps_to_its_budget() -> None:
    memory = fold_facts(
        {},
        [
            ["kitchen", "places", "fridge (closed), counter"],
            ["bathroom", "places", "sink, towel rack"],
            ["dirty bowl", "seen", "sink, bathroom"],
        ],
    )
    text = render_world(memory, budget_chars=500, focus=["Carrying: dirty bowl"])
    assert text.splitlines()[0] == "dirty bowl: seen sink, bathroom"
    assert text.splitlines()[1].startswith("bathroom:")  # then the most recent
    short = render_world(memory, budget_chars=40, focus=[])
    assert len(short) <= 40 + len("\n(+2 more)") and short.endswith("(+2 more)")


def test_the_memory_is_rebuilt_from_the_task_and_its_finished_moves(tmp_path: Path) -> None:
    store = TaskStore.open(f"sqlite:///{tmp_path}/w.db")
    try:
        task = store.create_task(
            "tidy", metadata={START_KEY: [["kitchen", "places", "fridge (closed)"]]}
        )
        root = store.root(task.id)
        store.transition(root.id, NodeStatus.RUNNING)
        first, second, third = store.add_children(
            task.id, root.id, [NodeSpec(key=f"m{i}", kind="env") for i in range(3)]
        )
        for node, rows in (
            (first, [["kitchen", "places", "fridge, counter"], ["key", "seen", "counter"]]),
            (second, [["key", "seen", "carried"]]),
        ):
            store.transition(node.id, NodeStatus.RUNNING)
            store.transition(node.id, NodeStatus.DONE, output={FACTS_KEY: rows})
        store.transition(third.id, NodeStatus.RUNNING)  # not finished: not yet known
        memory = world_memory(store.get_task(task.id), store.nodes(task.id))
    finally:
        store.close()
    assert memory == {("kitchen", "places"): "fridge, counter", ("key", "seen"): "carried"}


def test_fact_rows_take_triples_and_fact_objects() -> None:
    from trellis import Fact

    rows = fact_rows([("a", "b", "c"), Fact(subject="d", relation="e", object="")])
    assert rows == [["a", "b", "c"], ["d", "e", ""]]


LOOK = (
    "You are in the kitchen. In one part of the room you see a fridge that is closed. "
    "There is also a counter that has a fork, and a dirty spoon on it. You also see An open "
    "kitchen cupboard, that contains a clean pan. In another part of the room you see a "
    "dining chair, that has nothing on it. In one part of the room you see a key. \n"
    "To the South you see the corridor. Through an open wood door, to the West you see the "
    "bathroom. To the East you see a closed plain door."
)


def test_twc_room_descriptions_become_places_exits_and_sightings() -> None:
    facts = {(f.subject, f.relation): f.object for f in look_facts(LOOK, takeable=["key"])}
    assert facts[("kitchen", "places")] == (
        "fridge (closed), counter, kitchen cupboard, dining chair"
    )
    assert facts[("kitchen", "exit south")] == "corridor"
    assert facts[("kitchen", "exit west")] == "bathroom"
    assert facts[("kitchen", "exit east")] == "closed plain door"
    assert facts[("dirty spoon", "seen")] == "counter, kitchen"
    assert facts[("clean pan", "seen")] == "kitchen cupboard, kitchen"
    assert facts[("key", "seen")] == "kitchen"


def test_twc_puts_teach_homes_and_wrong_places() -> None:
    right = move_facts("put fork in cutlery drawer", "You put the fork in...", [], 0.25)
    wrong = move_facts("put fork in fridge", "You put the fork in...", [], -0.25)
    assert ("fork", "done", "put away in cutlery drawer") in [
        (f.subject, f.relation, f.object) for f in right
    ]
    assert ("fork", "not in fridge", "wrong place") in [
        (f.subject, f.relation, f.object) for f in wrong
    ]


@pytest.mark.parametrize("seed", [52, 61])
def test_twc_facts_along_a_gold_path_map_every_room_visited(seed: int) -> None:
    env = TwcEnvironment(
        TwcConfig(seed=seed, fold="dev", num_locations=3, num_items=3, include_doors=True)
    )
    try:
        state = env.reset()
        memory = fold_facts({}, fact_rows(env.observed_facts(state)))
        rooms = set()
        for action in env.gold_actions():
            if state.done or action not in state.valid_actions:
                break
            state = env.step(action)
            fold_facts(memory, fact_rows(env.observed_facts(state)))
            rooms.add(state.look.split(".")[0].removeprefix("You are in the "))
        assert state.success
    finally:
        env.close()
    assert {room for room, relation in memory if relation == "places"} == rooms
    assert any(relation == "done" for _subject, relation in memory)


@pytest.mark.parametrize("doors", [False, True])
def test_the_runtimes_move_prompts_are_the_training_rows(tmp_path: Path, doors: bool) -> None:
    """Rows for the act adapter show exactly what the runtime's prompts show: the part being
    worked on, the world memory from the tree, the offered actions."""
    import json

    from trellis_twc._datasets import twc_expert_examples

    from trellis import Agent, AgentConfig, FunctionBackend, LLMRequest

    config = TwcConfig(seed=4, fold="train", num_locations=2, num_items=2, include_doors=doors)
    rows = list(twc_expert_examples([config], noise=0.0))
    moves = [json.loads(row["completion"])["action"] for row in rows]
    prompts: list[str] = []

    def expert(request: LLMRequest) -> str:
        prompts.append(request.prompt or "")
        return json.dumps({"action": moves[len(prompts) - 1]})

    agent = Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/p.db", shipped_adapters=False),
        backend=FunctionBackend(expert),
    )
    try:
        result = agent.run(env=config)
        parts = [n for n in agent.tree(result.task_id).nodes if n.kind == "part"]
    finally:
        agent.close()
    assert result.success and prompts == [row["prompt"] for row in rows]
    assert "Memory:" in prompts[-1] and "Step: put the " in prompts[-1]
    # One part per object and one for finding them, each done as the world judges it.
    assert len(parts) == 3 and all(p.status.value == "done" for p in parts)


def test_cookingworld_rows_are_the_runtimes_prompts_too(tmp_path: Path) -> None:
    import json

    from trellis_cookingworld import CookingConfig
    from trellis_cookingworld._datasets import cooking_act_examples

    from trellis import Agent, AgentConfig, FunctionBackend, LLMRequest

    config = CookingConfig(seed=2, fold="train", num_locations=2, num_ingredients=2)
    rows = list(cooking_act_examples([config], detour=0.0))
    moves = [json.loads(row["completion"])["action"] for row in rows]
    prompts: list[str] = []

    def gold(request: LLMRequest) -> str:
        prompts.append(request.prompt or "")
        return json.dumps({"action": moves[len(prompts) - 1]})

    agent = Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/c.db", shipped_adapters=False),
        backend=FunctionBackend(gold),
    )
    try:
        result = agent.run(env=config)
        parts = {
            n.key: n.status.value for n in agent.tree(result.task_id).nodes if n.kind == "part"
        }
    finally:
        agent.close()
    assert result.success and prompts == [row["prompt"] for row in rows]
    assert parts["part:cookbook"] == "done" and parts["part:eat"] == "done"
    assert any("Memory:\nrecipe: needs" in p or "recipe: needs" in p for p in prompts)


def test_a_part_the_world_undoes_after_it_closed_does_not_stop_the_task(tmp_path: Path) -> None:
    """A part closes done when the world says so; if a later move undoes it (a wrong digit
    resets the lock), the task goes on: the closed node stays closed and moves go elsewhere."""
    import json

    from _dial_pack import Dial, DialSpec

    from trellis import Agent, AgentConfig, EnvironmentPack, FunctionBackend, GoalPart, LLMRequest

    class PartsDial(Dial):
        def goal_parts(self, state: Any) -> list[GoalPart]:
            return [
                GoalPart(key=f"digit{i}", title=f"set digit {i + 1}", done=self.entered > i)
                for i in range(len(self.spec.code))
            ]

    pack = EnvironmentPack(spec=DialSpec, create=PartsDial, description="a lock with parts")
    moves = iter(["turn up", "turn up", "set", "set", "set", "turn down", "set"])

    def model(request: LLMRequest) -> str:
        return json.dumps({"action": next(moves)})

    agent = Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/parts.db", max_steps=10),
        backend=FunctionBackend(model),
        environments=[pack],
        router=None,
    )
    with agent:
        result = agent.run(env=DialSpec(code=[2, 1]))
        parts = {
            n.key: n.status.value for n in agent.tree(result.task_id).nodes if n.kind == "part"
        }
    assert result.success and result.steps == 7
    assert parts == {"part:digit0": "done", "part:digit1": "done"}
