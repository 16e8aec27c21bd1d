"""The one skill every environment task acts through: send an action, return what it shows."""

from __future__ import annotations

from typing import Any

from trellis.agent.env import Environment, EnvironmentPack
from trellis.agent.errors import EnvironmentFailure
from trellis.agent.runtime._skills import Skill, SkillContext, skill

__all__ = ["action_skill"]

ACTION_TIMEOUT_S = 30.0
"""An environment step is a local call (milliseconds); a long one means the world hung."""


def action_skill(pack: EnvironmentPack) -> Skill:
    """The pack's action skill (``pack.skill_name``): one action on the task's environment.

    Its result (the action, the observation, score, success, done, moves) is what the tree
    stores and traces record for every move.
    """
    kind = pack.kind

    def act(action: str, ctx: SkillContext) -> dict[str, Any]:
        environment = ctx.env
        if not isinstance(environment, Environment):
            raise EnvironmentFailure(
                f"this task has no {kind} environment: start it with env=<{kind} spec> "
                f"(CLI: --env {kind})"
            )
        state = environment.step(action)
        return {
            "action": action,
            "observation": state.observation,
            "score": state.score,
            "success": state.success,
            "done": state.done,
            "moves": state.moves,
        }

    act.__doc__ = (
        pack.action_description
        or f"Send one action to the {kind} environment and return what it shows next."
    )
    return skill(name=pack.skill_name, side_effects=True, timeout_s=ACTION_TIMEOUT_S)(act)
