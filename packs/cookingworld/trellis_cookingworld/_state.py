"""What a cookingworld game shows after each action."""

from __future__ import annotations

from trellis.agent.env import EnvState

__all__ = ["CookingState"]


class CookingState(EnvState):
    """What the game shows after the last action, with what the act prompt keeps in view."""

    room: str = ""
    """The room the player is in."""
    look: str = ""
    """The room as ``look around`` describes it."""
    carrying: list[str] = []
    """The inventory as the game describes it, less articles (``"raw sliced red potato"``)."""
    recipe: str = ""
    """The cookbook's text once it has been read or examined (empty before)."""
    previous_score: float | None = None
    """The score before the last action (None at the start)."""
    last_action: str = ""
    """The action that led here (empty at the start)."""
