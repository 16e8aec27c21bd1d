"""Reading cookingworld's text: the room (``look around``), the inventory and the cookbook.

Only the fixed sentence shapes the game prints are parsed; anything else is left out
rather than guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "COOKING_DEVICES",
    "Exit",
    "Holder",
    "Recipe",
    "Room",
    "base_name",
    "parse_inventory",
    "parse_recipe",
    "parse_room",
    "steps_left",
]

# What a cut or cook leaves in a food's description ("a raw chopped yellow potato").
PARTICIPLES = {
    "chop": "chopped",
    "slice": "sliced",
    "dice": "diced",
    "fry": "fried",
    "roast": "roasted",
    "grill": "grilled",
}
_STATE_WORDS = frozenset({"raw", *PARTICIPLES.values()})
COOKING_DEVICES: dict[str, tuple[str, ...]] = {
    "fry": ("stove",),
    "roast": ("oven",),
    "grill": ("toaster", "barbeque"),
}
"""Where each cooking verb of the recipe happens (the action is ``cook X in DEVICE``)."""
_DEVICE_NAMES = frozenset(name for names in COOKING_DEVICES.values() for name in names)

_RECIPE_HEADER = "Gather all following ingredients"
_LEAD_IN = re.compile(
    r"^(?:In one part of the room you see|In another part of the room you see|There is also"
    r"|You also see)\s+"
)
_ARTICLE = re.compile(r"^(?:a|an|some|the)\s+", re.IGNORECASE)
_ROOM_NAME = re.compile(r"^You are in the (?P<room>[^.]+)\.")
_SURFACE = re.compile(r"^(?P<holder>.+?),? that has (?P<items>.+) on it$")
_OPEN_CONTAINER = re.compile(r"^an open (?P<holder>.+?), that contains (?P<items>.+)$", re.I)
_EMPTY_CONTAINER = re.compile(r"^an open (?P<holder>.+?), that is empty$", re.I)
_CLOSED_CONTAINER = re.compile(r"^(?P<holder>.+?) that is closed$")
_EXIT = re.compile(
    r"(?:Through an open [^,]+, to|To) the (?P<direction>North|South|East|West) you see "
    r"(?:the (?P<room>[^.]+)|a closed (?P<door>[^.]+))\."
)
_DIRECTION = re.compile(r"^(?P<verb>chop|slice|dice|fry|roast|grill) the (?P<ingredient>.+)$")


@dataclass(frozen=True)
class Holder:
    """A container or surface and the things seen in or on it (base names)."""

    name: str
    relation: Literal["in", "on"]
    items: tuple[str, ...]


@dataclass(frozen=True)
class Exit:
    """A way out of a room: the room it leads to, or the closed door in the way."""

    direction: str
    leads_to: str


@dataclass(frozen=True)
class Room:
    """What ``look around`` shows."""

    name: str
    things: tuple[str, ...]
    """Everything standing in the room (furniture, appliances, containers)."""
    holders: tuple[Holder, ...]
    """The open containers and surfaces, with what they hold."""
    exits: tuple[Exit, ...]

    @property
    def devices(self) -> tuple[str, ...]:
        """The cooking devices here."""
        return tuple(thing for thing in self.things if thing in _DEVICE_NAMES)


@dataclass(frozen=True)
class Recipe:
    """The cookbook: the ingredients and, for each, the cuts and cooks it needs."""

    ingredients: tuple[str, ...]
    directions: tuple[tuple[str, str], ...]
    """``(verb, ingredient)`` in the cookbook's order, e.g. ``("chop", "red onion")``."""

    def preparation(self, ingredient: str) -> tuple[str, ...]:
        """The verbs the recipe applies to ``ingredient`` (empty: use it as it is)."""
        return tuple(verb for verb, name in self.directions if name == ingredient)

    def describe(self, ingredient: str) -> str:
        """``"chopped and grilled"``, or ``"as it is"``."""
        done = [PARTICIPLES[verb] for verb in self.preparation(ingredient)]
        return " and ".join(done) if done else "as it is"


def _strip_article(text: str) -> str:
    return _ARTICLE.sub("", text.strip(), count=1)


def base_name(description: str) -> str:
    """The name actions use for a food or thing: ``"a raw sliced red potato"`` is
    ``"red potato"``."""
    words = _strip_article(description).split()
    while len(words) > 1 and words[0] in _STATE_WORDS:
        words.pop(0)
    return " ".join(words)


def _item_list(text: str) -> tuple[str, ...]:
    # "a knife, and a cookbook" / "some water, a raw chicken leg"
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+(?=(?:a|an|some)\s)", text)
    return tuple(base_name(part) for part in parts if part.strip())


def parse_room(look: str) -> Room | None:
    """The room a ``look around`` text describes (None: not a room description)."""
    head, _, exits_text = look.strip().partition("\n")
    match = _ROOM_NAME.match(head)
    if match is None:
        return None
    things: list[str] = []
    holders: list[Holder] = []
    for sentence in re.split(r"(?<=\.)\s+(?=[A-Z])", head[match.end() :].strip()):
        phrase = _LEAD_IN.sub("", sentence.strip()).rstrip(". ")
        if not phrase:
            continue
        if found := _OPEN_CONTAINER.match(phrase):
            holder = base_name(found["holder"])
            holders.append(Holder(holder, "in", _item_list(found["items"])))
        elif found := _EMPTY_CONTAINER.match(phrase):
            holder = base_name(found["holder"])
            holders.append(Holder(holder, "in", ()))
        elif found := _SURFACE.match(phrase):
            holder = base_name(found["holder"])
            items = () if found["items"] == "nothing" else _item_list(found["items"])
            holders.append(Holder(holder, "on", items))
        elif found := _CLOSED_CONTAINER.match(phrase):
            holder = base_name(found["holder"])
        else:
            holder = base_name(phrase)
        things.append(holder)
    exits = tuple(
        Exit(found["direction"].lower(), found["room"] or f"closed {found['door']}")
        for found in _EXIT.finditer(exits_text)
    )
    return Room(match["room"], tuple(things), tuple(holders), exits)


def parse_inventory(text: str) -> list[str]:
    """What the inventory text lists, as described, less articles (``"raw chopped carrot"``)."""
    items = []
    for line in text.splitlines()[1:]:
        item = line.strip()
        if item and "inventory is currently empty" not in item:
            items.append(_strip_article(item))
    return items


def parse_recipe(text: str) -> Recipe | None:
    """The cookbook's recipe (None: ``text`` is not the cookbook)."""
    if not text.lstrip().startswith(_RECIPE_HEADER):
        return None
    ingredients: list[str] = []
    directions: list[tuple[str, str]] = []
    section = ""
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line in ("Ingredients:", "Directions:"):
            section = line
        elif line and section == "Ingredients:":
            ingredients.append(line)
        elif line and section == "Directions:" and (found := _DIRECTION.match(line)):
            directions.append((found["verb"], found["ingredient"]))
    return Recipe(tuple(ingredients), tuple(directions))


def steps_left(recipe: Recipe, carrying: list[str]) -> list[str]:
    """What the recipe still asks for, judged from what is carried and how it looks."""
    carried = {base_name(item): item for item in carrying}
    if "meal" in carried:
        return ["eat meal"]
    left = []
    cuts = {"chop", "slice", "dice"}
    if "knife" not in carried and any(verb in cuts for verb, _ in recipe.directions):
        left.append("take the knife (cutting needs it in hand)")
    for ingredient in recipe.ingredients:
        description = carried.get(ingredient)
        if description is None:
            left.append(f"find and take the {ingredient}")
        shown = set(description.split()) if description else set()
        left += [
            f"{verb} the {ingredient}"
            for verb in recipe.preparation(ingredient)
            if PARTICIPLES[verb] not in shown
        ]
    return [*left, "prepare meal (in the kitchen)", "eat meal"]
