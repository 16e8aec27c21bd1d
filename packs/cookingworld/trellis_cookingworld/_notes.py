"""What the act prompt and the task's memory get from a cookingworld state."""

from __future__ import annotations

from trellis.agent.env import Fact, GoalPart
from trellis_cookingworld._state import CookingState
from trellis_cookingworld._text import (
    COOKING_DEVICES,
    PARTICIPLES,
    Recipe,
    base_name,
    parse_recipe,
    parse_room,
    steps_left,
)

__all__ = ["goal_parts", "offered_actions", "prompt_notes", "recipe_notes", "state_facts"]

# Actions that change nothing in the game.
_LOOKING = frozenset({"look around", "inventory"})
_COOKBOOK = frozenset({"read cookbook", "examine cookbook"})


def offered_actions(state: CookingState, *, withhold_closing: bool = False) -> list[str]:
    """The valid actions less those that cannot show anything the prompt does not already:

    - ``examine X`` for anything but the cookbook: it repeats X's phrase from the room
      description or the inventory, both of which the prompt shows;
    - reading or examining the cookbook once it has been read: the prompt shows the recipe;
    - ``look around`` and ``inventory`` right after an action that changed nothing;
    - with ``withhold_closing``, ``close X``: no cooking task needs anything closed.

    Moves that can fail the task (a wrong cut or cook of an ingredient, eating one) stay
    offered: the recipe note says which are right. Never empty while the game accepts an action.
    """
    withheld = {
        action
        for action in state.valid_actions
        if action.startswith("examine ") and action != "examine cookbook"
    }
    if withhold_closing:
        withheld |= {action for action in state.valid_actions if action.startswith("close ")}
    if state.recipe:
        withheld |= _COOKBOOK
    last = state.last_action
    if last in _LOOKING or last in _COOKBOOK or last.startswith("examine "):
        withheld |= _LOOKING
    offered = [action for action in state.valid_actions if action not in withheld]
    return offered or list(state.valid_actions)


def prompt_notes(state: CookingState) -> list[str]:
    """The room (when the observation is not already its description), what is carried,
    the score's trend, and the recipe with what it still asks for once it has been read.

    The last observation alone is often just "You chop the red onion.", and a small model
    forgets a recipe it read ten moves ago.
    """
    notes = []
    look = " ".join(state.look.split())
    if look and look != " ".join(state.observation.split()):
        notes.append(f"Room: {look}")
    notes.append("Carrying: " + (", ".join(state.carrying) if state.carrying else "nothing"))
    score = f"Score: {state.score:.0%}"
    if state.previous_score is not None and state.score < state.previous_score:
        score += f" (down from {state.previous_score:.0%})"
    elif state.previous_score is not None and state.score > state.previous_score:
        score += f" (up from {state.previous_score:.0%})"
    notes.append(score)
    recipe = parse_recipe(state.recipe)
    if recipe is not None:
        notes += recipe_notes(recipe, None if state.done else state.carrying)
    return notes


def recipe_notes(recipe: Recipe, carrying: list[str] | None) -> list[str]:
    """The recipe, how its cooking verbs map to actions, and what is left to do judged from
    what is ``carrying`` (None: the game is over, nothing is left)."""
    needs = "; ".join(
        f"{ingredient}: {', '.join(recipe.preparation(ingredient)) or 'as it is'}"
        for ingredient in recipe.ingredients
    )
    lines = [f"Recipe: {needs}; then prepare meal (in the kitchen) and eat meal."]
    verbs = dict.fromkeys(verb for verb, _ in recipe.directions if verb in COOKING_DEVICES)
    cooking = ", ".join(
        f"{verb} = cook X in {COOKING_DEVICES[verb][0]}"
        + "".join(f" (or in {device})" for device in COOKING_DEVICES[verb][1:])
        for verb in verbs
    )
    lines.append(
        (f"Cooking: {cooking}. " if cooking else "")
        + "Cutting or cooking a recipe ingredient in a way the recipe does not ask for, "
        "or eating one, fails the task."
    )
    if carrying is not None:
        lines.append("Still to do: " + "; ".join(steps_left(recipe, carrying)))
    return lines


def state_facts(state: CookingState) -> list[Fact]:
    """Where ingredients and tools were seen, the room's exits, and (when the cookbook was
    just read) what the recipe needs. Each placement also clears the other relation, so
    the memory never holds an item both "on" the counter and "in" the inventory."""
    facts: list[Fact] = []
    room = parse_room(state.look)
    if room is not None:
        for holder in room.holders:
            if holder.items:
                facts.append(_fact(holder.name, "in", room.name))
            for item in holder.items:
                facts += _placed(item, holder.relation, holder.name)
        facts += [_fact(device, "in", room.name) for device in room.devices]
        facts += [_fact(room.name, f"exit {e.direction}", e.leads_to) for e in room.exits]
    for item in state.carrying:
        facts += _placed(base_name(item), "in", "inventory")
    facts += [fact for item in _used_up(state) for fact in _placed(item, "in", "")]
    recipe = parse_recipe(state.observation)
    if recipe is not None:
        facts += [
            _fact("recipe", f"needs {ingredient}", recipe.describe(ingredient))
            for ingredient in recipe.ingredients
        ]
    return facts


def _used_up(state: CookingState) -> list[str]:
    """What the last action made disappear: the food eaten, or the recipe's ingredients
    that went into the meal."""
    if state.last_action.startswith("eat "):
        return [state.last_action.removeprefix("eat ")]
    recipe = parse_recipe(state.recipe)
    if state.last_action == "prepare meal" and recipe is not None:
        return list(recipe.ingredients)
    return []


def _placed(item: str, relation: str, place: str) -> list[Fact]:
    other = "on" if relation == "in" else "in"
    return [_fact(item, relation, place), _fact(item, other, "")]


def _fact(subject: str, relation: str, value: str) -> Fact:
    return Fact(subject=subject[:200], relation=relation[:100], object=value[:500])


def goal_parts(state: CookingState) -> list[GoalPart]:
    """The goal in the order it is done: read the cookbook; each ingredient taken and
    prepared as the recipe says (done once carried so); prepare the meal; eat it."""
    recipe = parse_recipe(state.recipe)
    parts = [GoalPart(key="cookbook", title="read the cookbook", done=recipe is not None)]
    if recipe is None:
        return parts
    carried = {base_name(item): item for item in state.carrying}
    meal = "meal" in carried or state.success
    for ingredient in recipe.ingredients:
        shown = set(carried[ingredient].split()) if ingredient in carried else set()
        ready = ingredient in carried and all(
            PARTICIPLES[verb] in shown for verb in recipe.preparation(ingredient)
        )
        how = recipe.describe(ingredient)
        title = f"take the {ingredient}" + ("" if how == "as it is" else f", {how}")
        parts.append(GoalPart(key=ingredient, title=title, done=ready or meal))
    parts.append(GoalPart(key="meal", title="prepare meal in the kitchen", done=meal))
    parts.append(GoalPart(key="eat", title="eat meal", done=state.success))
    return parts
