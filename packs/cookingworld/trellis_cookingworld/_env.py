"""One cookingworld game on TextWorldExpress's Java engine."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from trellis.agent.env import Environment, EnvSpec, EnvState, Fact, GoalPart
from trellis.agent.errors import EnvironmentFailure, InvalidEnvSpecError
from trellis_cookingworld._notes import goal_parts, offered_actions, prompt_notes, state_facts
from trellis_cookingworld._spec import CookingConfig
from trellis_cookingworld._state import CookingState
from trellis_cookingworld._text import parse_inventory, parse_recipe, parse_room

__all__ = ["GAME_NAME", "CookingEnvironment"]

GAME_NAME = "cookingworld"
"""The game's name in textworld-express."""

# The Java bridge of textworld-express is not safe to drive from several threads at once.
_BRIDGE_LOCK = threading.Lock()


class CookingEnvironment(Environment):
    """One cookingworld game: create it with a spec, then ``reset`` (or ``replay`` a history).

    The same spec and the same actions rebuild the same state. Actions the game does not
    offer now are refused before they reach it, so they cost no move and change nothing.
    """

    def __init__(self, spec: EnvSpec | None = None) -> None:
        self.spec: CookingConfig = _cooking_spec(spec)
        self.actions: list[str] = []
        """The actions taken since the last reset."""
        self._engine: Any = None
        self._state: CookingState | None = None
        self._gold: list[str] | None = None

    def _backend(self) -> Any:
        if self._engine is None:
            try:
                from textworld_express import TextWorldExpressEnv
            except ImportError as exc:
                raise EnvironmentFailure(
                    "textworld-express is not installed: pip install trellis-cookingworld "
                    "(it also needs Java 17 or newer)"
                ) from exc
            try:
                with _BRIDGE_LOCK:
                    self._engine = TextWorldExpressEnv(envStepLimit=self.spec.step_limit)
            except Exception as exc:
                raise EnvironmentFailure(
                    f"could not start TextWorldExpress ({exc}); it needs Java 17 or newer on PATH"
                ) from exc
        return self._engine

    def load(self, spec: EnvSpec) -> CookingState:
        """Switch to another game and start it on the running engine: starting the engine
        costs more than playing a short game."""
        self.spec = _cooking_spec(spec)
        self._gold = None
        return self.reset()

    def reset(self) -> CookingState:
        """Start the game from the beginning."""
        infos = self._start_engine_game()
        self.actions = []
        self._state = self._to_state(infos, previous=None, action="")
        return self._state

    def _start_engine_game(self) -> dict[str, Any]:
        engine = self._backend()
        try:
            with _BRIDGE_LOCK:
                # The move limit is applied in ``_to_state``; the engine's own one only has
                # to stay out of the way.
                engine.envStepLimit = self.spec.step_limit
                _obs, infos = engine.reset(
                    seed=self.spec.seed,
                    gameFold=self.spec.fold,
                    gameName=GAME_NAME,
                    gameParams=self.spec.game_params(),
                    generateGoldPath=True,
                )
        except Exception as exc:
            raise EnvironmentFailure(f"cookingworld could not start {self.spec!r}: {exc}") from exc
        return dict(infos)

    @property
    def state(self) -> CookingState:
        """The current state (starts the game on first use)."""
        if self._state is None:
            return self.reset()
        return self._state

    def step(self, action: str) -> CookingState:
        """Take one action; one the game does not offer now is refused and changes nothing."""
        current = self.state
        if current.done:
            outcome = "won" if current.success else "lost"
            raise EnvironmentFailure(
                f"the cookingworld game is over ({outcome} after {current.moves} moves); "
                "start a new task to play again"
            )
        if action not in current.valid_actions:
            self.refuse(action, current)
        engine = self._backend()
        try:
            with _BRIDGE_LOCK:
                _obs, _reward, _done, infos = engine.step(action)
        except Exception as exc:
            raise EnvironmentFailure(f"cookingworld failed on {action!r}: {exc}") from exc
        self.actions.append(action)
        self._state = self._to_state(infos, previous=current, action=action)
        return self._state

    def gold_actions(self) -> list[str]:
        """A winning action sequence from the start (for tests, baselines and training data).

        The engine's own gold path sometimes opens a container that is already open, which
        the game answers "Unknown action" and is not a valid action; those no-ops are left
        out, so every action here passes :meth:`step` (within ``step_limit`` moves: a longer
        path cannot win in time). The game is left where it was.
        """
        if self._gold is None:
            history = list(self.actions)
            infos = self._start_engine_game()
            engine = self._backend()
            playable = []
            with _BRIDGE_LOCK:
                for action in [str(a) for a in engine.getGoldActionSequence()]:
                    if action in infos["validActions"]:
                        _obs, _reward, _done, infos = engine.step(action)
                        playable.append(action)
            self._gold = playable
            self.replay(history)
        return list(self._gold)

    def close(self) -> None:
        """Stop the game's Java side."""
        if self._engine is not None:
            # Closing a bridge whose Java side already died is not an error.
            with _BRIDGE_LOCK, contextlib.suppress(Exception):
                self._engine.close()
            self._engine = None
            self._state = None

    # --- hooks ---------------------------------------------------------------------------

    def offered_actions(self, state: EnvState) -> list[str]:
        """The valid actions less the idle ones (see :func:`offered_actions`)."""
        if not isinstance(state, CookingState):
            return list(state.valid_actions)
        return offered_actions(state, withhold_closing=self.spec.withhold_closing)

    def prompt_notes(self, state: EnvState) -> list[str]:
        """The room, what is carried, the score's trend, and the recipe once read."""
        if not isinstance(state, CookingState):
            return []
        return prompt_notes(state)

    def observed_facts(self, state: EnvState) -> list[Fact]:
        """Where things are, the room's exits, and what the recipe needs."""
        if not isinstance(state, CookingState):
            return []
        return state_facts(state)

    def goal_parts(self, state: EnvState) -> list[GoalPart]:
        """Reading the cookbook, then each ingredient as the recipe wants it, preparing the
        meal and eating it (see ``trellis_cookingworld._notes.goal_parts``)."""
        if not isinstance(state, CookingState):
            return []
        return goal_parts(state)

    # --- state ---------------------------------------------------------------------------

    def _to_state(
        self, infos: dict[str, Any], previous: CookingState | None, action: str
    ) -> CookingState:
        observation = str(infos.get("observation", "")).strip()
        look = str(infos.get("look", "")).strip()
        room = parse_room(look)
        recipe = previous.recipe if previous is not None else ""
        if parse_recipe(observation) is not None:
            recipe = observation
        success = bool(infos.get("tasksuccess", False))
        moves = int(infos.get("numMoves", 0))
        out_of_moves = not success and moves >= self.spec.step_limit
        failure = bool(infos.get("taskfailure", False)) or out_of_moves
        return CookingState(
            observation=observation,
            valid_actions=sorted(str(a) for a in infos.get("validActions", [])),
            task_description=str(infos.get("taskDescription", "")).strip(),
            score=min(1.0, max(0.0, float(infos.get("score", 0.0)))),
            success=success,
            failure=failure,
            done=success or failure or bool(infos.get("done", False)),
            moves=moves,
            move_limit=self.spec.step_limit,
            room=room.name if room is not None else "",
            look=look,
            carrying=parse_inventory(str(infos.get("inventory", ""))),
            recipe=recipe,
            previous_score=None if previous is None else previous.score,
            last_action=action,
        )


def _cooking_spec(spec: EnvSpec | None) -> CookingConfig:
    if spec is None:
        return CookingConfig()
    if not isinstance(spec, CookingConfig):
        raise InvalidEnvSpecError(
            f"the cookingworld environment takes a CookingConfig, got {type(spec).__name__}"
        )
    return spec
