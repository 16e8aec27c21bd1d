"""The plan schema: steps with typed arguments and dependencies, and its JSON schema.

A :class:`Plan` is what a planner proposes for a goal or a failed node: a short list of
:class:`PlanStep` that become child nodes of the Task Memory Tree. :func:`plan_json_schema`
is the schema handed to the backend for constrained decoding; it is kept small because the
default model is tiny and every schema token costs prompt time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trellis.memory import NodeSpec
from trellis.planners._skills import DECOMPOSE, SkillSpec

__all__ = ["Plan", "PlanStep", "plan_json_schema"]


class PlanStep(BaseModel):
    """One step: run a skill with arguments, or ``"decompose"`` to plan it further later."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=40)
    """Short id, unique within the plan, that ``depends_on`` refers to."""
    title: str = Field(min_length=1, max_length=200)
    """What the step achieves, in a few words."""
    skill: str = Field(min_length=1, max_length=64)
    """A skill name from the catalogue, or ``"decompose"``."""
    args: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the skill (empty for ``"decompose"``)."""
    depends_on: list[str] = Field(default_factory=list)
    """Ids of steps of this plan that must finish first."""

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        # Models often number steps; 1 and "1" mean the same step.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("depends_on", mode="before")
    @classmethod
    def _deps_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @property
    def is_decompose(self) -> bool:
        """Whether this step is planned further instead of executed."""
        return self.skill == DECOMPOSE


class Plan(BaseModel):
    """An ordered list of steps (order is the preferred execution order among ready steps)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: list[PlanStep]
    """The steps, in the order they should run when dependencies allow."""

    def step(self, step_id: str) -> PlanStep:
        """The step with this id (``KeyError`` when absent)."""
        for candidate in self.steps:
            if candidate.id == step_id:
                return candidate
        raise KeyError(step_id)

    def to_json(self) -> str:
        """Compact JSON, the same shape the model is asked to produce."""
        return self.model_dump_json()

    def to_node_specs(self) -> list[NodeSpec]:
        """Child node specs for the Task Memory Tree (key = step id, input = skill call)."""
        return [
            NodeSpec(
                key=step.id,
                title=step.title,
                kind="decompose" if step.is_decompose else "step",
                input={"skill": step.skill, "args": step.args},
                depends_on=list(step.depends_on),
            )
            for step in self.steps
        ]


def plan_json_schema(
    skills: Sequence[SkillSpec],
    *,
    max_steps: int = 8,
    per_skill_args: bool = True,
    allow_decompose: bool = True,
) -> dict[str, Any]:
    """JSON schema of a plan whose ``skill`` is limited to the catalogue's names.

    With ``per_skill_args`` each skill's argument schema is tied to its name (an ``anyOf``
    over skills), so constrained decoding also produces well-typed arguments; without it,
    ``args`` is any object and only the skill name is constrained (a smaller schema).
    """
    names = [s.name for s in skills]
    if allow_decompose:
        names.append(DECOMPOSE)
    # Ids are "1".."max_steps": short to generate, and a model cannot point depends_on at
    # something that is not a step id (small models like to write skill names there).
    ids: dict[str, Any] = {"enum": [str(i) for i in range(1, max_steps + 1)]}
    common: dict[str, Any] = {
        "id": ids,
        "title": {"type": "string", "maxLength": 80},
    }
    deps = {"type": "array", "items": ids, "maxItems": max_steps}
    defs: dict[str, Any] = {}
    if per_skill_args:
        variants = []
        for spec in skills:
            args = spec.args_schema()
            defs.update(args.pop("$defs", {}))
            args.setdefault("additionalProperties", False)
            variants.append(_step_schema(common, {"const": spec.name}, args, deps))
        if allow_decompose:
            empty = {"type": "object", "properties": {}, "additionalProperties": False}
            variants.append(_step_schema(common, {"const": DECOMPOSE}, empty, deps))
        step: dict[str, Any] = {"anyOf": variants} if len(variants) != 1 else variants[0]
    else:
        step = _step_schema(common, {"enum": names}, {"type": "object"}, deps)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": step, "minItems": 1, "maxItems": max_steps}
        },
        "required": ["steps"],
        "additionalProperties": False,
    }
    if defs:
        schema["$defs"] = defs
    return schema


def _step_schema(
    common: dict[str, Any], skill: dict[str, Any], args: dict[str, Any], deps: dict[str, Any]
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**common, "skill": skill, "args": args, "depends_on": deps},
        "required": ["id", "title", "skill", "args", "depends_on"],
        "additionalProperties": False,
    }
