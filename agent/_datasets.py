"""Training data for the default adapters, built with exactly the runtime's prompts.

- ``twc_act_examples``: for each TextWorldExpress game (train fold only), walk the gold
  path; at every move the prompt is what the act step sends for an environment move
  (:func:`agent._act.env_act_prompt_args` + :func:`build_act_prompt`) and the completion is
  the gold action in the compact JSON the constrained decoder produces.
- ``reminder_cue_examples``: templated reminders of the three kinds with known cues; the
  prompt is :func:`adapters._reminders.build_cue_prompt` as the adapter gets it (no
  worked examples).

Rows are ``{"prompt", "completion"}`` objects, the input of ``trellis adapters train``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from adapters._reminders import build_cue_prompt
from agent._act import build_act_prompt, env_act_prompt_args
from agent._twc import TwcConfig, TwcEnvironment
from agent.errors import ForbiddenFoldError

__all__ = [
    "reminder_cue_examples",
    "twc_act_examples",
    "twc_configs",
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


def twc_act_examples(configs: Iterable[TwcConfig]) -> Iterator[dict[str, str]]:
    """One row per gold move of each game."""
    for config in configs:
        env = TwcEnvironment(config)
        try:
            state = env.reset()
            goal = state.task_description
            for index, action in enumerate(env.gold_actions()):
                if state.done or action not in state.valid_actions:
                    break  # the gold path and the game disagree: keep only what was checked
                prompt_args = env_act_prompt_args(
                    goal=goal,
                    observation=state.observation,
                    history=env.actions[:index],
                    cues=[],
                )
                prompt = build_act_prompt(valid_actions=state.valid_actions, **prompt_args)
                yield {"prompt": prompt, "completion": _compact({"action": action})}
                state = env.step(action)
        finally:
            env.close()


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
