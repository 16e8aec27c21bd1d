"""Play a goal's reference solution straight on a fresh world, without the runtime.

``run_reference(Kitchen, goal)`` validates each call's arguments with the skill's own
argument model (as the runtime would), calls the skill's function with a
:class:`~trellis.SkillContext` holding the world, and judges the world afterwards. A reference
step that fails raises :class:`ReferenceStepError`: a reference solution must always work.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from trellis import Skill, SkillContext

from ._common import AppWorld, Goal

__all__ = ["ReferenceStepError", "call_skill", "run_reference"]

W = TypeVar("W", bound=AppWorld)


class ReferenceStepError(RuntimeError):
    """A step of a reference solution failed (the goal's reference is wrong)."""


def _context_param(skill: Skill) -> str | None:
    hints = typing.get_type_hints(skill.function)
    for name, hint in hints.items():
        if hint is SkillContext:
            return name
    return None


def call_skill(skill: Skill, world: AppWorld, args: Mapping[str, Any]) -> Any:
    """Run ``skill`` on ``world`` with ``args`` (validated by the skill's argument model).

    Bad arguments raise the runtime's ``InvalidSkillArgsError``; a violated precondition
    raises whatever the skill raises (a ``ValueError`` naming the problem and the fix).
    """
    model = skill.spec.validate_args(args)
    kwargs: dict[str, Any] = {name: getattr(model, name) for name in type(model).model_fields}
    param = _context_param(skill)
    if param is not None:
        kwargs[param] = SkillContext(task_id=f"reference-{world.name}", extra=world.context())
    return skill.function(**kwargs)


def run_reference(world_cls: type[W], goal: Goal) -> tuple[W, bool, list[str]]:
    """Play ``goal.reference`` on ``world_cls.fresh()``: ``(world, ok, forbidden)``."""
    world = world_cls.fresh()
    skills = {s.name: s for s in world_cls.skills()}
    for index, (name, args) in enumerate(goal.reference):
        if name not in skills:
            raise ReferenceStepError(
                f"{goal.id} step {index}: no skill named {name!r}; known: {', '.join(skills)}"
            )
        try:
            call_skill(skills[name], world, args)
        except Exception as exc:
            raise ReferenceStepError(
                f"{goal.id} step {index}: {name}({args}) failed: {type(exc).__name__}: {exc}"
            ) from exc
    ok, forbidden = goal.judge(world)
    return world, ok, forbidden
