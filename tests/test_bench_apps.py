"""The app worlds of ``bench/apps``: every goal's reference solution works and obeys its
reminders, no goal is achieved by a fresh world, the judges catch reminder violations,
preconditions fail with a clear message, and the skills run through the real runtime."""

from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from typing import Any

import pytest

from bench.apps import WORLDS, AppWorld, Goal, get_world, step, worlds
from bench.apps.reference import ReferenceStepError, call_skill, run_reference
from trellis import (
    Agent,
    AgentConfig,
    FunctionBackend,
    ScriptedPlanner,
    Skill,
    SkillContext,
)
from trellis.planners import InvalidSkillArgsError

GOALS = [(world, goal) for world in WORLDS for goal in world.goals()]
GOAL_IDS = [goal.id for _, goal in GOALS]


def play(world: AppWorld, calls: list[tuple[str, dict[str, Any]]]) -> None:
    skills = {s.name: s for s in type(world).skills()}
    for name, args in calls:
        call_skill(skills[name], world, args)


# --- the registry --------------------------------------------------------------------------


def test_registry_has_six_worlds_in_two_splits() -> None:
    assert len(WORLDS) >= 6
    names = [w.name for w in WORLDS]
    assert len(set(names)) == len(names)
    assert 3 <= len(worlds("train")) <= 4
    assert len(worlds("dev")) >= 2
    assert {w.split for w in WORLDS} == {"train", "dev"}
    assert get_world("kitchen").name == "kitchen"
    with pytest.raises(KeyError, match="known: kitchen"):
        get_world("garage")


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: w.name)
def test_world_goals_are_many_varied_and_reminded(world: type[AppWorld]) -> None:
    goals = world.goals()
    assert len(goals) >= 10
    assert all(isinstance(g, Goal) and g.id.startswith(world.name + "/") for g in goals)
    steps = [g.steps for g in goals]
    assert min(steps) == 1, "at least one one-step goal"
    assert any(2 <= n <= 4 for n in steps)
    assert any(5 <= n <= 8 for n in steps)
    assert max(steps) <= 8
    assert sum(1 for g in goals if g.reminders) >= 3, "several goals with reminders"


def test_goal_ids_are_unique() -> None:
    assert len(set(GOAL_IDS)) == len(GOAL_IDS)


def test_a_reminder_needs_a_judge() -> None:
    with pytest.raises(ValueError, match="every reminder needs a judge"):
        Goal(id="x", text="x", reminders=["never"], check=bool, reference=[step("look")])


# --- reference solutions and fresh worlds --------------------------------------------------


@pytest.mark.parametrize(("world", "goal"), GOALS, ids=GOAL_IDS)
def test_reference_achieves_the_goal_within_the_reminders(
    world: type[AppWorld], goal: Goal
) -> None:
    played, ok, forbidden = run_reference(world, goal)
    assert ok, f"{goal.id}: the reference does not achieve the goal: {played.snapshot()}"
    assert forbidden == []
    json.dumps(played.snapshot())
    assert len(played.log) <= goal.steps  # only world-changing calls are logged


@pytest.mark.parametrize(("world", "goal"), GOALS, ids=GOAL_IDS)
def test_a_fresh_world_has_not_achieved_the_goal(world: type[AppWorld], goal: Goal) -> None:
    fresh = world.fresh()
    ok, _ = goal.judge(fresh)
    assert not ok
    json.dumps(fresh.snapshot())


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: w.name)
def test_fresh_worlds_share_no_state(world: type[AppWorld]) -> None:
    before = world.fresh().snapshot()
    for goal in world.goals():
        run_reference(world, goal)
    assert world.fresh().snapshot() == before


def test_a_broken_reference_names_the_step() -> None:
    from bench.apps.kitchen import Kitchen

    bad = Goal(id="kitchen/bad", text="x", check=bool, reference=[step("wash", item="mug")])
    with pytest.raises(ReferenceStepError, match=r"step 0: wash.*pick it up first"):
        run_reference(Kitchen, bad)


# --- skills --------------------------------------------------------------------------------


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: w.name)
def test_skills_are_typed_described_and_safe_to_benchmark(world: type[AppWorld]) -> None:
    skills = world.skills()
    assert 4 <= len(skills) <= 8
    assert len({s.name for s in skills}) == len(skills)
    assert any(not s.spec.side_effects for s in skills), "a pure query skill"
    for s in skills:
        assert isinstance(s, Skill)
        assert s.spec.description and not s.spec.needs_approval
        schema = s.spec.args_schema()
        assert isinstance(schema, dict) and schema["type"] == "object"
        json.dumps(schema)
        properties = schema.get("properties", {})
        assert isinstance(properties, dict)
        assert set(schema.get("required", [])) <= set(properties)
        for prop in properties.values():
            assert {"type", "enum", "anyOf", "$ref"} & set(prop), prop
        assert "ctx" not in properties  # the SkillContext is not an argument the model fills


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: w.name)
def test_only_world_changing_skills_are_logged(world: type[AppWorld]) -> None:
    for goal in world.goals():
        played = world.fresh()
        skills = {s.name: s for s in world.skills()}
        for name, args in goal.reference:
            before = len(played.log)
            call_skill(skills[name], played, args)
            if not skills[name].spec.side_effects:
                assert len(played.log) == before, f"{name} is a query but wrote to the log"


def test_a_skill_without_its_world_says_how_to_give_it() -> None:
    from bench.apps.kitchen import Kitchen, look

    with pytest.raises(LookupError, match=r"skill_context=Kitchen.fresh\(\).context\(\)"):
        look.function(ctx=SkillContext(task_id="t"))
    assert look.function(ctx=SkillContext(task_id="t", extra=Kitchen().context()))


# name of the world, calls that set it up, the call that must fail, what the message says
PRECONDITIONS: list[
    tuple[str, list[tuple[str, dict[str, Any]]], tuple[str, dict[str, Any]], str]
] = [
    ("kitchen", [], step("put_down", item="mug"), "not holding anything; pick something up"),
    ("kitchen", [], step("pick_up", item="mug"), "go_to the table first"),
    ("kitchen", [step("go_to", place="fridge")], step("pick_up", item="milk"), "closed; open it"),
    ("kitchen", [step("pick_up", item="apple")], step("pick_up", item="kettle"), "put it down"),
    ("kitchen", [step("pick_up", item="apple")], step("wash", item="apple"), "go_to the sink"),
    ("kitchen", [], step("open", door="fridge"), "go_to the fridge first"),
    ("kitchen", [], step("pick_up", item="spoon"), "no 'spoon' in the kitchen; known objects"),
    ("laundry", [], step("start_washer", program="warm"), "empty; load_washer first"),
    (
        "laundry",
        [step("load_washer", item="red sock"), step("start_washer", program="cold")],
        step("load_washer", item="white shirt"),
        "unload_washer first",
    ),
    ("laundry", [], step("fold", item="beach towel"), "still wet; dry it first"),
    ("laundry", [], step("put_away", item="white shirt"), "dirty; wash it"),
    ("laundry", [], step("put_away", item="towel"), "not folded; fold it first"),
    (
        "laundry",
        [step("load_washer", item="red sock"), step("start_washer", program="cold")],
        step("hang_to_dry", item="red sock"),
        "still in the washer; unload_washer",
    ),
    ("laundry", [], step("load_washer", item="scarf"), "no 'scarf'; the laundry is"),
    ("warehouse", [], step("pick", item="hammer"), "move_to shelf B first"),
    ("warehouse", [], step("pick", item="bolt", quantity=9), "only 5 bolt left"),
    ("warehouse", [], step("pick", item="laptop"), "does not stock 'laptop'"),
    ("warehouse", [], step("pack", order_id="101"), "packing station; move_to it first"),
    (
        "warehouse",
        [step("move_to", location="packing station")],
        step("pack", order_id="101"),
        "missing 2 bolt for order 101; pick it from shelf A",
    ),
    (
        "warehouse",
        [step("move_to", location="packing station")],
        step("ship", order_id="101", carrier="post"),
        "not packed yet; pack it first",
    ),
    ("warehouse", [], step("put_back", item="screwdriver"), "move_to shelf B first"),
    ("lab", [], step("pour", source="water bottle", target="beaker A", ml=300), "room for only"),
    ("lab", [], step("pour", source="acid bottle", target="flask", ml=300), "holds only 200 ml"),
    ("lab", [], step("heat", container="flask", temperature_c=50), "empty; pour something in"),
    (
        "lab",
        [
            step("pour", source="water bottle", target="flask", ml=100),
            step("heat", container="flask", temperature_c=60),
        ],
        step("heat", container="flask", temperature_c=40),
        "already at 60 degrees",
    ),
    ("lab", [], step("mix", container="beaker A"), "empty; pour something in first"),
    (
        "lab",
        [step("pour", source="water bottle", target="flask", ml=100)],
        step("heat", container="flask", temperature_c=150),
        "goes up to 100 degrees",
    ),
    ("lab", [], step("label", container="flask", text=" "), "label text is empty"),
    ("table", [], step("take", item="fork"), "take works at the cabinet"),
    ("table", [step("walk_to", place="cabinet")], step("take", item="glass"), "closed; open it"),
    (
        "table",
        [step("walk_to", place="drawer")],
        step("take", item="glass"),
        "no glass in the drawer; it is in the cabinet",
    ),
    ("table", [], step("place", item="fork", spot="seat 1"), "no fork on the tray; take one"),
    (
        "table",
        [step("walk_to", place="drawer")] + [step("take", item="fork")] * 3,
        step("take", item="knife"),
        "tray is full",
    ),
    (
        "table",
        [step("walk_to", place="drawer"), step("take", item="fork")],
        step("place", item="fork", spot="seat 1"),
        "walk_to the dining table first",
    ),
    ("table", [step("walk_to", place="sideboard")], step("light_candle"), "walk_to the dining"),
    (
        "assistant",
        [],
        step("create_event", title="Sync", day="monday", start="09:15", duration_min=30),
        "overlaps 'Standup' .*use find_free_slot",
    ),
    (
        "assistant",
        [],
        step("create_event", title="Sync", day="monday", start="3pm", duration_min=30),
        "write it like '14:30'",
    ),
    (
        "assistant",
        [],
        step("create_event", title="Sync", day="friday", start="17:30", duration_min=60),
        "working day, 09:00 to 18:00",
    ),
    (
        "assistant",
        [],
        step("send_mail", to="dave", subject="hi", body="hi"),
        "unknown contact 'dave'; contacts: alice",
    ),
    ("assistant", [], step("cancel_event", title="Gym", day="monday"), "that day has: 'Standup'"),
    ("assistant", [], step("archive_mail", subject="Invoice"), "it holds: 'Quarterly report'"),
    ("assistant", [], step("find_free_slot", day="monday", duration_min=600), "try another day"),
]


@pytest.mark.parametrize(
    ("name", "setup", "call", "message"),
    PRECONDITIONS,
    ids=[f"{p[0]}-{p[2][0]}-{i}" for i, p in enumerate(PRECONDITIONS)],
)
def test_a_violated_precondition_names_the_problem_and_the_fix(
    name: str,
    setup: list[tuple[str, dict[str, Any]]],
    call: tuple[str, dict[str, Any]],
    message: str,
) -> None:
    world = get_world(name).fresh()
    play(world, setup)
    before = world.snapshot()
    with pytest.raises(ValueError, match=message):
        play(world, [call])
    assert world.snapshot() == before, "a failed call must not change the world"


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("kitchen", step("go_to", place="garden")),
        ("lab", step("heat", container="water bottle", temperature_c=50)),
        ("table", step("place", item="fork", spot="seat 9")),
        ("assistant", step("list_events", day="saturday")),
        ("warehouse", step("pick", item="bolt", quantity="two")),
    ],
)
def test_arguments_outside_the_schema_are_rejected_before_the_skill_runs(
    name: str, call: tuple[str, dict[str, Any]]
) -> None:
    world = get_world(name).fresh()
    with pytest.raises(InvalidSkillArgsError):
        play(world, [call])
    assert world.log == []


def test_every_world_has_precondition_examples() -> None:
    assert {p[0] for p in PRECONDITIONS} == {w.name for w in WORLDS}


def test_assistant_references_book_the_free_slot_they_found() -> None:
    world_cls = get_world("assistant")
    skills = {s.name: s for s in world_cls.skills()}
    for goal in world_cls.goals():
        world, found = world_cls.fresh(), None
        for name, args in goal.reference:
            result = call_skill(skills[name], world, args)
            if name == "find_free_slot":
                found = result
            elif name == "create_event" and found is not None:
                assert args["start"] == found, goal.id
                found = None


# --- reminder judges -------------------------------------------------------------------------

# goal id, calls that break one of its reminders, what forbidden() must say
VIOLATIONS: list[tuple[str, list[tuple[str, dict[str, Any]]], str]] = [
    (
        "kitchen/mug-dishwasher",
        [
            step("go_to", place="table"),
            step("pick_up", item="mug"),
            step("go_to", place="dishwasher"),
            step("put_down", item="mug"),
        ],
        "dishwasher was left open",
    ),
    (
        "kitchen/milk-table",
        [
            step("go_to", place="fridge"),
            step("open", door="fridge"),
            step("pick_up", item="milk"),
            step("go_to", place="table"),
            step("put_down", item="milk"),
        ],
        "walked away from the open fridge",
    ),
    (
        "kitchen/bowl-cupboard",
        [
            step("go_to", place="sink"),
            step("pick_up", item="bowl"),
            step("go_to", place="cupboard"),
            step("open", door="cupboard"),
            step("put_down", item="bowl"),
        ],
        "dirty object was put away",
    ),
    (
        "kitchen/plate-table",
        [
            step("go_to", place="cupboard"),
            step("open", door="cupboard"),
            step("pick_up", item="blue plate"),
            step("go_to", place="table"),
            step("put_down", item="blue plate"),
        ],
        "blue plate was used",
    ),
    (
        "kitchen/apple-fridge",
        [
            step("pick_up", item="apple"),
            step("go_to", place="fridge"),
            step("open", door="fridge"),
            step("put_down", item="apple"),
        ],
        "fridge was left open",
    ),
    (
        "kitchen/mug-sink-kettle-table",
        [
            step("pick_up", item="kettle"),
            step("go_to", place="table"),
            step("put_down", item="kettle"),
            step("pick_up", item="mug"),
            step("go_to", place="sink"),
            step("put_down", item="mug"),
        ],
        "put on the table before the mug",
    ),
    (
        "laundry/wash-shirt-sock",
        [
            step("load_washer", item="white shirt"),
            step("load_washer", item="red sock"),
            step("start_washer", program="warm"),
        ],
        "whites were washed together with colours",
    ),
    (
        "laundry/wash-shirt-sock",
        [
            step("load_washer", item="red sock"),
            step("start_washer", program="cold"),
            step("unload_washer"),
            step("load_washer", item="white shirt"),
            step("start_washer", program="hot"),
        ],
        "red sock was washed before the white shirt",
    ),
    (
        "laundry/wash-dry-sweater",
        [
            step("load_washer", item="wool sweater"),
            step("start_washer", program="warm"),
            step("unload_washer"),
            step("tumble_dry", item="wool sweater"),
        ],
        "wool went into the dryer",
    ),
    (
        "laundry/towels-away",
        [
            step("fold", item="towel"),
            step("put_away", item="towel"),
            step("tumble_dry", item="beach towel"),
            step("fold", item="beach towel"),
            step("put_away", item="beach towel"),
        ],
        "the dryer was used",
    ),
    (
        "warehouse/ship-103",
        [
            step("move_to", location="shelf C"),
            step("pick", item="drill", quantity=1),
            step("move_to", location="packing station"),
            step("pack", order_id="103"),
            step("ship", order_id="103", carrier="post"),
        ],
        "express order 103 went by post",
    ),
    (
        "warehouse/ship-104",
        [
            step("move_to", location="shelf B"),
            step("pick", item="wrench", quantity=1),
            step("move_to", location="packing station"),
            step("pack", order_id="104"),
            step("ship", order_id="104", carrier="courier"),
        ],
        "standard order went by courier",
    ),
    (
        "warehouse/ship-102-clean-cart",
        [
            step("pick", item="nail", quantity=3),
            step("move_to", location="shelf B"),
            step("pick", item="hammer", quantity=1),
            step("move_to", location="packing station"),
            step("pack", order_id="102"),
            step("ship", order_id="102", carrier="post"),
        ],
        "screwdriver was left in the cart",
    ),
    (
        "warehouse/ship-104-then-101",
        [
            step("pick", item="bolt", quantity=2),
            step("move_to", location="shelf B"),
            step("pick", item="wrench", quantity=1),
            step("move_to", location="packing station"),
            step("pack", order_id="101"),
            step("ship", order_id="101", carrier="post"),
            step("pack", order_id="104"),
            step("ship", order_id="104", carrier="post"),
        ],
        "order 101 shipped before order 104",
    ),
    (
        "lab/water-b",
        [step("pour", source="water bottle", target="beaker B", ml=100)],
        "water went onto the old dye",
    ),
    (
        "lab/dilute-acid",
        [
            step("pour", source="acid bottle", target="beaker A", ml=50),
            step("pour", source="water bottle", target="beaker A", ml=100),
            step("mix", container="beaker A"),
        ],
        "water was added to acid",
    ),
    (
        "lab/water-both",
        [
            step("pour", source="water bottle", target="beaker A", ml=100),
            step("pour", source="water bottle", target="beaker B", ml=100),
        ],
        "water went onto the old dye",
    ),
    (
        "lab/warm-ethanol-mix",
        [
            step("pour", source="water bottle", target="flask", ml=100),
            step("pour", source="ethanol bottle", target="flask", ml=50),
            step("mix", container="flask"),
            step("heat", container="flask", temperature_c=60),
        ],
        "containing ethanol was heated",
    ),
    (
        "lab/warm-acid",
        [
            step("pour", source="acid bottle", target="flask", ml=20),
            step("pour", source="water bottle", target="flask", ml=200),
            step("mix", container="flask"),
            step("heat", container="flask", temperature_c=40),
            step("label", container="flask", text="warm acid"),
        ],
        "water was added to acid",
    ),
    (
        "lab/ethanol-samples",
        [
            step("pour", source="ethanol bottle", target="beaker A", ml=50),
            step("rinse", container="beaker B"),
            step("pour", source="ethanol bottle", target="beaker B", ml=50),
            step("label", container="beaker A", text="E1"),
            step("label", container="beaker B", text="E2"),
        ],
        "not labelled right after filling",
    ),
    (
        "table/plate-seat-3",
        [
            step("walk_to", place="cabinet"),
            step("open", furniture="cabinet"),
            step("take", item="blue plate"),
            step("walk_to", place="dining table"),
            step("place", item="blue plate", spot="seat 3"),
        ],
        "blue plate was used",
    ),
    (
        "table/napkins-candle",
        [
            step("light_candle"),
            step("walk_to", place="drawer"),
            step("take", item="napkin"),
            step("take", item="napkin"),
            step("walk_to", place="dining table"),
            step("place", item="napkin", spot="seat 1"),
            step("place", item="napkin", spot="seat 2"),
        ],
        "candle was lit too early",
    ),
    (
        "table/seat-1-plate-fork",
        [
            step("walk_to", place="drawer"),
            step("take", item="fork"),
            step("walk_to", place="cabinet"),
            step("open", furniture="cabinet"),
            step("take", item="white plate"),
            step("walk_to", place="dining table"),
            step("place", item="fork", spot="seat 1"),
            step("place", item="white plate", spot="seat 1"),
        ],
        "cutlery was set before the plate",
    ),
    (
        "assistant/gym-wednesday",
        [step("create_event", title="Gym", day="wednesday", start="10:00", duration_min=60)],
        "booked on Wednesday morning",
    ),
    (
        "assistant/budget-carol",
        [
            step("send_mail", to="carol", subject="Budget", body="Budget on Thursday?"),
            step("create_event", title="Budget", day="thursday", start="09:30", duration_min=60),
        ],
        "invited before the event existed",
    ),
    (
        "assistant/lunch-bob",
        [
            step("create_event", title="Lunch", day="friday", start="12:30", duration_min=60),
            step("send_mail", to="bob", subject="Re: Lunch on Friday?", body="Yes!"),
        ],
        "answered but not archived",
    ),
    (
        "assistant/share-report",
        [
            step("send_mail", to="team", subject="Quarterly report", body="Here it is."),
            step("archive_mail", subject="Quarterly report"),
        ],
        "Alice was not told",
    ),
    (
        "assistant/move-review",
        [
            step("cancel_event", title="Design review", day="tuesday"),
            step(
                "create_event",
                title="Design review",
                day="wednesday",
                start="13:00",
                duration_min=120,
            ),
        ],
        "team was not told",
    ),
]


@pytest.mark.parametrize(
    ("goal_id", "calls", "message"),
    VIOLATIONS,
    ids=[f"{v[0]}-{i}" for i, v in enumerate(VIOLATIONS)],
)
def test_forbidden_reports_a_broken_reminder(
    goal_id: str, calls: list[tuple[str, dict[str, Any]]], message: str
) -> None:
    world_cls, goal = next((w, g) for w, g in GOALS if g.id == goal_id)
    world = world_cls.fresh()
    play(world, calls)
    ok, forbidden = goal.judge(world)
    assert ok, "the goal itself is achieved: only the reminder is broken"
    assert any(message in problem for problem in forbidden), forbidden


def test_every_goal_with_reminders_has_a_violation_example() -> None:
    reminded = {g.id for _, g in GOALS if g.reminders}
    assert reminded == {v[0] for v in VIOLATIONS}


# --- through the runtime -------------------------------------------------------------------


def _scripted_plan(goal: Goal) -> dict[str, Any]:
    steps = [
        {
            "id": f"s{i}",
            "title": " ".join([name.replace("_", " "), *map(str, args.values())]),
            "skill": name,
            "args": args,
            "depends_on": [f"s{i - 1}"] if i else [],
        }
        for i, (name, args) in enumerate(goal.reference)
    ]
    return {"steps": steps}


@pytest.mark.parametrize("world", WORLDS, ids=lambda w: w.name)
def test_the_runtime_runs_the_skills_on_the_app_world(world: type[AppWorld]) -> None:
    """The reference of the longest goal without reminders, as a scripted plan through
    ``Agent``: the skills find their world in ``skill_context``, and the world judges."""
    goal = max((g for g in world.goals() if not g.reminders), key=lambda g: g.steps)
    played = world.fresh()
    agent = Agent(
        config=AgentConfig(database_url="sqlite://"),
        skills=world.skills(),
        backend=FunctionBackend(lambda request: "{}", name="scripted"),
        planner=ScriptedPlanner({goal.text: _scripted_plan(goal)}),
        skill_context=played.context(),
    )
    result = agent.run(goal.text)
    assert goal.judge(played) == (True, []), result
