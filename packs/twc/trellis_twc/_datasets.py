"""Training rows for the twc act adapter, built with exactly the runtime's prompts.

- ``twc_act_examples``: for each TextWorldExpress game (train fold only), walk the gold
  path; at every move the prompt is what the act step sends for an environment move
  (:func:`trellis.agent.env_act_prompt_args` + :func:`trellis.agent.build_act_prompt`) and the completion is
  the gold action in the compact JSON the constrained decoder produces.
- ``twc_expert_examples``: noisy play labelled by :class:`~trellis_twc.TwcExpert`,
  which knows each game from its gold path; ``twc_trajectory_examples`` labels the plays
  a model made itself (``twc_model_plays``), the DAgger step.

Rows are ``{"prompt", "completion"}`` objects, the input of ``trellis adapters train``.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from trellis.agent import MEMORY_CHARS, EnvEpisode
from trellis.agent.errors import EnvironmentFailure, ForbiddenFoldError
from trellis.memory.errors import TrellisError
from trellis_twc._env import TwcEnvironment, TwcState
from trellis_twc._expert import TwcExpert
from trellis_twc._spec import TwcConfig

if TYPE_CHECKING:
    from trellis.agent import Agent, RunResult

__all__ = [
    "TwcHomes",
    "twc_act_examples",
    "twc_configs",
    "twc_expert_examples",
    "twc_homes",
    "twc_model_plays",
    "twc_trajectory_examples",
]


def twc_configs(
    seeds: Iterable[int],
    *,
    fold: str = "train",
    max_locations: int = 3,
    max_items: int = 3,
    doors: bool | None = False,
) -> list[TwcConfig]:
    """Games spread over 1..max_locations rooms and 1..max_items objects (a seed each);
    ``doors`` True or False for every game, None for doors in every other game with more
    than one room."""
    if fold not in ("train", "dev"):
        raise ForbiddenFoldError(
            f"training data comes from the 'train' fold (tune on 'dev'); {fold!r} is not allowed"
        )
    configs = []
    for seed in seeds:
        configs.append(
            TwcConfig.model_validate(
                {
                    "seed": seed,
                    "fold": fold,
                    "num_locations": 1 + seed % max_locations,
                    "num_items": 1 + (seed // max_locations) % max_items,
                    "include_doors": (seed // (max_locations * max_items)) % 2 == 1
                    if doors is None
                    else doors,
                }
            )
        )
    return configs


def twc_act_examples(
    configs: Iterable[TwcConfig], *, recovery: float = 0.3, memory_chars: int = MEMORY_CHARS
) -> Iterator[dict[str, str]]:
    """One row per gold move of each game, plus recovery rows.

    A gold path never goes wrong, so a model trained on it alone has never seen what to do
    after a wrong move. Before a gold ``put X in Y``, with probability ``recovery`` (seeded
    by the game), the game first takes a detour: X goes into another container (no row:
    that move is not taught), the score drops, and the row at that state teaches taking X
    back; then the gold put follows. The detour stays in the history the later rows show,
    as it would in a real run. Every row's prompt offers what the runtime would offer
    (``offered_actions``); a gold move outside that offer gets no row.
    """
    if not 0.0 <= recovery <= 1.0:
        raise ValueError(f"recovery is a probability in [0, 1], got {recovery}")
    env = TwcEnvironment()
    game = EnvEpisode(env, memory_chars)
    try:
        for config in configs:
            rng = random.Random(config.seed)
            env.load(config)
            state = game.begin()
            goal = state.task_description
            for action in env.gold_actions():
                if state.done or action not in state.valid_actions:
                    break  # the gold path and the game disagree: keep only what was checked
                detour = _wrong_put(action, state.valid_actions, rng, recovery)
                if detour is not None:
                    wrong, take_back = detour
                    state = game.step(wrong)
                    if take_back not in state.valid_actions or state.done:
                        break  # the game does not allow taking it back: stop this game
                    if take_back in env.offered_actions(state):
                        yield game.row(goal, state, take_back)
                    state = game.step(take_back)
                    if action not in state.valid_actions:
                        break
                # A gold move the runtime would not offer (a container outside the place
                # shortlist) teaches nothing the runtime can use: the game steps on without a row.
                if action in env.offered_actions(state):
                    yield game.row(goal, state, action)
                state = game.step(action)
    finally:
        env.close()


def twc_expert_examples(
    configs: Iterable[TwcConfig],
    *,
    noise: float = 0.3,
    max_moves: int = 24,
    memory_chars: int = MEMORY_CHARS,
    unfiltered: float = 0.0,
    skip_unmade: bool = False,
) -> Iterator[dict[str, str]]:
    """Rows from noisy play, each labelled with what :class:`TwcExpert` would do there.

    In each game a move is the expert's with probability ``1 - noise`` and otherwise a random
    offered action (seeded by the game), for at most ``max_moves`` moves. Every state
    reached, on the expert's path or off it, gets a row when the expert's move is offered:
    the rows teach recovering from wrong surfaces, wrong rooms and closed homes, which gold
    paths never show. With chance ``unfiltered`` (per game) the game's rows offer every valid
    action, as the runtime does with the pack's offer rules off. With ``skip_unmade`` a game
    the generator cannot make for its seed is left out instead of stopping the rows.
    """
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise is a probability in [0, 1], got {noise}")
    env = TwcEnvironment()
    try:
        for config in configs:
            rng = random.Random(config.seed)

            def noisy(offered: list[str], label: str | None, rng: random.Random = rng) -> str:
                if label in offered and rng.random() >= noise:
                    return str(label)
                return rng.choice(offered)

            try:
                yield from _expert_rows(
                    EnvEpisode(env, memory_chars), config, noisy, max_moves=max_moves
                )
            except EnvironmentFailure:
                if not skip_unmade:
                    raise
    finally:
        env.close()


def twc_trajectory_examples(
    configs: Iterable[TwcConfig],
    plays: Mapping[int, Sequence[str]],
    *,
    memory_chars: int = MEMORY_CHARS,
) -> Iterator[dict[str, str]]:
    """Rows along recorded plays (a model's own runs), each state labelled by the expert.

    This is DAgger's labelling step: the states are the ones the learner reached, mistakes
    included, and each row teaches what :class:`TwcExpert` would have done there. ``plays``
    maps a game's seed to the moves made in it (:func:`twc_model_plays`); a game without a
    play gets no rows, and a recorded move the game does not accept ends that game's rows.
    """
    env = TwcEnvironment()
    try:
        for config in configs:
            if config.seed not in plays:
                continue
            moves = list(plays[config.seed])
            yield from _expert_rows(
                EnvEpisode(env, memory_chars), config, _replaying(moves), max_moves=len(moves) + 1
            )
    finally:
        env.close()


def _replaying(moves: Sequence[str]) -> Callable[[list[str], str | None], str | None]:
    """A ``pick`` for :func:`_expert_rows` that makes the recorded ``moves``, then stops."""
    remaining = iter(moves)
    return lambda _offered, _label: next(remaining, None)


def _expert_rows(
    game: EnvEpisode,
    config: TwcConfig,
    pick: Callable[[list[str], str | None], str | None],
    *,
    max_moves: int,
) -> Iterator[dict[str, str]]:
    """Play one game with ``pick`` (offered actions, expert's label -> move, or None to stop),
    yielding a row at each state where the expert's move is offered."""
    env = game.env
    if not isinstance(env, TwcEnvironment):
        raise TypeError(f"expert rows need a TwcEnvironment episode, got {type(env).__name__}")
    env.load(config)
    expert = TwcExpert.from_gold(env)  # walks the gold path, then resets the game
    state = cast(TwcState, game.begin())
    goal = state.task_description
    for _move in range(max_moves):
        if state.done:
            return
        offered = game.offered(state)
        label = expert.next_action(state)
        if label is not None and label in offered:
            yield game.row(goal, state, label)
        action = pick(offered, label)
        if action is None or action not in state.valid_actions:
            return
        before, state = state, cast(TwcState, game.step(action))
        expert.observe(env.actions[-1], before, state)


async def twc_model_plays(
    agent: Agent,
    configs: Sequence[TwcConfig],
    *,
    concurrency: int = 4,
    on_play: Callable[[TwcConfig, RunResult, list[str]], None] | None = None,
) -> dict[int, list[str]]:
    """Run ``agent`` on each game (``concurrency`` at a time, so the model batches) and
    return each game's moves, by seed: the learner's side of :func:`twc_trajectory_examples`.

    ``on_play`` hears of each finished game (for progress). A game whose run fails is left
    out (and reported on stderr); the others go on.
    """
    plays: dict[int, list[str]] = {}
    pending = list(configs)

    async def worker() -> None:
        while pending:
            config = pending.pop(0)
            try:
                result = await agent.arun(env=config)
            except TrellisError as exc:
                print(f"twc seed {config.seed}: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            plays[config.seed] = agent.tree(result.task_id).env_actions()
            if on_play is not None:
                on_play(config, result, plays[config.seed])

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return plays


@dataclass(frozen=True)
class TwcHomes:
    """What the train fold's gold paths teach about where things belong."""

    pairs: list[tuple[str, str]]
    """The distinct (object, container) pairs put away, sorted."""
    rooms: dict[str, list[str]]
    """Container -> the rooms it stood in at those puts, sorted."""


def twc_homes(configs: Iterable[TwcConfig]) -> TwcHomes:
    """The homes the games' gold paths put objects in, and the rooms of those containers.

    These are the examples :class:`~trellis_twc.PlaceScorer` ranks places with; build
    them from the train fold only (``twc_configs`` refuses any other for training data).
    """
    pairs: set[tuple[str, str]] = set()
    rooms: dict[str, set[str]] = {}
    env = TwcEnvironment()
    try:
        for config in configs:
            env.load(config.model_copy(update={"place_shortlist": 0}))  # no ranking needed
            expert = TwcExpert.from_gold(env)
            pairs.update(expert.home.items())
            for container, room in expert.container_room.items():
                if room:
                    rooms.setdefault(container, set()).add(room)
    finally:
        env.close()
    return TwcHomes(pairs=sorted(pairs), rooms={c: sorted(r) for c, r in sorted(rooms.items())})


def _wrong_put(
    action: str, valid_actions: list[str], rng: random.Random, recovery: float
) -> tuple[str, str] | None:
    """A wrong ``put`` of the same object and the ``take`` that undoes it, or None."""
    if not action.startswith("put ") or " in " not in action:
        return None
    thing = action[len("put ") : action.rindex(" in ")]
    others = [a for a in valid_actions if a.startswith(f"put {thing} in ") and a != action]
    if not others or rng.random() >= recovery:
        return None
    return rng.choice(others), f"take {thing}"
