"""Training data for the default adapters, built with exactly the runtime's prompts.

- ``twc_act_examples``: for each TextWorldExpress game (train fold only), walk the gold
  path; at every move the prompt is what the act step sends for an environment move
  (:func:`agent._act.env_act_prompt_args` + :func:`build_act_prompt`) and the completion is
  the gold action in the compact JSON the constrained decoder produces.
- ``twc_expert_examples``: noisy play labelled by :class:`~agent._twc_expert.TwcExpert`,
  which knows each game from its gold path; ``twc_trajectory_examples`` labels the plays
  a model made itself (``twc_model_plays``), the DAgger step.
- ``reminder_cue_examples``: templated reminders of the three kinds with known cues; the
  prompt is :func:`adapters._reminders.build_cue_prompt` as the adapter gets it (no
  worked examples).

Rows are ``{"prompt", "completion"}`` objects, the input of ``trellis adapters train``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trellis.adapters._reminders import build_cue_prompt
from trellis.agent._twc import TwcConfig, TwcEnvironment
from trellis.agent._twc_expert import TwcExpert
from trellis.agent.errors import ForbiddenFoldError
from trellis.agent.runtime._act import build_act_prompt, env_act_prompt_args, offered_actions
from trellis.memory.errors import TrellisError

if TYPE_CHECKING:
    from trellis.agent.runtime._sdk import Agent, RunResult

__all__ = [
    "TwcHomes",
    "reminder_cue_examples",
    "twc_act_examples",
    "twc_configs",
    "twc_expert_examples",
    "twc_homes",
    "twc_model_plays",
    "twc_trajectory_examples",
    "write_jsonl",
]


def _compact(value: dict[str, Any]) -> str:
    # The constrained decoder emits JSON without optional whitespace.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def twc_configs(
    seeds: Iterable[int], *, fold: str = "train", max_locations: int = 3, max_items: int = 3
) -> list[TwcConfig]:
    """Games spread over 1..max_locations rooms and 1..max_items objects (a seed each)."""
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
                }
            )
        )
    return configs


def twc_act_examples(
    configs: Iterable[TwcConfig], *, recovery: float = 0.3
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
    try:
        for config in configs:
            rng = random.Random(config.seed)
            state = env.load(config)
            goal = state.task_description
            for action in env.gold_actions():
                if state.done or action not in state.valid_actions:
                    break  # the gold path and the game disagree: keep only what was checked
                detour = _wrong_put(action, state.valid_actions, rng, recovery)
                if detour is not None:
                    wrong, take_back = detour
                    state = env.step(wrong)
                    if take_back not in state.valid_actions or state.done:
                        break  # the game does not allow taking it back: stop this game
                    if take_back in offered_actions(state):
                        yield _act_row(goal, state, env.actions, take_back)
                    state = env.step(take_back)
                    if action not in state.valid_actions:
                        break
                # A gold move the runtime would not offer (a container outside the place
                # shortlist) teaches nothing the runtime can use: the game steps on without a row.
                if action in offered_actions(state):
                    yield _act_row(goal, state, env.actions, action)
                state = env.step(action)
    finally:
        env.close()


def twc_expert_examples(
    configs: Iterable[TwcConfig], *, noise: float = 0.3, max_moves: int = 24
) -> Iterator[dict[str, str]]:
    """Rows from noisy play, each labelled with what :class:`TwcExpert` would do there.

    In each game a move is the expert's with probability ``1 - noise`` and otherwise a random
    offered action (seeded by the game), for at most ``max_moves`` moves. Every state
    reached, on the expert's path or off it, gets a row when the expert's move is offered:
    the rows teach recovering from wrong surfaces, wrong rooms and closed homes, which gold
    paths never show.
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

            yield from _expert_rows(env, config, noisy, max_moves=max_moves)
    finally:
        env.close()


def twc_trajectory_examples(
    configs: Iterable[TwcConfig], plays: Mapping[int, Sequence[str]]
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
            yield from _expert_rows(env, config, _replaying(moves), max_moves=len(moves) + 1)
    finally:
        env.close()


def _replaying(moves: Sequence[str]) -> Callable[[list[str], str | None], str | None]:
    """A ``pick`` for :func:`_expert_rows` that makes the recorded ``moves``, then stops."""
    remaining = iter(moves)
    return lambda _offered, _label: next(remaining, None)


def _expert_rows(
    env: TwcEnvironment,
    config: TwcConfig,
    pick: Callable[[list[str], str | None], str | None],
    *,
    max_moves: int,
) -> Iterator[dict[str, str]]:
    """Play one game with ``pick`` (offered actions, expert's label -> move, or None to stop),
    yielding a row at each state where the expert's move is offered."""
    env.load(config)
    expert = TwcExpert.from_gold(env)
    state = env.state
    goal = state.task_description
    for _move in range(max_moves):
        if state.done:
            return
        offered = offered_actions(state)
        label = expert.next_action(state)
        if label is not None and label in offered:
            yield _act_row(goal, state, env.actions, label)
        action = pick(offered, label)
        if action is None or action not in state.valid_actions:
            return
        before, state = state, env.step(action)
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

    These are the examples :class:`~agent._twc_places.PlaceScorer` ranks places with; build
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


def _act_row(goal: str, state: Any, history: list[str], action: str) -> dict[str, str]:
    prompt_args = env_act_prompt_args(goal=goal, state=state, history=history, cues=[])
    prompt = build_act_prompt(valid_actions=offered_actions(state), **prompt_args)
    return {"prompt": prompt, "completion": _compact({"action": action})}


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


# (template, kind, polarity, action); {thing} and {place} are filled from the vocabularies.
_REMINDER_TEMPLATES: tuple[tuple[str, str, str, str], ...] = (
    ("never use the {thing}", "correction", "forbid", "use"),
    ("don't use the {thing}", "correction", "forbid", "use"),
    ("do not touch the {thing}", "correction", "forbid", "touch"),
    ("please never move the {thing}", "correction", "forbid", "move"),
    ("never open the {place}", "correction", "forbid", "open"),
    ("don't put anything in the {place}", "correction", "forbid", "put"),
    ("close the {place} afterwards", "correction", "require", "close"),
    ("always close the {place}", "correction", "require", "close"),
    ("make sure to clean the {place}", "correction", "require", "clean"),
    ("remember to wash the {thing}", "correction", "require", "wash"),
    ("always put back the {thing}", "correction", "require", "put"),
    ("I prefer the {thing}", "preference", "prefer", ""),
    ("I like using the {thing}", "preference", "prefer", ""),
    ("I'd rather have the {thing}", "preference", "prefer", ""),
    ("please use the {thing} if you can", "preference", "prefer", ""),
    ("the {thing} is in the {place}", "context", "inform", ""),
    ("remember that the {thing} is broken", "context", "inform", ""),
    ("note that the {thing} is dirty", "context", "inform", ""),
)
# Training and held-back rows never share an object or a place, so the held-back accuracy
# measures whether the adapter reads the subject from the reminder instead of recalling it.
_VOCABULARY: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": (
        (
            "blue plates",
            "red mug",
            "green towel",
            "white bowl",
            "big knife",
            "glass jar",
            "old sponge",
            "yellow cup",
            "metal pot",
            "wooden spoon",
            "clean fork",
            "silver tray",
            "black pan",
            "paper napkins",
            "soup ladle",
            "tea kettle",
            "cutting board",
            "salad bowl",
            "coffee filter",
            "dish soap",
        ),
        ("fridge", "cupboard", "dishwasher", "drawer", "cabinet", "oven", "freezer", "closet"),
    ),
    "held-out": (
        (
            "orange teapot",
            "striped apron",
            "baking tray",
            "pink glasses",
            "garlic press",
            "steel whisk",
            "rubber gloves",
            "bread knife",
            "water jug",
            "cereal box",
            "frying pan",
            "egg timer",
        ),
        ("pantry", "spice rack", "wardrobe", "microwave", "shoe rack", "laundry basket"),
    ),
}


def reminder_cue_examples(
    count: int, *, seed: int = 0, vocabulary: str = "train"
) -> list[dict[str, Any]]:
    """``count`` templated reminders with their cue (``truth``) and training row fields.

    ``vocabulary="held-out"`` draws objects and places that the training vocabulary lacks.
    """
    if vocabulary not in _VOCABULARY:
        raise ValueError(f"vocabulary must be one of {sorted(_VOCABULARY)}, got {vocabulary!r}")
    things, places = _VOCABULARY[vocabulary]
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for _ in range(count):
        template, kind, polarity, action = rng.choice(_REMINDER_TEMPLATES)
        thing, place = rng.choice(things), rng.choice(places)
        reminder = template.format(thing=thing, place=place)
        subject = place if "{place}" in template and "{thing}" not in template else thing
        truth = {"kind": kind, "polarity": polarity, "action": action, "subject": subject}
        rows.append(
            {
                "prompt": build_cue_prompt(reminder, few_shot=False),
                "completion": _compact(truth),
                "reminder": reminder,
                "truth": truth,
            }
        )
    return rows


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Write rows as JSON Lines; returns how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
