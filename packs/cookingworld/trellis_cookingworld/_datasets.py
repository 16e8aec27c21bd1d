"""Act rows for a cookingworld adapter, built with exactly the runtime's prompts.

Each train-fold game is played along its gold path; at every move the row's prompt is what
the runtime's act step would send there (the part of the goal being worked on, the world
memory, the observation, the pack's notes and offered actions) and the answer is the gold
action. With ``detour`` a game sometimes first takes a harmless wrong move (an offered
action that is not the gold one and neither cuts, cooks nor eats), so the rows also show
how to carry on from a state the gold path never visits.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from trellis.agent import MEMORY_CHARS, EnvEpisode
from trellis.agent.errors import ForbiddenFoldError
from trellis_cookingworld._env import CookingEnvironment
from trellis_cookingworld._spec import CookingConfig

__all__ = ["cooking_act_examples", "cooking_configs"]

# Moves that can fail the task or use something up: never taken as a detour.
_RISKY = ("slice ", "chop ", "dice ", "cook ", "eat ", "prepare ", "drop ")


def cooking_configs(
    seeds: Iterable[int],
    *,
    fold: str = "train",
    max_locations: int = 3,
    max_ingredients: int = 3,
) -> list[CookingConfig]:
    """Games spread over 1..max_locations rooms and 1..max_ingredients ingredients."""
    if fold not in ("train", "dev"):
        raise ForbiddenFoldError(
            f"training data comes from the 'train' fold (tune on 'dev'); {fold!r} is not allowed"
        )
    return [
        CookingConfig(
            seed=seed,
            fold=fold,
            num_locations=1 + seed % max_locations,
            num_ingredients=1 + (seed // max_locations) % max_ingredients,
        )
        for seed in seeds
    ]


def cooking_act_examples(
    configs: Iterable[CookingConfig],
    *,
    detour: float = 0.2,
    memory_chars: int = MEMORY_CHARS,
) -> Iterator[dict[str, str]]:
    """One row per gold move of each game (``detour``: chance of a harmless wrong move, and
    the way back, before a gold move)."""
    if not 0.0 <= detour <= 1.0:
        raise ValueError(f"detour is a probability in [0, 1], got {detour}")
    env = CookingEnvironment()
    game = EnvEpisode(env, memory_chars)
    try:
        for config in configs:
            rng = random.Random(config.seed)
            env.load(config)
            gold = env.gold_actions()
            state = game.begin()
            goal = state.task_description
            for action in gold:
                if state.done or action not in state.valid_actions:
                    break  # the gold path and the game disagree: keep only what was checked
                offered = game.offered(state)
                if action not in offered:
                    continue  # withheld (it makes no progress): the runtime never takes it
                harmless = [
                    a
                    for a in offered
                    if a != action and not a.startswith(_RISKY) and "move" not in a
                ]
                if harmless and rng.random() < detour:
                    state = game.step(rng.choice(harmless))
                    if state.done or action not in state.valid_actions:
                        break
                if action not in game.offered(state):
                    continue
                yield game.row(goal, state, action)
                state = game.step(action)
    finally:
        env.close()
