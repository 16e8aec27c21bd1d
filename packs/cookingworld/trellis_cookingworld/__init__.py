"""TextWorldExpress ``cookingworld`` as a Trellis environment pack.

Read the cookbook, gather the ingredients, cut and cook them as the recipe says, prepare
the meal in the kitchen and eat it. The game judges success itself (``tasksuccess``); a
wrong cut or cook, or eating an ingredient, fails it (``taskfailure``). Only the ``train``
and ``dev`` folds are available: ``test`` is the held-out measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trellis.agent.env import EnvironmentPack, EnvSpec
from trellis_cookingworld._env import GAME_NAME, CookingEnvironment
from trellis_cookingworld._spec import TEST_FOLD_REFUSAL, CookingConfig, spec_from_record
from trellis_cookingworld._state import CookingState
from trellis_cookingworld._text import Recipe, parse_recipe, parse_room

__all__ = [
    "ACTION_SKILL",
    "GAME_NAME",
    "PACK",
    "TEST_FOLD_REFUSAL",
    "CookingConfig",
    "CookingEnvironment",
    "CookingState",
    "Recipe",
    "parse_recipe",
    "parse_room",
]

ACTION_SKILL = "cookingworld_act"
"""Name of the skill that sends one action (recorded in traces: it never changes)."""


def _examples() -> Sequence[EnvSpec]:
    return [
        CookingConfig(seed=1, fold="dev"),
        CookingConfig(seed=2, fold="train"),
        CookingConfig(seed=3, fold="dev", num_locations=1, num_ingredients=1),
    ]


def _cli() -> Any:
    from trellis_cookingworld._cli import app

    return app


PACK = EnvironmentPack(
    spec=CookingConfig,
    create=CookingEnvironment,
    description="TextWorldExpress cookingworld: read the recipe, gather, cut, cook and eat",
    action_skill=ACTION_SKILL,
    from_record_hook=spec_from_record,
    examples=_examples,
    cli=_cli,
    refused_records=({"kind": "cookingworld", "seed": 1, "fold": "test"},),
)
"""The pack's registration (entry point ``trellis.environments: cookingworld``)."""
