"""Which cookingworld game to play: everything needed to rebuild one episode."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from trellis.agent.env import EnvSpec
from trellis.agent.errors import ForbiddenFoldError

__all__ = ["TEST_FOLD_REFUSAL", "CookingConfig", "spec_from_record"]

TEST_FOLD_REFUSAL = (
    "the cookingworld 'test' fold is the held-out measure and is not available to runs, "
    "training or tuning; use fold 'train' or 'dev'"
)


class CookingConfig(EnvSpec):
    """One cookingworld game. The defaults make a small one: the kitchen and the pantry, a
    two-ingredient recipe, two distractor foods, no doors, no inventory limit."""

    kind: ClassVar[str] = "cookingworld"

    seed: int = Field(default=1, ge=0, le=2**31 - 1)
    """Game seed within the fold."""
    fold: Literal["train", "dev"] = "dev"
    """Data fold; ``test`` is refused: it is the held-out measure, never run or tuned on."""
    num_locations: int = Field(default=2, ge=1, le=11)
    """Rooms in the house (1 is the kitchen alone, 2 adds the pantry)."""
    num_ingredients: int = Field(default=2, ge=1, le=5)
    """Ingredients the recipe needs."""
    num_distractor_items: int = Field(default=2, ge=0, le=10)
    """Foods placed in the house that the recipe does not need."""
    include_doors: bool = False
    """Whether rooms are separated by doors that must be opened."""
    limit_inventory_size: bool = False
    """Whether the player can carry only a few things at once."""
    step_limit: int = Field(default=50, ge=1, le=1000)
    """Moves allowed; the game ends, failed, when they are used up without eating the meal."""
    withhold_closing: bool = True
    """Leave ``close X`` out of the offered actions: no cooking task needs anything closed, and
    a small model otherwise spends its moves opening and closing one cupboard (records made
    before this rule existed keep it off)."""

    def __init__(self, **data: Any) -> None:
        # Raised directly (not wrapped in a ValidationError) so callers can catch it by type.
        if data.get("fold") == "test":
            raise ForbiddenFoldError(TEST_FOLD_REFUSAL)
        super().__init__(**data)

    @field_validator("fold", mode="before")
    @classmethod
    def _refuse_test(cls, value: Any) -> Any:
        # ``model_validate`` skips ``__init__``; this still refuses (inside a ValidationError).
        if value == "test":
            raise ForbiddenFoldError(TEST_FOLD_REFUSAL)
        return value

    def game_params(self) -> str:
        """The ``gameParams`` string textworld-express expects for cookingworld."""
        return (
            f"numLocations={self.num_locations},numIngredients={self.num_ingredients},"
            f"numDistractorItems={self.num_distractor_items},"
            f"includeDoors={int(self.include_doors)},"
            f"limitInventorySize={int(self.limit_inventory_size)}"
        )


def spec_from_record(data: Mapping[str, Any]) -> CookingConfig:
    """The spec a task or trace recorded (without its ``kind``); a recorded ``test`` fold
    raises :class:`ForbiddenFoldError` itself rather than a validation error."""
    if data.get("fold") == "test":
        raise ForbiddenFoldError(TEST_FOLD_REFUSAL)
    # A record without the rule was made before it existed: it replays and resumes without it.
    return CookingConfig.model_validate({"withhold_closing": False, **data})
