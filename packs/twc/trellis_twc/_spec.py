"""Which twc game to play: the pack's :class:`~trellis.agent.env.EnvSpec`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from trellis.agent.env import EnvSpec
from trellis.agent.errors import ForbiddenFoldError

__all__ = ["TwcConfig"]

_TEST_FOLD = (
    "the twc 'test' fold is the held-out measure and is not available to runs, training or "
    "tuning; use fold 'train' or 'dev'"
)

# Offer rules added after traces were first recorded, as they were before they existed.
_RULES_BEFORE_THEY_WERE_RECORDED: dict[str, Any] = {
    "avoid_regressions": False,
    "avoid_idle": False,
    "place_shortlist": 0,
    "place_homes": False,
    "idle_containers": False,
    "place_conditions": False,
    "place_rooms": False,
    "goal_parts": False,
    "doors_are_ways": False,
}


class TwcConfig(EnvSpec):
    """Which twc game to play. Everything needed to rebuild the game is here."""

    kind: ClassVar[str] = "twc"

    seed: int = Field(default=1, ge=0)
    """Game seed within the fold."""
    fold: Literal["train", "dev"] = "dev"
    """Data fold. ``test`` is refused: it is the held-out measure, never tuned on."""
    num_locations: int = Field(default=1, ge=1, le=3)
    """Rooms in the house (TextWorldExpress's twc makes 1 to 3)."""
    num_items: int = Field(default=1, ge=1, le=4)
    """Objects to put away (TextWorldExpress's twc makes 1 to 4)."""
    include_doors: bool = False
    """Whether rooms are separated by doors that must be opened."""
    step_limit: int = Field(default=50, ge=1, le=1000)
    """The environment's own move limit."""
    avoid_regressions: bool = True
    """Leave out of the offered actions the moves known to lower the score (see
    ``TwcState.regressed_actions``); False offers them too."""
    avoid_idle: bool = True
    """Leave out of the offered actions the moves that cannot make progress (see
    ``TwcState.idle_actions``); False offers them too."""
    place_shortlist: int = Field(default=1, ge=0, le=20)
    """While objects are carried, offer puts into (and opening of) only the containers that
    are among the ``place_shortlist`` likeliest homes of a carried object, by sentence
    similarity (see ``TwcState.unlikely_actions``); 0 offers every container."""
    idle_containers: bool = True
    """With ``avoid_idle``: opening or closing a container does not reopen the way back (only
    taking or putting does), and closing is not offered (see ``TwcState.idle_actions``)."""
    place_homes: bool = True
    """Rank places with the known homes of similar train-fold objects as well as sentence
    similarity (see ``trellis_twc._places``); False ranks by similarity alone."""
    place_conditions: bool = True
    """With ``place_homes``: compare an object only with known objects in the same condition
    (a clean fork with clean cutlery, not with a dirty spoon), which decides where it
    belongs; False compares with every known object."""
    place_rooms: bool = True
    """With ``place_shortlist``: while an object is carried, when a home container known to
    stand in a neighbouring room (one the room description names) scores clearly likelier
    than every place here (``trellis_twc._places.ROOM_MARGIN``), no put or open here is offered
    for it, so the model carries it next door instead of trying the wrong places here first
    (see ``TwcState.unlikely_actions``); False always offers the likeliest place here."""

    doors_are_ways: bool = True
    """A door is a way to a room, not a place: opening one is never held back as an unlikely
    home of a carried object (``place_shortlist``); False treats it as a container, as records
    made before this rule had it (a carried object then often hid the only way out)."""
    goal_parts: bool = True
    """Work on the goal one object at a time: each object seen so far is a part (put it where
    it belongs), and while fewer than ``num_items`` are known, finding the others is one
    more; the runtime keeps a node per part (see ``TwcEnvironment.goal_parts``)."""

    def __init__(self, **data: Any) -> None:
        # Raised directly (not wrapped in a ValidationError) so callers can catch it by type.
        if data.get("fold") == "test":
            raise ForbiddenFoldError(_TEST_FOLD)
        super().__init__(**data)

    @field_validator("fold", mode="before")
    @classmethod
    def _refuse_test(cls, value: Any) -> Any:
        if value == "test":
            raise ForbiddenFoldError(_TEST_FOLD)
        return value

    @classmethod
    def from_recorded(cls, spec: Mapping[str, Any]) -> TwcConfig:
        """The config a trace or a stored task recorded (its ``kind`` key is ignored).

        An offer rule the record does not name did not exist when it was made, so it is
        off: an older trace replays, and an older task resumes, with the offer it had.
        """
        data = {key: value for key, value in spec.items() if key != "kind"}
        return cls(**{**_RULES_BEFORE_THEY_WERE_RECORDED, **data})

    def game_params(self) -> str:
        """The ``gameParams`` string textworld-express expects."""
        return (
            f"numLocations={self.num_locations},numItemsToPutAway={self.num_items},"
            f"includeDoors={int(self.include_doors)},limitInventorySize=0"
        )
