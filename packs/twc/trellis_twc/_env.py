"""One twc game: :class:`TwcEnvironment` and the :class:`TwcState` it shows.

A game is fully determined by its :class:`~trellis_twc.TwcConfig` (seed, fold, game
parameters): the same config and the same action history rebuild the same state, which is
how a resumed or replayed task gets its environment back. The environment judges success
itself (``tasksuccess``).

The pack's offer rules live here: moves known to lower the score, moves that cannot make
progress, and places unlikely to be a carried object's home are left out of the actions the
act step is offered (each rule is a :class:`~trellis_twc.TwcConfig` field, and each is off
for records made before it existed).
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Mapping, Sequence, Set
from typing import Any

from trellis.agent.env import Environment, EnvState, Fact, GoalPart
from trellis.agent.errors import EnvironmentFailure
from trellis_twc._facts import look_facts, move_facts
from trellis_twc._places import (
    PlaceScorer,
    home_is_next_door,
    neighbour_rooms,
    place_scorer,
    shipped_home_rooms,
)
from trellis_twc._spec import TwcConfig

__all__ = ["TWC_ACT", "TwcEnvironment", "TwcState", "candidate_places"]

TWC_ACT = "twc_act"
"""Name of the skill that sends one action to the game (recorded traces name it)."""

# The Java bridge of textworld-express is not safe to drive from several threads at once.
_BRIDGE_LOCK = threading.Lock()

# Engines of finished games, kept for the next one (by move limit, which is fixed when an
# engine starts): starting the Java side and loading the generator costs more than a short
# game's first move. Guarded by _BRIDGE_LOCK; closed when the process exits.
_IDLE: dict[int, list[Any]] = {}
_IDLE_PER_LIMIT = 2


def _take_idle(step_limit: int) -> Any:
    with _BRIDGE_LOCK:
        engines = _IDLE.get(step_limit)
        return engines.pop() if engines else None


def _park(engine: Any, step_limit: int) -> bool:
    """Keep a finished game's engine for the next game; False when enough are kept."""
    with _BRIDGE_LOCK:
        engines = _IDLE.setdefault(step_limit, [])
        if len(engines) >= _IDLE_PER_LIMIT:
            return False
        engines.append(engine)
        return True


@atexit.register
def _close_idle() -> None:
    with _BRIDGE_LOCK:
        engines = [engine for group in _IDLE.values() for engine in group]
        _IDLE.clear()
    for engine in engines:
        with contextlib.suppress(Exception):
            engine.close()


class TwcState(EnvState):
    """What the game shows after the last action."""

    look: str = ""
    """The room as ``look around`` describes it (kept so the act prompt always shows it)."""
    carrying: list[str] = []
    """Objects in the inventory."""
    previous_score: float | None = None
    """The score before the last action (None at the start)."""
    regressed_actions: list[str] = []
    """Valid actions known to lower the score, which are not offered: a put that lowered it
    before (each object belongs in one place, so the same put is wrong in every state),
    taking an object back from where putting it raised the score, and any other move that
    lowered it from this same situation before. A small model otherwise repeats a wrong
    put, or takes a correctly placed object back, until its budget is gone."""

    unlikely_actions: list[str] = []
    """Valid puts and opens of containers that are not among the likeliest homes of any
    carried object (``TwcConfig.place_shortlist``), and, with ``TwcConfig.place_rooms``, every
    put of an object whose home is likelier next door. They are offered again once the
    likelier places are known to be wrong or nothing is carried."""

    idle_actions: list[str] = []
    """Moves that cannot make progress now (``TwcConfig.avoid_idle``):

    - the way straight back to the room just left while nothing has been taken or put in
      this one (looking does not count, nor, with ``TwcConfig.idle_containers``, opening
      and closing). A small model otherwise walks
      back and forth between two rooms, or opens the right container and walks away, until
      its budget is gone. It stays offered when the room offers nothing else;
    - looking around or at the inventory right after looking (nothing has changed, and the
      prompt shows both);
    - with ``TwcConfig.idle_containers``, closing a container: no twc task needs a closed
      one, and a closed home must be opened again."""

    @property
    def offered_actions(self) -> list[str]:
        """The actions the act prompt offers: the valid ones less ``regressed_actions``,
        ``unlikely_actions`` and ``idle_actions``."""
        left_out = set(self.regressed_actions) | set(self.unlikely_actions) | set(self.idle_actions)
        offered = [a for a in self.valid_actions if a not in left_out]
        return offered or list(self.valid_actions)

    def situation(self) -> tuple[str, tuple[str, ...], float]:
        """What identifies a state for :attr:`regressed_actions`: room view, inventory, score."""
        return (" ".join(self.look.split()), tuple(sorted(self.carrying)), round(self.score, 6))

    def prompt_notes(self) -> list[str]:
        """State lines for the act prompt: the room, the inventory and the score's trend.

        The last observation alone is often just "You put the key in the key holder.", which
        leaves a small model without the room or any sign of whether the move was right.
        """
        notes = []
        look = " ".join(self.look.split())
        if look and look != " ".join(self.observation.split()):
            notes.append(f"Room: {look}")
        notes.append("Carrying: " + (", ".join(self.carrying) if self.carrying else "nothing"))
        score = f"Score: {self.score:.0%}"
        if self.previous_score is not None and self.score < self.previous_score:
            score += f" (down from {self.previous_score:.0%}: the last action was wrong)"
        elif self.previous_score is not None and self.score > self.previous_score:
            score += f" (up from {self.previous_score:.0%})"
        notes.append(score)
        return notes


class TwcEnvironment(Environment):
    """One twc game. Create it with a config, then ``reset`` (or ``replay`` a history)."""

    spec: TwcConfig

    def __init__(
        self,
        config: TwcConfig | None = None,
        *,
        places: PlaceScorer | None = None,
        home_rooms: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        """``places`` ranks containers for ``TwcConfig.place_shortlist`` (default: the shared
        scorer on the real sentence embedder); ``home_rooms`` maps home containers to the
        rooms they stand in, for ``TwcConfig.place_rooms`` (default: the shipped ones)."""
        self.config = config or TwcConfig()
        self.spec = self.config
        self._places = places
        self._home_rooms = home_rooms
        self.actions: list[str] = []
        # What the score has taught this game (see TwcState.regressed_actions): moves that
        # lowered it from a situation, puts that lowered it anywhere, and the objects a put
        # placed where they belong (taking one of those back always lowers the score).
        self._regressions: dict[tuple[str, tuple[str, ...], float], set[str]] = {}
        self._wrong_puts: set[str] = set()
        self._placed: set[str] = set()
        # The move back to the room just left, while only looking has been done since.
        self._way_back: str | None = None
        # The objects to put away, in the order they were first seen, and those put away
        # (a put that raised the score), for the goal's parts.
        self._objects: list[str] = []
        self._put_away: set[str] = set()
        self._env: Any = None
        self._reused = False  # the engine came from an earlier game
        self._state: TwcState | None = None

    def _backend(self) -> Any:
        if self._env is None:
            self._env = _take_idle(self.config.step_limit)
            self._reused = self._env is not None
        if self._env is None:
            try:
                from textworld_express import TextWorldExpressEnv
            except ImportError as exc:
                raise EnvironmentFailure(
                    "textworld-express is not installed: pip install 'trellis-agent[embedded]' "
                    "(it also needs Java 17 or newer)"
                ) from exc
            try:
                with _BRIDGE_LOCK:
                    self._env = TextWorldExpressEnv(envStepLimit=self.config.step_limit)
            except Exception as exc:
                raise EnvironmentFailure(
                    f"could not start TextWorldExpress ({exc}); it needs Java 17 or newer on PATH"
                ) from exc
        return self._env

    def load(self, config: TwcConfig) -> TwcState:
        """Switch to another game and start it, keeping the running engine when it can serve
        it (the same move limit): starting the engine costs more than playing a short game."""
        if self._env is not None and config.step_limit != self.config.step_limit:
            self.close()
        self.config = self.spec = config
        return self.reset()

    def reset(self) -> TwcState:
        """Start the game from the beginning."""
        env = self._backend()
        params = self.config.game_params()
        # An engine that has the twc generator loaded with these parameters already only
        # needs the new seed (loading the generator again costs a fifth of a second).
        loaded = (
            getattr(env, "gameName", None) == "twc" and getattr(env, "gameParams", None) == params
        )
        try:
            with _BRIDGE_LOCK:
                _obs, infos = env.reset(
                    seed=self.config.seed,
                    gameFold=self.config.fold,
                    gameName=None if loaded else "twc",
                    gameParams=None if loaded else params,
                    generateGoldPath=True,
                )
        except Exception as exc:  # the engine's own error (a Java exception) says little
            if self._reused:
                # A kept engine may have died while it waited: start a fresh one instead.
                self._reused = False
                with _BRIDGE_LOCK, contextlib.suppress(Exception):
                    env.close()
                self._env = None
                return self.reset()
            c = self.config
            raise EnvironmentFailure(
                f"TextWorldExpress could not make twc game seed {c.seed} ({c.fold} fold, "
                f"{c.num_locations} room(s), {c.num_items} object(s)): "
                f"{type(exc).__name__}; try another seed, or fewer objects for the rooms"
            ) from exc
        self.actions = []
        self._regressions = {}
        self._wrong_puts = set()
        self._placed = set()
        self._way_back = None
        self._objects = []
        self._put_away = set()
        self._state = self._to_state(infos, previous=None, move_limit=self.config.step_limit)
        self._notice_objects(self._state, None, None)
        return self._state

    @property
    def state(self) -> TwcState:
        """The current state (resets the game on first use)."""
        if self._state is None:
            return self.reset()
        return self._state

    def step(self, action: str) -> TwcState:
        """Send one action; refuses an action that the game does not accept now."""
        current = self.state
        if current.done:
            raise EnvironmentFailure(
                f"the game is over (success={current.success}); start a new task to play again"
            )
        if action not in current.valid_actions:
            self.refuse(action, current)
        with _BRIDGE_LOCK:
            _obs, _reward, _done, infos = self._backend().step(action)
        self.actions.append(action)
        state = self._to_state(infos, previous=current, move_limit=self.config.step_limit)
        self._notice_objects(state, action, current)
        update: dict[str, list[str]] = {}
        if self.config.avoid_regressions:
            self._learn(action, current, state)
            avoid = self._regressions.get(state.situation(), set()) | self._wrong_puts
            avoid |= {f"take {thing}" for thing in self._placed}
            update["regressed_actions"] = [a for a in state.valid_actions if a in avoid]
        if self.config.place_shortlist and state.carrying:
            update["unlikely_actions"] = self._unlikely(state)
        if self.config.avoid_idle:
            withheld = {a for actions in update.values() for a in actions}
            update["idle_actions"] = self._idle(action, state, withheld)
        if any(update.values()):
            state = state.model_copy(update=update)
        self._state = state
        return self._state

    def _unlikely(self, state: TwcState) -> list[str]:
        """Puts and opens of containers outside every carried object's likeliest homes."""
        doors = self.config.doors_are_ways
        opens = {
            a.removeprefix("open "): a
            for a in state.valid_actions
            if a.startswith("open ") and not (doors and a.startswith(_DOOR))
        }
        likely: set[str] = set()
        unlikely: list[str] = []
        for thing in state.carrying:
            prefix = f"put {thing} in "
            puts = {
                a.removeprefix(prefix): a
                for a in state.valid_actions
                if a.startswith(prefix) and a not in self._wrong_puts
            }
            places = candidate_places(
                state.valid_actions, thing, self._wrong_puts, doors_are_places=not doors
            )
            scorer = self._places or place_scorer(
                homes=self.config.place_homes, match_condition=self.config.place_conditions
            )
            if self.config.place_rooms and self._belongs_next_door(thing, places, state, scorer):
                shortlist: set[str] = set()
            else:
                shortlist = set(scorer.rank(thing, places)[: self.config.place_shortlist])
            likely |= shortlist
            unlikely.extend(action for place, action in puts.items() if place not in shortlist)
        unlikely.extend(action for place, action in opens.items() if place not in likely)
        return unlikely

    def _belongs_next_door(
        self, thing: str, places: Sequence[str], state: TwcState, scorer: PlaceScorer
    ) -> bool:
        """See ``TwcConfig.place_rooms``: a put already known wrong rules its place out."""
        rooms = self._home_rooms if self._home_rooms is not None else shipped_home_rooms()
        wrong = {a.removeprefix(f"put {thing} in ") for a in self._wrong_puts}
        return home_is_next_door(
            scorer, thing, places, neighbour_rooms(state.look), rooms, ruled_out=wrong
        )

    def _idle(self, action: str, state: TwcState, withheld: set[str]) -> list[str]:
        """The moves that cannot make progress now (see ``TwcState.idle_actions``)."""
        if action.startswith("move "):
            direction = action.removeprefix("move ")
            self._way_back = f"move {_OPPOSITE[direction]}" if direction in _OPPOSITE else None
        elif action not in _LOOKING and not (
            self.config.idle_containers and action.startswith(_PREPARING)
        ):
            self._way_back = None  # something was done here
        idle = [a for a in state.valid_actions if a in _LOOKING] if action in _LOOKING else []
        if self.config.idle_containers:
            idle += [a for a in state.valid_actions if a.startswith("close ")]
        way_back = self._way_back
        if way_back is not None and way_back in state.valid_actions:
            left = [
                a
                for a in state.valid_actions
                if a not in withheld and a not in idle and a != way_back
            ]
            if not all(a in _LOOKING for a in left):  # else nothing to do here but go back
                idle.append(way_back)
        return idle

    def _learn(self, action: str, before: TwcState, after: TwcState) -> None:
        """Update what the score has taught: see ``TwcState.regressed_actions``."""
        if after.score < before.score:
            self._regressions.setdefault(before.situation(), set()).add(action)
        put = _put_object(action, before.carrying)
        if put is not None and put not in after.carrying:
            if after.score < before.score:
                self._wrong_puts.add(action)
            elif after.score > before.score:
                self._placed.add(put)
        elif action.startswith("take "):
            self._placed.discard(action.removeprefix("take "))

    def _notice_objects(self, state: TwcState, action: str | None, before: TwcState | None) -> None:
        seen = [a.removeprefix("take ") for a in state.valid_actions if a.startswith("take ")]
        for thing in [*state.carrying, *seen]:
            if thing not in self._objects:
                self._objects.append(thing)
        if action is None or before is None:
            return
        put = _put_object(action, before.carrying)
        if put is not None and put not in state.carrying and state.score > before.score:
            self._put_away.add(put)
        if action.startswith("take "):
            self._put_away.discard(action.removeprefix("take "))

    # --- the contract's hooks -------------------------------------------------------------

    def goal_parts(self, state: EnvState) -> list[GoalPart]:
        """One part per object seen so far (carried ones first), then finding the others
        (done once ``num_items`` are known) (``TwcConfig.goal_parts``)."""
        if not self.config.goal_parts or not isinstance(state, TwcState):
            return []
        carried = [t for t in self._objects if t in state.carrying]
        ordered = carried + [t for t in self._objects if t not in carried]
        parts = [
            GoalPart(key=t, title=f"put the {t} where it belongs", done=t in self._put_away)
            for t in ordered
        ]
        found = len(self._objects) >= self.config.num_items
        parts.append(GoalPart(key="search", title="find the other objects to put away", done=found))
        return parts

    def offered_actions(self, state: EnvState) -> list[str]:
        """The valid actions less those the offer rules leave out (see ``TwcState``)."""
        if isinstance(state, TwcState):
            return state.offered_actions
        return list(state.valid_actions)

    def prompt_notes(self, state: EnvState) -> list[str]:
        """The room, the inventory and the score's trend (see ``TwcState.prompt_notes``)."""
        return state.prompt_notes() if isinstance(state, TwcState) else []

    def observed_facts(self, state: EnvState) -> list[Fact]:
        """The room as its description shows it, and what the last move proved (a put that
        raised the score found the object's home; one that lowered it ruled a place out)."""
        if not isinstance(state, TwcState):
            return []
        takeable = [a.removeprefix("take ") for a in state.valid_actions if a.startswith("take ")]
        facts = look_facts(state.look, takeable)
        if self.actions and state.previous_score is not None:
            change = state.score - state.previous_score
            facts += move_facts(self.actions[-1], state.observation, state.carrying, change)
        return facts

    def gold_actions(self) -> list[str]:
        """A winning action sequence from the start (for tests, baselines and training data)."""
        self.state  # noqa: B018 - makes sure the game exists
        with _BRIDGE_LOCK:
            return list(self._backend().getGoldActionSequence())

    def close(self) -> None:
        """End the game: its engine is kept for the next game of this process (a few at
        most), or its Java side is stopped."""
        if self._env is not None:
            engine, self._env = self._env, None
            if self._state is not None and _park(engine, self.config.step_limit):
                return
            # Closing a bridge whose Java side already died is not an error.
            with _BRIDGE_LOCK, contextlib.suppress(Exception):
                engine.close()

    @staticmethod
    def _to_state(infos: dict[str, Any], previous: TwcState | None, move_limit: int) -> TwcState:
        success = bool(infos.get("tasksuccess", False))
        failure = bool(infos.get("taskfailure", False))
        return TwcState(
            look=str(infos.get("look", "")).strip(),
            carrying=_inventory_items(str(infos.get("inventory", ""))),
            previous_score=None if previous is None else previous.score,
            observation=str(infos.get("observation", "")).strip(),
            valid_actions=[str(a) for a in infos.get("validActions", [])],
            task_description=str(infos.get("taskDescription", "")),
            score=float(infos.get("score", 0.0)),
            success=success,
            failure=failure,
            done=bool(infos.get("done", False)) or success or failure,
            moves=int(infos.get("numMoves", 0)),
            move_limit=move_limit,
        )


_OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
_LOOKING = frozenset({"look around", "inventory"})  # actions that change nothing in the game
# Opening or closing a container changes no score: it is not yet doing something in a room.
_PREPARING = ("open ", "close ")
_DOOR = "open door to "


def candidate_places(
    valid_actions: Sequence[str],
    thing: str,
    wrong_puts: Set[str] = frozenset(),
    *,
    doors_are_places: bool = False,
) -> list[str]:
    """The places ranked for a carried ``thing``: those a valid action puts it in, then the
    closed ones a valid action opens (a door leads to a room: it is not a place, unless
    ``doors_are_places``, as records made before ``TwcConfig.doors_are_ways`` had it). A put
    in ``wrong_puts`` rules its place out, so the next likeliest place moves up."""
    prefix = f"put {thing} in "
    places = [
        a.removeprefix(prefix)
        for a in valid_actions
        if a.startswith(prefix) and a not in wrong_puts
    ]
    places += [
        place
        for a in valid_actions
        if a.startswith("open ")
        and (doors_are_places or not a.startswith(_DOOR))
        and (place := a.removeprefix("open ")) not in places
        and f"{prefix}{place}" not in wrong_puts
    ]
    return places


def _put_object(action: str, carrying: Sequence[str]) -> str | None:
    """The carried object a ``put <object> in <place>`` action puts down (None: not a put)."""
    matches = [thing for thing in carrying if action.startswith(f"put {thing} in ")]
    return max(matches, key=len) if matches else None


def _inventory_items(text: str) -> list[str]:
    # "Inventory: \n  a cleanser\n  an used plastic cup\n" (or "...currently empty.")
    items = []
    for line in text.splitlines()[1:]:
        item = line.strip()
        if not item or "currently empty" in item:
            continue
        for article in ("a ", "an ", "the ", "some "):
            if item.startswith(article):
                item = item[len(article) :]
                break
        items.append(item)
    return items
