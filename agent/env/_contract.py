"""The environment contract: what a world (a game, a robot, an app) gives the runtime.

A world lives in a *pack* outside the runtime. The pack names its ``kind``, the spec model
that fully determines one episode (rebuilt from the JSON that tasks and traces record),
and how to create the environment for a spec. The loop only ever sees this contract:

- :class:`EnvSpec`: frozen pydantic model; ``kind`` is a class variable; ``record()`` is
  the JSON stored with the task; the pack's ``from_record`` rebuilds it.
- :class:`Environment`: ``reset()``, ``step(action)``, ``state``, ``close()``, and
  ``replay(actions)`` (reset, then each action: how a resumed or replayed task gets its
  world back). Optional hooks, with neutral defaults: ``offered_actions(state)`` (the
  pack's own filters over the valid actions), ``prompt_notes(state)`` (state lines for
  the act prompt), ``observed_facts(state)`` (structured facts for the task's memory) and
  ``goal_parts(state)`` (the parts of the goal, worked on one at a time).
- :class:`EnvState`: observation, valid actions, score, done, success, failure, moves,
  the world's own statement of the goal. Success is always judged by the world.
- :class:`EnvironmentPack`: the registration, found through the entry-point group
  ``trellis.environments`` or passed as ``Agent(environments=[...])``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trellis.agent.errors import EnvironmentFailure, InvalidEnvSpecError

__all__ = [
    "EnvSpec",
    "EnvState",
    "Environment",
    "EnvironmentPack",
    "Fact",
    "GoalPart",
]


class EnvSpec(BaseModel):
    """Everything needed to rebuild one episode of a world. Subclass it per pack.

    Subclasses set the class variable ``kind`` and declare their fields with a docstring
    each; the spec is frozen and refuses unknown fields, so a recorded spec means exactly
    one episode.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ClassVar[str] = ""
    """The pack's name (``trellis run --env KIND``); set by each subclass."""

    def record(self) -> dict[str, Any]:
        """The JSON a task or trace stores: ``{"kind": ..., **fields}``."""
        return {"kind": self.kind, **self.model_dump(mode="json")}


class Fact(BaseModel):
    """One thing the world showed, as (subject, relation, object): "kitchen" "exit west"
    "pantry", "fork" "in" "dishwasher". The task's memory keeps the latest object of each
    (subject, relation) pair."""

    model_config = ConfigDict(frozen=True)

    subject: str = Field(min_length=1, max_length=200)
    """What the fact is about."""
    relation: str = Field(min_length=1, max_length=100)
    """How the subject relates to the object."""
    object: str = Field(max_length=500)
    """The value (empty: the relation no longer holds)."""


class GoalPart(BaseModel):
    """One part of a world's goal (an object to put away, an ingredient to prepare), as the
    world sees it now. The runtime keeps a node per part and works through them in order."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(min_length=1, max_length=100)
    """Stable within the task: the same part keeps its key as the world changes."""
    title: str = Field(min_length=1, max_length=200)
    """What achieving the part means, in a few words (shown in the act prompt)."""
    done: bool = False
    """The world judges the part achieved."""


class EnvState(BaseModel):
    """What the world shows after the last action."""

    model_config = ConfigDict(frozen=True)

    observation: str
    """Text the world printed for the last action (or at the start)."""
    valid_actions: list[str]
    """Actions the world accepts now."""
    task_description: str = ""
    """The world's own statement of the goal (the task's goal when none is given)."""
    score: float = 0.0
    """Progress in [0, 1] as the world scores it."""
    success: bool = False
    """The world judges the task achieved."""
    failure: bool = False
    """The world judges the task failed (broken object, move limit hit)."""
    done: bool = False
    """No more actions are possible."""
    moves: int = 0
    """Actions taken so far."""
    move_limit: int | None = None
    """The world's own move limit, when it has one (the default action budget of a task)."""


class Environment(ABC):
    """One episode of a world, fully determined by its spec and its action history."""

    spec: EnvSpec

    @abstractmethod
    def reset(self) -> EnvState:
        """Start the episode from the beginning."""

    @abstractmethod
    def step(self, action: str) -> EnvState:
        """Take one action. An action the world does not accept now raises
        :class:`EnvironmentFailure` naming the valid ones; the state is unchanged."""

    @property
    @abstractmethod
    def state(self) -> EnvState:
        """The current state (starts the episode on first use)."""

    def replay(self, actions: Sequence[str]) -> EnvState:
        """Reset, then take ``actions`` in order: the state a task had after them."""
        state = self.reset()
        for action in actions:
            state = self.step(action)
        return state

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the episode holds (processes, bridges, handles)."""

    # --- optional hooks ------------------------------------------------------------------

    def offered_actions(self, state: EnvState) -> list[str]:
        """The actions the act step may choose from now: the pack's own filters over
        ``state.valid_actions`` (never empty while the world accepts an action)."""
        return list(state.valid_actions)

    def prompt_notes(self, state: EnvState) -> list[str]:
        """State lines shown after the observation in the act prompt."""
        return []

    def observed_facts(self, state: EnvState) -> list[Fact]:
        """Structured facts the last step revealed, kept in the task's memory."""
        return []

    def goal_parts(self, state: EnvState) -> list[GoalPart]:
        """The parts of the goal known now, in the order to work on them (none: the goal is
        worked on as a whole)."""
        return []

    def refuse(self, action: str, state: EnvState) -> None:
        """Raise the standard error for an action the world does not accept now."""
        shown = ", ".join(state.valid_actions[:40])
        more = len(state.valid_actions) - 40
        if more > 0:
            shown += f", ... ({more} more)"
        raise EnvironmentFailure(
            f"{action[:200]!r} is not a valid action now; valid actions: {shown}"
        )


@dataclass(frozen=True)
class EnvironmentPack:
    """A world's registration with the runtime.

    A pack module exposes one of these; its distribution registers it under the
    entry-point group ``trellis.environments`` (``kind = "module:attribute"``).
    """

    spec: type[EnvSpec]
    """The spec model (its ``kind`` names the pack)."""
    create: Callable[[EnvSpec], Environment]
    """A fresh, not yet started environment for a spec."""
    description: str = ""
    """One line for ``trellis envs list``."""
    action_skill: str = ""
    """Name of the skill that sends one action (default ``<kind>_act``); recorded traces
    and tasks name it, so it never changes once a pack is published."""
    action_description: str = ""
    """What the action skill does, as the catalogue and traces show it (default: "Send one
    action to the <kind> environment and return what it shows next.")."""
    from_record_hook: Callable[[Mapping[str, Any]], EnvSpec] | None = None
    """Rebuilds a spec from recorded JSON when that needs more than validation (fields
    added after older records were made); default: validate the fields."""
    adapters_dir: Path | None = None
    """A folder of shipped LoRA adapters (each with a ``trellis_adapter.json`` manifest)
    that the pack brings; they register like the runtime's own shipped adapters."""
    cli: Callable[[], Any] | None = None
    """Returns a ``typer.Typer`` of data commands, mounted as ``trellis data KIND``."""
    examples: Callable[[], Sequence[EnvSpec]] | None = None
    """Small specs the conformance suite and ``trellis envs list`` use."""
    refused_records: tuple[Mapping[str, Any], ...] = ()
    """Recorded specs the pack must refuse (held-out folds): the conformance suite checks
    each raises a :class:`~trellis.memory.errors.UsageError`."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Anything else the pack wants to expose to its own tools."""

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def skill_name(self) -> str:
        return self.action_skill or f"{self.kind}_act"

    def from_record(self, record: Mapping[str, Any]) -> EnvSpec:
        """The spec a task or trace recorded; :class:`InvalidEnvSpecError` when it does
        not validate (the message names the pack and the field)."""
        recorded_kind = record.get("kind", self.kind)
        if recorded_kind != self.kind:
            raise InvalidEnvSpecError(
                f"a {recorded_kind!r} spec was given to the {self.kind!r} pack"
            )
        data = {key: value for key, value in record.items() if key != "kind"}
        try:
            if self.from_record_hook is not None:
                return self.from_record_hook(data)
            return self.spec.model_validate(data)
        except ValidationError as exc:
            raise InvalidEnvSpecError(_spec_problem(self.kind, exc)) from exc

    def new_spec(self, fields: Mapping[str, Any]) -> EnvSpec:
        """A new spec from some of its fields, today's defaults for the rest (unlike
        :meth:`from_record`, which reads a past record as it was made: a field the record
        lacks may mean a rule that did not exist yet); :class:`InvalidEnvSpecError` when it
        does not validate."""
        data = {key: value for key, value in fields.items() if key != "kind"}
        try:
            return self.spec.model_validate(data)
        except ValidationError as exc:
            raise InvalidEnvSpecError(_spec_problem(self.kind, exc)) from exc

    def validate_spec(self, spec: Any) -> EnvSpec:
        """``spec`` as this pack's spec: an instance, or a mapping of its fields."""
        if isinstance(spec, self.spec):
            return spec
        if isinstance(spec, Mapping):
            return self.from_record(spec)
        raise InvalidEnvSpecError(
            f"the {self.kind!r} pack takes a {self.spec.__name__} (or a mapping of its "
            f"fields), got {type(spec).__name__}"
        )


def _spec_problem(kind: str, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'spec'}: {error['msg']}"
        for error in exc.errors()[:5]
    )
    return f"the {kind!r} environment spec does not validate ({problems}); fix those fields"
