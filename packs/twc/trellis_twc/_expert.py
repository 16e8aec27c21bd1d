"""A twc player that knows the game, to label training rows from states a model reaches.

Gold paths only show states on the way to success, so an adapter trained on them has never
seen where its own mistakes lead: an object on the wrong surface, the wrong room, a home
still closed. :class:`TwcExpert` reads what the gold path reveals (where each object lies,
where it belongs, how the rooms connect) and then names a good next move from any state,
so rows can be built from noisy play and still teach the right move (DART-style noise
injection; no model is needed to build them).
"""

from __future__ import annotations

import re
from collections import deque

from trellis_twc._env import TwcEnvironment, TwcState

__all__ = ["TwcExpert", "room_of"]

_ROOM = re.compile(r"You are in the ([^.]+)\.")
_OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}


def room_of(state: TwcState) -> str:
    """The room the player is in, from the room description."""
    match = _ROOM.search(state.look or state.observation)
    return match.group(1) if match else ""


class TwcExpert:
    """Knows, for one game, each object's home, where things are and how rooms connect."""

    def __init__(self) -> None:
        self.home: dict[str, str] = {}
        """Object -> the container it belongs in."""
        self.object_room: dict[str, str] = {}
        """Object -> the room it lies in (while not carried)."""
        self.container_room: dict[str, str] = {}
        """Container -> its room."""
        self.exits: dict[str, dict[str, str]] = {}
        """Room -> direction -> the room that way."""
        self.placed: set[str] = set()
        """Objects already in their home."""

    @classmethod
    def from_gold(cls, env: TwcEnvironment) -> TwcExpert:
        """Walk the current game's gold path (the game is reset afterwards)."""
        expert = cls()
        state = env.reset()
        for action in env.gold_actions():
            if state.done or action not in state.valid_actions:
                break
            after = env.step(action)
            if action.startswith("put ") and " in " in action:
                thing, _, place = action.removeprefix("put ").rpartition(" in ")
                expert.home[thing] = place
                expert.container_room[place] = room_of(state)
            elif action.startswith("take "):
                expert.object_room[action.removeprefix("take ")] = room_of(state)
            expert._learn_move(action, state, after)
            state = after
        env.reset()
        return expert

    def observe(self, action: str, before: TwcState, after: TwcState) -> None:
        """Follow a move made in the game (by anyone), keeping the knowledge current."""
        self._learn_move(action, before, after)
        if action.startswith("take "):
            self.placed.discard(action.removeprefix("take "))
        elif action.startswith("put ") and " in " in action:
            thing, _, place = action.removeprefix("put ").rpartition(" in ")
            if place == self.home.get(thing):
                self.placed.add(thing)
            self.object_room[thing] = room_of(before)

    def _learn_move(self, action: str, before: TwcState, after: TwcState) -> None:
        if not action.startswith("move "):
            return
        direction = action.removeprefix("move ")
        start, end = room_of(before), room_of(after)
        if start and end and start != end:
            self.exits.setdefault(start, {})[direction] = end
            if direction in _OPPOSITE:
                self.exits.setdefault(end, {})[_OPPOSITE[direction]] = start

    def next_action(self, state: TwcState) -> str | None:
        """A good next move, or None when the expert has nothing to add (the game is won)."""
        valid = set(state.valid_actions)
        room = room_of(state)
        for thing in sorted(state.carrying):
            place = self.home.get(thing)
            if place is None:
                continue
            if f"put {thing} in {place}" in valid:
                return f"put {thing} in {place}"
            if f"open {place}" in valid and self.container_room.get(place) == room:
                return f"open {place}"
        for action in state.valid_actions:
            thing = action.removeprefix("take ")
            if action.startswith("take ") and thing in self.home and thing not in self.placed:
                return action
        targets = {
            self.container_room[self.home[thing]]
            for thing in state.carrying
            if self.home.get(thing) in self.container_room
        }
        targets |= {
            self.object_room[thing]
            for thing in self.home
            if thing not in self.placed
            and thing not in state.carrying
            and thing in self.object_room
        }
        targets.discard(room)
        move = self._first_move_towards(room, targets, valid)
        if move is not None:
            direction = move.removeprefix("move ")
            door = f"open door to {direction}"
            # "open door to ..." stays valid once open; the room description tells.
            if door in valid and f"To the {direction.title()} you see a closed" in state.look:
                return door
        return move

    def _first_move_towards(self, room: str, targets: set[str], valid: set[str]) -> str | None:
        """The first move of a shortest known path to the nearest target room."""
        if not targets:
            return None
        queue: deque[tuple[str, str | None]] = deque([(room, None)])
        seen = {room}
        while queue:
            here, first = queue.popleft()
            if here in targets and first is not None:
                return first
            for direction, there in self.exits.get(here, {}).items():
                if there not in seen:
                    seen.add(there)
                    step = first or f"move {direction}"
                    queue.append((there, step))
        unexplored = [a for a in sorted(valid) if a.startswith("move ")]
        return next(
            (a for a in unexplored if a.removeprefix("move ") not in self.exits.get(room, {})),
            None,
        )
