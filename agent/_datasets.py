"""Training rows for the runtime's own adapters, built with exactly the runtime's prompts.

- ``reminder_cue_examples``: templated reminders of the three kinds with known cues; the
  prompt is :func:`trellis.adapters.build_cue_prompt` as the adapter gets it (no worked
  examples).

Rows are ``{"prompt", "completion"}`` objects, the input of ``trellis adapters train``.
Environment packs build their own rows with the same prompt functions (``build_act_prompt``,
``env_act_prompt_args``) and :func:`write_jsonl`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trellis.adapters import build_cue_prompt
from trellis.agent.env import Environment, EnvState
from trellis.agent.runtime import (
    AgentConfig,
    build_act_prompt,
    env_act_prompt_args,
    offered_actions,
    world_memory_text,
)
from trellis.memory import WorldMemory, fact_rows, fold_facts
from trellis.memory.errors import UsageError

__all__ = [
    "MEMORY_CHARS",
    "EnvEpisode",
    "compact_json",
    "reminder_cue_examples",
    "seed_range",
    "write_jsonl",
]

MEMORY_CHARS = AgentConfig().world_memory_chars
"""The runtime's default world-memory budget: rows show what its prompts show."""


class EnvEpisode:
    """One episode of a world as the runtime sees it, to build act rows with the runtime's
    exact prompts: the environment, the world memory its moves have built (the same facts,
    folded the same way, as the task's tree holds), the goal part being worked on and the
    actions offered (``filtered``: the pack's offer rules, as ``AgentConfig.offer_filter``).

    A pack's data builder loads or begins an episode, steps it, and asks for ``row(goal,
    state, action)`` wherever it knows the right action."""

    def __init__(self, env: Environment, memory_chars: int, *, filtered: bool = True) -> None:
        self.env = env
        self.memory_chars = memory_chars
        self.filtered = filtered
        """Offer what the pack's rules keep (False: every valid action, rules off)."""
        self.memory: WorldMemory = {}
        self.history: list[str] = []
        """The actions taken since :meth:`begin`, as the act prompt lists them."""

    def offered(self, state: EnvState) -> list[str]:
        """The actions the runtime offers here (``AgentConfig.offer_filter``)."""
        return offered_actions(self.env, state, filtered=self.filtered)

    def begin(self) -> EnvState:
        """Start remembering from the game's current (starting) state."""
        state = self.env.state
        self.memory = fold_facts({}, fact_rows(self.env.observed_facts(state)))
        self.history = []
        return state

    def step(self, action: str) -> EnvState:
        state = self.env.step(action)
        self.history.append(action)
        fold_facts(self.memory, fact_rows(self.env.observed_facts(state)))
        return state

    def row(self, goal: str, state: EnvState, action: str) -> dict[str, str]:
        """The act row at this state: the runtime's exact prompt, the action as answer."""
        env = self.env
        parts = [p for p in env.goal_parts(state) if not p.done]
        part = parts[0].title if parts else None
        memory = world_memory_text(
            self.memory, env, state, budget_chars=self.memory_chars, part=part
        )
        prompt_args = env_act_prompt_args(
            goal=goal,
            environment=env,
            state=state,
            history=self.history,
            cues=[],
            memory=memory,
            part=part,
        )
        prompt = build_act_prompt(valid_actions=self.offered(state), **prompt_args)
        return {"prompt": prompt, "completion": compact_json({"action": action})}


def seed_range(text: str) -> range:
    """``START:STOP`` (or one seed) as a range, for the seed options of data commands."""
    try:
        start, _, stop = text.partition(":")
        return range(int(start), int(stop)) if stop else range(int(start), int(start) + 1)
    except ValueError:
        raise UsageError(f"expected seeds as START:STOP (e.g. 0:200), got {text!r}") from None


def compact_json(value: dict[str, Any]) -> str:
    """JSON as the constrained decoder emits it: no optional whitespace."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


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
                "completion": compact_json(truth),
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
