"""Skill specifications: the catalogue that planners write plans against and validators check.

A :class:`SkillSpec` describes one executable skill: its name, what it does, the pydantic
model of its arguments and how it may run. ``agent.skill`` builds these from decorated
functions; planners and the plan validator only need the spec, never the callable.
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from trellis.planners.errors import InvalidSkillArgsError, SkillDefinitionError

__all__ = ["DECOMPOSE", "SkillSpec", "format_validation_error", "skill_catalogue"]

DECOMPOSE = "decompose"
"""Pseudo-skill of a plan step that is itself decomposed further instead of executed."""

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


def format_validation_error(error: ValidationError) -> str:
    """One line per problem, ``field: message``, short enough to feed back to a model."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ())) or "(arguments)"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts)


@dataclass(frozen=True)
class SkillSpec:
    """One skill of the catalogue (immutable; hashable by name)."""

    name: str
    """Identifier the plan uses (lower-case letters, digits, underscores)."""
    description: str
    """What the skill does, in one sentence: this is what the planner reads."""
    args_model: type[BaseModel]
    """Pydantic model of the skill's keyword arguments."""
    side_effects: bool = True
    """Whether running it changes the world (False: safe to retry or replay freely)."""
    needs_approval: bool = False
    """Whether a human must approve each call before it runs."""
    timeout_s: float = 60.0
    """Wall-clock limit of one call."""
    examples: tuple[Mapping[str, Any], ...] = field(default=(), compare=False)
    """Optional example argument dicts, shown to planners and validated at construction."""

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or not _NAME.match(self.name)
            or keyword.iskeyword(self.name)
        ):
            raise SkillDefinitionError(
                f"invalid skill name {self.name!r}: use a lower-case identifier such as "
                "'pick_up' (letters, digits, underscores; at most 64 characters)"
            )
        if self.name == DECOMPOSE:
            raise SkillDefinitionError(
                f"{DECOMPOSE!r} is reserved for plan steps that are decomposed further; "
                "rename the skill"
            )
        if not (isinstance(self.args_model, type) and issubclass(self.args_model, BaseModel)):
            raise SkillDefinitionError(
                f"skill {self.name!r}: args_model must be a pydantic BaseModel subclass, "
                f"got {self.args_model!r}"
            )
        if not self.description or not self.description.strip():
            raise SkillDefinitionError(
                f"skill {self.name!r} has no description: planners choose skills by it; "
                "give the function a docstring or pass @skill(description=...)"
            )
        if not self.timeout_s > 0:
            raise SkillDefinitionError(
                f"skill {self.name!r}: timeout_s must be positive, got {self.timeout_s}"
            )
        for example in self.examples:
            self.validate_args(example)

    def args_schema(self) -> dict[str, Any]:
        """JSON schema of the arguments (pydantic's, titles dropped to keep prompts short)."""
        return _strip_titles(self.args_model.model_json_schema())

    def validate_args(self, args: Mapping[str, Any] | None) -> BaseModel:
        """Arguments as the skill's model; :class:`InvalidSkillArgsError` names each problem."""
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            raise InvalidSkillArgsError(
                self.name, f"arguments must be a JSON object, got {type(args).__name__}"
            )
        # Models usually ignore unknown keys; a planner inventing an argument is a mistake
        # worth telling it about, unless the model explicitly accepts extras.
        if self.args_model.model_config.get("extra") != "allow":
            known = set()
            for fname, finfo in self.args_model.model_fields.items():
                known.add(fname)
                if isinstance(finfo.alias, str):
                    known.add(finfo.alias)
            unknown = sorted(str(k) for k in args if k not in known)
            if unknown:
                allowed = ", ".join(sorted(self.args_model.model_fields)) or "none"
                raise InvalidSkillArgsError(
                    self.name, f"unexpected argument(s) {', '.join(unknown)} (allowed: {allowed})"
                )
        try:
            return self.args_model.model_validate(dict(args))
        except ValidationError as exc:
            raise InvalidSkillArgsError(self.name, format_validation_error(exc)) from None

    def signature(self) -> str:
        """Compact one-line form for prompts: ``name(arg: type, ...) - description``."""
        schema = self.args_schema()
        required = set(schema.get("required", ()))
        params = []
        for arg, prop in schema.get("properties", {}).items():
            kind = _type_name(prop)
            params.append(f"{arg}: {kind}" if arg in required else f"{arg}?: {kind}")
        return f"{self.name}({', '.join(params)}) - {self.description.strip()}"


def skill_catalogue(skills: Iterable[SkillSpec]) -> dict[str, SkillSpec]:
    """Skills by name; duplicate names are a :class:`SkillDefinitionError`."""
    catalogue: dict[str, SkillSpec] = {}
    for spec in skills:
        if spec.name in catalogue:
            raise SkillDefinitionError(f"two skills are named {spec.name!r}: names must be unique")
        catalogue[spec.name] = spec
    return catalogue


def _type_name(prop: Mapping[str, Any]) -> str:
    if "enum" in prop:
        return "|".join(json.dumps(v) for v in prop["enum"])
    if "anyOf" in prop:
        return "|".join(_type_name(p) for p in prop["anyOf"])
    kind = prop.get("type")
    if kind == "array" and isinstance(prop.get("items"), Mapping):
        return f"list[{_type_name(prop['items'])}]"
    if isinstance(kind, str):
        return {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}.get(
            kind, kind
        )
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    return "any"


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: _strip_titles(v)
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema
