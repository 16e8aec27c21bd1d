"""The environment contract and the registry of environment packs."""

from trellis.agent.env._contract import (
    Environment,
    EnvironmentPack,
    EnvSpec,
    EnvState,
    Fact,
    GoalPart,
)
from trellis.agent.env._registry import (
    ENTRY_POINT_GROUP,
    EnvironmentRegistry,
    installed_packs,
    load_installed_packs,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "EnvSpec",
    "EnvState",
    "Environment",
    "EnvironmentPack",
    "EnvironmentRegistry",
    "Fact",
    "GoalPart",
    "installed_packs",
    "load_installed_packs",
]
