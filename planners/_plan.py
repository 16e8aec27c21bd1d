"""The plan schema: steps with typed arguments and dependencies, and its JSON schema.

A :class:`Plan` is what a planner proposes for a goal or a failed node: a short list of
:class:`PlanStep` that become child nodes of the Task Memory Tree. :func:`plan_json_schema`
is the schema handed to the backend for constrained decoding. It is position-aware: step k
of the array has the id ``"k"`` and may only depend on steps before it, so a decoder that
follows the schema cannot write a self, forward or dangling dependency (or a cycle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trellis.memory import NodeSpec
from trellis.planners._skills import DECOMPOSE, SkillSpec

__all__ = [
    "OTHER_STEP_PREFIX",
    "OtherStep",
    "Plan",
    "PlanStep",
    "other_step_id",
    "plan_json_schema",
]


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
    """Ids of steps that must finish first: steps of this plan, or steps already in the task
    that the request offers (:class:`OtherStep`, ids like ``"task.3"``)."""

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


OTHER_STEP_PREFIX = "task."
"""How a plan names a step already in the task: ``task.`` and the step's keys from the root
(``task.3`` is the root plan's step 3, ``task.3.1`` the first step of its sub-plan)."""


def other_step_id(keys: Sequence[str]) -> str:
    """The id a plan uses for the existing step with these keys from the root down."""
    return OTHER_STEP_PREFIX + ".".join(keys)


class OtherStep(BaseModel):
    """A step already in the task, outside the node being planned, that a new step may wait
    for: a sub-plan's step can depend on a step of another branch (a shared step)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^task\.", max_length=200)
    """How ``depends_on`` names it (:func:`other_step_id`)."""
    title: str
    """What the step does."""
    status: str
    """Its status now (``done``, ``pending``, ...)."""


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


MAX_TITLE_CHARS = 80
"""Default longest step title the schema allows (a title says what the step does, in a few words)."""

_EMPTY_ARGS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def plan_json_schema(
    skills: Sequence[SkillSpec],
    *,
    max_steps: int = 8,
    per_skill_args: bool = True,
    allow_decompose: bool = True,
    max_title_chars: int = MAX_TITLE_CHARS,
    other_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """JSON schema of a plan over the catalogue ``skills``, with dependencies made safe by position.

    ``steps`` is an array of at most ``max_steps`` items described by ``prefixItems``: item k
    (1-based) has ``id`` const ``"k"`` and ``depends_on`` items drawn from ``"1".."k-1"``
    (step 1 depends on nothing) and from ``other_ids``, the steps already in the task that
    the request offers (none of which can close a cycle: see ``TaskStore.dependable``). Constrained decoding (llguidance on the embedded backend,
    ``structured_outputs`` on vLLM) therefore produces ids and dependencies that always
    validate, without ``allOf`` (which some decoders silently ignore).

    With ``per_skill_args`` each skill's argument schema is tied to its name (an ``anyOf``
    over skills at each position, arguments shared through ``$defs``), so the decoder also
    produces well-typed arguments; without it, ``skill`` is an ``enum`` of the names and
    ``args`` any object (a smaller schema). ``allow_decompose`` adds the ``"decompose"``
    pseudo-skill (empty arguments).
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    # Shared parts live in $defs so that the per-position variants stay one line each.
    defs: dict[str, Any] = {
        "title": {"type": "string", "minLength": 1, "maxLength": max_title_chars}
    }
    title = {"$ref": "#/$defs/title"}
    calls: list[tuple[dict[str, Any], dict[str, Any]]] = []
    if per_skill_args:
        for spec in skills:
            args = spec.args_schema()
            defs.update({k: _bounded(v) for k, v in args.pop("$defs", {}).items()})
            args = _bounded(args)
            args.setdefault("additionalProperties", False)
            key = f"args_{spec.name}"
            defs[key] = args
            calls.append(({"const": spec.name}, {"$ref": f"#/$defs/{key}"}))
        if allow_decompose:
            calls.append(({"const": DECOMPOSE}, _EMPTY_ARGS))
    else:
        names = [s.name for s in skills] + ([DECOMPOSE] if allow_decompose else [])
        calls.append(({"enum": names}, {"type": "object"}))
    positions: list[dict[str, Any]] = []
    for k in range(1, max_steps + 1):
        earlier = [str(i) for i in range(1, k)] + list(other_ids)
        defs[f"deps_{k}"] = (
            {"type": "array", "items": {"enum": earlier}, "maxItems": len(earlier)}
            if earlier
            else {"type": "array", "maxItems": 0}
        )
        deps = {"$ref": f"#/$defs/deps_{k}"}
        variants = [
            _step_schema({"const": str(k)}, title, skill, args, deps) for skill, args in calls
        ]
        positions.append(variants[0] if len(variants) == 1 else {"anyOf": variants})
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "prefixItems": positions,
                "items": False,
                "minItems": 1,
                "maxItems": max_steps,
            }
        },
        "required": ["steps"],
        "additionalProperties": False,
    }
    schema["$defs"] = defs
    return schema


MAX_ARG_CHARS = 200
"""Longest text argument a plan may write when the skill sets no limit of its own."""
MAX_ARG_INT = 10**9
"""Largest integer argument (in absolute value) when the skill sets no bound of its own."""


def _bounded(schema: Any) -> Any:
    """The schema with a length limit on unbounded strings and bounds on unbounded integers.

    A small model under constraints can loop inside a value ("1010101...", "100000...")
    until it runs out of tokens; the limits end such a value early. A skill's own limits
    are kept.
    """
    if isinstance(schema, list):
        return [_bounded(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _bounded(value) for key, value in schema.items()}
    kind = out.get("type")
    if kind == "string" and "enum" not in out and "const" not in out:
        out.setdefault("maxLength", MAX_ARG_CHARS)
    elif kind == "integer":
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = MAX_ARG_INT
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -MAX_ARG_INT
    return out


def _step_schema(
    step_id: dict[str, Any],
    title: dict[str, Any],
    skill: dict[str, Any],
    args: dict[str, Any],
    deps: dict[str, Any],
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "id": step_id,
            "title": title,
            "skill": skill,
            "args": args,
            "depends_on": deps,
        },
        "required": ["id", "title", "skill", "args", "depends_on"],
        "additionalProperties": False,
    }
