"""The cookingworld environment pack on the real TextWorldExpress engine (Java 17)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest
from pydantic import ValidationError

pytest.importorskip("textworld_express")
if shutil.which("java") is None:
    pytest.skip("cookingworld runs on Java 17 or newer", allow_module_level=True)

from trellis_cookingworld import (
    PACK,
    CookingConfig,
    CookingEnvironment,
    CookingState,
    parse_recipe,
    parse_room,
)
from trellis_cookingworld._text import base_name, parse_inventory, steps_left

from trellis.agent.env import Fact
from trellis.agent.errors import EnvironmentFailure, ForbiddenFoldError, InvalidEnvSpecError
from trellis.memory.errors import UsageError

# Real game text, as cookingworld printed it.
KITCHEN_WITH_DOORS = (
    "You are in the kitchen. In one part of the room you see a stove. There is also an oven. "
    "You also see a fridge that is closed. In another part of the room you see a counter, that "
    "has nothing on it. In one part of the room you see a kitchen cupboard that is closed. There "
    "is also a cutlery drawer that is closed. You also see a trash can that is closed. In another "
    "part of the room you see a dishwasher that is closed. In one part of the room you see a "
    "dining chair, that has nothing on it. \nThrough an open patio door, to the North you see the "
    "backyard. To the South you see a closed plain door. "
)
KITCHEN_OPEN_FRIDGE = (
    "You are in the kitchen. In one part of the room you see a stove. There is also an oven. You "
    "also see a toaster. In another part of the room you see An open fridge, that contains a red "
    "onion, and an orange bell pepper. In one part of the room you see a counter that has a "
    "knife, and a cookbook on it. There is also a kitchen cupboard that is closed. \nTo the East "
    "you see the pantry. "
)
BACKYARD = (
    "You are in the backyard. In one part of the room you see a barbeque. There is also a "
    "workbench, that has nothing on it. You also see a patio chair, that has nothing on it. In "
    "another part of the room you see a patio table, that has nothing on it. In one part of the "
    "room you see a clothes line, that has nothing on it. There is also a garden that has a "
    "carrot on it. \nTo the West you see the kitchen. "
)
COOKBOOK = (
    "Gather all following ingredients and follow the directions to prepare this tasty meal."
    "\n\nIngredients:\n  red onion\n  orange bell pepper\n  salt\n\nDirections:\n  chop the red "
    "onion\n  grill the red onion\n  chop the orange bell pepper\n  roast the orange bell pepper"
    "\n  prepare meal\n\n"
)
INVENTORY = (
    "Inventory (maximum capacity is 7 items): \n  a cookbook\n  a knife\n  some salt\n"
    "  a raw chopped yellow potato\n  a grilled chopped red onion\n"
)


@pytest.fixture(scope="module")
def env() -> Iterator[CookingEnvironment]:
    environment = CookingEnvironment(CookingConfig(seed=1, fold="dev"))
    yield environment
    environment.close()


def _play(env: CookingEnvironment, actions: list[str]) -> CookingState:
    state = env.reset()
    for action in actions:
        state = env.step(action)
    return state


# --- spec ------------------------------------------------------------------------------


def test_pack_is_registered_under_its_kind() -> None:
    found = {ep.name: ep for ep in entry_points(group="trellis.environments")}
    assert found["cookingworld"].load() is PACK
    assert PACK.kind == "cookingworld"
    assert PACK.skill_name == "cookingworld_act"


def test_spec_round_trips_through_its_record() -> None:
    assert PACK.examples is not None
    specs = [*PACK.examples(), CookingConfig(seed=7, fold="train", include_doors=True)]
    for spec in specs:
        record = spec.record()
        assert record["kind"] == "cookingworld"
        assert PACK.from_record(record) == spec
    assert CookingConfig().game_params() == (
        "numLocations=2,numIngredients=2,numDistractorItems=2,includeDoors=0,limitInventorySize=0"
    )


def test_the_test_fold_is_refused_every_way() -> None:
    with pytest.raises(ForbiddenFoldError, match="held-out"):
        CookingConfig(seed=1, fold="test")
    with pytest.raises(ForbiddenFoldError, match="held-out"):
        PACK.from_record({"kind": "cookingworld", "seed": 1, "fold": "test"})
    with pytest.raises(ValidationError, match="held-out"):
        CookingConfig.model_validate({"seed": 1, "fold": "test"})
    for record in PACK.refused_records:
        with pytest.raises(UsageError):
            PACK.from_record(record)


def test_a_bad_record_names_the_field() -> None:
    with pytest.raises(InvalidEnvSpecError, match="num_ingredients"):
        PACK.from_record({"kind": "cookingworld", "num_ingredients": 6})
    with pytest.raises(InvalidEnvSpecError, match="cookingworld"):
        PACK.from_record({"kind": "twc", "seed": 1})


# --- playing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        CookingConfig(seed=0, fold="train"),
        CookingConfig(seed=7, fold="train"),
        CookingConfig(seed=1, fold="dev"),
        CookingConfig(seed=2, fold="dev"),
        CookingConfig(
            seed=3,
            fold="dev",
            num_locations=5,
            num_ingredients=3,
            include_doors=True,
            limit_inventory_size=True,
        ),
    ],
    ids=lambda spec: f"{spec.fold}-{spec.seed}-{spec.num_locations}rooms",
)
def test_the_gold_path_wins(env: CookingEnvironment, spec: CookingConfig) -> None:
    env.load(spec)
    gold = env.gold_actions()
    state = _play(env, gold)
    assert state.success and state.done and not state.failure
    assert state.score == 1.0
    assert state.moves == len(gold)
    with pytest.raises(EnvironmentFailure, match="over"):
        env.step(state.valid_actions[0])


def test_replaying_a_prefix_rebuilds_the_same_state(env: CookingEnvironment) -> None:
    spec = CookingConfig(seed=2, fold="dev")
    env.load(spec)
    gold = env.gold_actions()
    prefix = gold[: len(gold) // 2 + 1]
    played = _play(env, prefix)
    assert env.replay(prefix) == played
    fresh = CookingEnvironment(spec)  # a second engine builds it the same way
    try:
        assert fresh.replay(prefix) == played
        assert fresh.gold_actions() == gold
        assert fresh.state == played  # working out the gold path leaves the game as it was
    finally:
        fresh.close()


def test_an_invalid_action_is_refused_and_changes_nothing(env: CookingEnvironment) -> None:
    env.load(CookingConfig(seed=1, fold="dev"))
    before = env.step("take cookbook")
    with pytest.raises(EnvironmentFailure, match=r"valid actions: .*read cookbook"):
        env.step("fly to the moon")
    assert env.state == before
    assert env.actions == ["take cookbook"]
    after = env.step("read cookbook")
    assert after.moves == before.moves + 1


def test_a_wrong_cook_fails_the_task(env: CookingEnvironment) -> None:
    # Seed 1 of dev: the recipe fries the chicken leg (in the stove).
    env.load(CookingConfig(seed=1, fold="dev"))
    state = _play(env, ["open fridge", "take chicken leg", "cook chicken leg in oven"])
    assert state.failure and state.done and not state.success


def test_the_move_limit_ends_the_game_failed(env: CookingEnvironment) -> None:
    env.load(CookingConfig(seed=1, fold="dev", step_limit=3))
    state = _play(env, ["look around", "inventory", "look around"])
    assert state.done and state.failure and not state.success
    with pytest.raises(EnvironmentFailure, match="over"):
        env.step("look around")


# --- hooks on real states ----------------------------------------------------------------


def test_facts_and_notes_show_the_recipe_and_where_ingredients_are(
    env: CookingEnvironment,
) -> None:
    env.load(CookingConfig(seed=1, fold="dev"))
    state = _play(env, ["take cookbook", "read cookbook"])
    facts = env.observed_facts(state)
    assert Fact(subject="recipe", relation="needs chicken leg", object="fried") in facts
    assert Fact(subject="recipe", relation="needs water", object="as it is") in facts
    assert Fact(subject="cookbook", relation="in", object="inventory") in facts
    assert Fact(subject="kitchen", relation="exit west", object="pantry") in facts
    notes = env.prompt_notes(state)
    assert "Recipe: water: as it is; chicken leg: fry;" in "\n".join(notes)
    assert any(note.startswith("Cooking: fry = cook X in stove") for note in notes)

    state = env.step("open fridge")
    facts = env.observed_facts(state)
    assert Fact(subject="chicken leg", relation="in", object="fridge") in facts
    assert Fact(subject="fridge", relation="in", object="kitchen") in facts
    assert not any(f.subject == "recipe" for f in facts)  # only when the cookbook is read
    notes = env.prompt_notes(state)
    assert any(note.startswith("Room: You are in the kitchen.") for note in notes)
    assert "Carrying: cookbook" in notes
    assert any("Recipe: water: as it is; chicken leg: fry" in note for note in notes)
    assert any(note.startswith("Still to do: find and take the water;") for note in notes)

    state = env.step("take chicken leg")
    assert Fact(subject="chicken leg", relation="in", object="inventory") in env.observed_facts(
        state
    )
    assert any("(up from" in note for note in env.prompt_notes(state))


def test_offered_actions_leave_out_only_idle_ones(env: CookingEnvironment) -> None:
    env.load(CookingConfig(seed=1, fold="dev"))
    state = env.step("look around")
    offered = env.offered_actions(state)
    assert set(offered) <= set(state.valid_actions)
    assert "look around" not in offered and "inventory" not in offered
    assert "examine counter" in state.valid_actions and "examine counter" not in offered
    assert "examine cookbook" in offered and "read cookbook" in offered
    assert "take knife" in offered
    state = env.step("read cookbook")
    offered = env.offered_actions(state)
    assert "read cookbook" not in offered and "examine cookbook" not in offered
    state = env.step("take knife")
    assert "look around" in env.offered_actions(state)


def test_closing_is_not_offered_unless_a_record_predates_the_rule(env: CookingEnvironment) -> None:
    env.load(CookingConfig(seed=1, fold="dev"))
    state = env.step("open fridge")
    assert "close fridge" in state.valid_actions
    assert "close fridge" not in env.offered_actions(state)
    # A record from before the rule existed keeps every close on offer (it replays the same).
    old = PACK.from_record(
        {k: v for k, v in CookingConfig(seed=1).record().items() if k != "withhold_closing"}
    )
    assert isinstance(old, CookingConfig) and old.withhold_closing is False
    env.load(old)
    state = env.step("open fridge")
    assert "close fridge" in env.offered_actions(state)


# --- parsing real text -------------------------------------------------------------------


def test_parse_room_reads_holders_devices_and_exits() -> None:
    room = parse_room(KITCHEN_OPEN_FRIDGE)
    assert room is not None and room.name == "kitchen"
    holders = {holder.name: holder for holder in room.holders}
    assert holders["fridge"].relation == "in"
    assert holders["fridge"].items == ("red onion", "orange bell pepper")
    assert holders["counter"].relation == "on"
    assert holders["counter"].items == ("knife", "cookbook")
    assert room.devices == ("stove", "oven", "toaster")
    assert "kitchen cupboard" in room.things
    assert [(e.direction, e.leads_to) for e in room.exits] == [("east", "pantry")]

    doors = parse_room(KITCHEN_WITH_DOORS)
    assert doors is not None
    assert [(e.direction, e.leads_to) for e in doors.exits] == [
        ("north", "backyard"),
        ("south", "closed plain door"),
    ]
    assert {holder.name: holder.items for holder in doors.holders} == {
        "counter": (),
        "dining chair": (),
    }

    backyard = parse_room(BACKYARD)
    assert backyard is not None and backyard.devices == ("barbeque",)
    assert [h.items for h in backyard.holders if h.name == "garden"] == [("carrot",)]
    assert parse_room("You take the knife.") is None


def test_parse_recipe_and_what_is_left() -> None:
    recipe = parse_recipe(COOKBOOK)
    assert recipe is not None
    assert recipe.ingredients == ("red onion", "orange bell pepper", "salt")
    assert recipe.preparation("red onion") == ("chop", "grill")
    assert recipe.describe("orange bell pepper") == "chopped and roasted"
    assert recipe.describe("salt") == "as it is"
    assert parse_recipe("You take the cookbook.") is None

    carrying = parse_inventory(INVENTORY)
    assert carrying == [
        "cookbook",
        "knife",
        "salt",
        "raw chopped yellow potato",
        "grilled chopped red onion",
    ]
    assert base_name("a raw sliced red potato") == "red potato"
    assert steps_left(recipe, carrying) == [
        "find and take the orange bell pepper",
        "chop the orange bell pepper",
        "roast the orange bell pepper",
        "prepare meal (in the kitchen)",
        "eat meal",
    ]
    assert steps_left(recipe, ["cookbook", "meal"]) == ["eat meal"]
    assert steps_left(recipe, [])[0] == "take the knife (cutting needs it in hand)"
    assert parse_inventory("Inventory: \n  Your inventory is currently empty.\n") == []
