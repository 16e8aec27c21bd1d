"""What a twc state shows, as facts for the task's world memory.

The room description names the room, its exits (a neighbouring room, or a closed door),
its containers with their state and what lies on or in them, and loose objects. A small
model forgets all of it as soon as it leaves the room; as facts in the Task Memory Tree the
runtime keeps it for every later prompt. Facts are (subject, relation, object); the memory
keeps the latest object of each (subject, relation), and an empty object removes one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from trellis.agent.env import Fact

__all__ = ["look_facts", "move_facts"]

_ROOM = re.compile(r"You are in the ([^.]+)\.")
# "To the North you see the kitchen." / "To the East you see a closed wood door." /
# "Through an open wood door, to the West you see the bathroom."
_EXIT = re.compile(r"[Tt]o the (North|South|East|West) you see ([^.]+)\.")
_SENTENCE = re.compile(r"(?<=\.)\s+")
# "... you see a counter that has a fork, and a spoon on it."
# "... you see An open wardrobe, that contains a clean blue blazer."
# "... you see a fridge that is closed." / "an open trash can, that is empty."
_CONTAINER = re.compile(
    r"(?:you see|There is also|You also see) (?:an? |An? )(?P<open>open )?(?P<name>[^,.]+?),? "
    r"that (?:(?P<closed>is closed)|is empty|has nothing on it|has (?P<on>.+) on it"
    r"|contains (?P<inside>.+))\.$"
)
_LOOSE = re.compile(
    r"(?:you see|There is also|You also see) (?:an? |An? |some )(?P<name>[^,.]+)\.$"
)
_ARTICLE = re.compile(r"^(?:an?|the|some) ", re.IGNORECASE)


def _items(text: str) -> list[str]:
    """ "a fork, and a spoon" -> ["fork", "spoon"]."""
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+", text)
    return [_ARTICLE.sub("", part.strip()) for part in parts if part.strip()]


def look_facts(look: str, takeable: Iterable[str] = ()) -> list[Fact]:
    """Facts of one room description: exits, containers (state, contents), loose objects.

    ``takeable`` are the objects a ``take`` action names now (the room's loose objects are
    told apart from its furniture by them).
    """
    match = _ROOM.search(look)
    if match is None:
        return []
    room = match.group(1)
    loose = set(takeable)
    exits: list[Fact] = []
    containers: list[str] = []
    objects: list[Fact] = []
    for sentence in _SENTENCE.split(" ".join(look.split())):
        if exit_match := _EXIT.search(sentence):
            direction, seen = exit_match.group(1).lower(), exit_match.group(2)
            # "the kitchen" is a room; "a closed wood door" hides one.
            target = (
                seen.removeprefix("the ") if seen.startswith("the ") else _ARTICLE.sub("", seen)
            )
            exits.append(Fact(subject=room, relation=f"exit {direction}", object=target))
            continue
        if container := _CONTAINER.search(sentence):
            name = container.group("name").strip()
            containers.append(f"{name} (closed)" if container.group("closed") else name)
            held = container.group("on") or container.group("inside") or ""
            for item in _items(held):
                objects.append(Fact(subject=item, relation="seen", object=f"{name}, {room}"))
            continue
        if (plain := _LOOSE.search(sentence)) and plain.group("name") in loose:
            objects.append(Fact(subject=plain.group("name"), relation="seen", object=room))
    places = Fact(subject=room, relation="places", object=", ".join(containers))
    return [places, *exits, *objects]


def move_facts(
    action: str, observation: str, carrying: Sequence[str], score_change: float
) -> list[Fact]:
    """Facts one move teaches beyond the room: what is carried, what a put proved."""
    facts: list[Fact] = []
    if action.startswith("take "):
        thing = action.removeprefix("take ")
        facts.append(Fact(subject=thing, relation="seen", object="carried"))
        facts.append(Fact(subject=thing, relation="done", object=""))  # taken back out
    elif action.startswith("put ") and " in " in action:
        thing, _, place = action.removeprefix("put ").rpartition(" in ")
        if thing not in carrying:
            if score_change > 0:
                facts.append(Fact(subject=thing, relation="done", object=f"put away in {place}"))
            elif score_change < 0:
                facts.append(Fact(subject=thing, relation=f"not in {place}", object="wrong place"))
                facts.append(Fact(subject=thing, relation="seen", object=place))
    return facts
