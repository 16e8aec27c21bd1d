"""TextWorldExpress ``twc`` as a Trellis environment pack: put household objects where they
belong.

Installed, the pack registers under the entry-point group ``trellis.environments`` as
``twc``: ``trellis run --env twc --seed 1``, ``Agent().run(env=TwcConfig(seed=1))``. It
brings its offer rules (:class:`TwcConfig` fields), a place ranker built from the train
fold's gold paths, an expert that labels training rows, the data commands
``trellis data twc rows|dagger|homes`` and the shipped ``twc-act`` adapter, pinned to the
pack's action skill ``twc_act``. Only the ``train`` and ``dev`` folds are available:
``test`` is the held-out measure.
"""

from pathlib import Path
from typing import Any

from trellis.agent.env import EnvironmentPack, EnvSpec
from trellis_twc._env import TWC_ACT, TwcEnvironment, TwcState, candidate_places
from trellis_twc._expert import TwcExpert, room_of
from trellis_twc._places import (
    CONDITION_WORDS,
    HOMES_WEIGHT,
    ROOM_MARGIN,
    PlaceScorer,
    condition_of,
    home_is_next_door,
    neighbour_rooms,
    place_scorer,
    shipped_home_rooms,
    shipped_homes,
)
from trellis_twc._spec import TwcConfig

__all__ = [
    "CONDITION_WORDS",
    "HOMES_WEIGHT",
    "PACK",
    "ROOM_MARGIN",
    "TWC_ACT",
    "PlaceScorer",
    "TwcConfig",
    "TwcEnvironment",
    "TwcExpert",
    "TwcState",
    "candidate_places",
    "condition_of",
    "home_is_next_door",
    "neighbour_rooms",
    "place_scorer",
    "room_of",
    "shipped_home_rooms",
    "shipped_homes",
]


def _create(spec: EnvSpec) -> TwcEnvironment:
    if not isinstance(spec, TwcConfig):  # the registry validates specs before this
        raise TypeError(f"the twc pack takes a TwcConfig, got {type(spec).__name__}")
    return TwcEnvironment(spec)


def _cli() -> Any:
    from trellis_twc._cli import app

    return app


def _examples() -> list[EnvSpec]:
    return [
        TwcConfig(seed=1, fold="dev"),
        TwcConfig(seed=3, fold="train", num_locations=2, num_items=2, include_doors=True),
    ]


PACK = EnvironmentPack(
    spec=TwcConfig,
    create=_create,
    description="TextWorldExpress twc: put household objects where they belong",
    action_skill=TWC_ACT,
    action_description="Send one command to the household game and return what it shows next.",
    from_record_hook=TwcConfig.from_recorded,
    adapters_dir=Path(__file__).resolve().parent / "adapters",
    cli=_cli,
    examples=_examples,
    refused_records=({"kind": "twc", "seed": 1, "fold": "test"},),
)
