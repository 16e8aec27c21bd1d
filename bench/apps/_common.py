"""Shared types of the app worlds: :class:`AppWorld`, :class:`Goal` and the ``WORLDS`` registry.

An app world is what an app developer brings to Trellis: a plain Python class holding the
state of their world, a handful of typed ``@skill`` functions that act on it, and goals as a
user would type them. The skills find their world in the skill context::

    world = Kitchen.fresh()
    agent = Agent(skills=Kitchen.skills(), skill_context=world.context())
    agent.run(goal.text, reminders=goal.reminders)
    ok, broken = goal.judge(world)

Success is judged from the world's own state and its action log only, never from what the
runtime reports. ``split`` says what a world may be used for: rows for training adapters may
come from ``train`` worlds; ``dev`` worlds are never used for training or tuning.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, Literal, Self, TypeVar

from trellis import Skill, SkillContext

__all__ = [
    "WORLDS",
    "AppWorld",
    "Call",
    "Goal",
    "Split",
    "get_world",
    "problems",
    "step",
    "world_of",
    "worlds",
]

Split = Literal["train", "dev"]
"""``train``: rows for training adapters may come from the world; ``dev``: never."""

Call = tuple[str, dict[str, Any]]
"""One skill call: ``(skill name, arguments)``; also one entry of a world's action log."""


def _nothing_forbidden(world: Any) -> list[str]:
    del world
    return []


@dataclass(frozen=True, kw_only=True, eq=False)
class Goal:
    """One goal of a world, with its judge and a correct solution."""

    id: str
    """Unique across all worlds: ``<world name>/<slug>``, e.g. ``kitchen/mug-dishwasher``."""
    text: str
    """The goal as a user would type it."""
    reminders: list[str] = field(default_factory=list)
    """The user's standing reminders for this run (preferences, constraints, order)."""
    check: Callable[[Any], bool]
    """``check(world)``: True when the world's state shows the goal achieved."""
    forbidden: Callable[[Any], list[str]] = _nothing_forbidden
    """``forbidden(world)``: the reminder violations visible in the state or the action log."""
    reference: list[Call]
    """A correct sequence of skill calls that achieves the goal and obeys every reminder."""

    def __post_init__(self) -> None:
        if not self.reference:
            raise ValueError(f"goal {self.id!r} has no reference solution; add one")
        if self.reminders and self.forbidden is _nothing_forbidden:
            raise ValueError(
                f"goal {self.id!r} has reminders but no forbidden(); every reminder needs a judge"
            )

    @property
    def steps(self) -> int:
        """Length of the reference solution."""
        return len(self.reference)

    def judge(self, world: AppWorld) -> tuple[bool, list[str]]:
        """``(check(world), forbidden(world))``: success and the reminder violations."""
        return bool(self.check(world)), list(self.forbidden(world))


def step(skill: str, **args: Any) -> Call:
    """One call of a reference solution: ``step("go_to", place="sink")``."""
    return (skill, args)


def problems(*conditions: tuple[bool, str]) -> list[str]:
    """The messages whose condition is true (a compact way to write ``forbidden``)."""
    return [message for broken, message in conditions if broken]


class AppWorld(ABC):
    """Base class of an app world: its state, its skills, its goals.

    Subclasses set ``name`` and ``split``, hold their state as plain attributes (created in
    ``__init__`` so that :meth:`fresh` gives a new world per goal), implement
    :meth:`snapshot`, :meth:`skills` and :meth:`goals`, and call :meth:`record` from every
    skill that changes the world.
    """

    name: ClassVar[str]
    """Short identifier, e.g. ``kitchen``."""
    split: ClassVar[Split]
    """``train`` or ``dev`` (see the module docstring)."""

    def __init__(self) -> None:
        self.log: list[Call] = []
        """What happened, in order: ``(action, details)`` written by the skills."""

    @classmethod
    def fresh(cls) -> Self:
        """A new world in its starting state."""
        return cls()

    @classmethod
    @abstractmethod
    def skills(cls) -> list[Skill]:
        """The skills an app registers for this world (one set serves every instance)."""

    @classmethod
    @abstractmethod
    def goals(cls) -> list[Goal]:
        """The goals of this world (at least ten)."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view of the whole state (for reports and for ``look``-style skills)."""

    def context(self) -> dict[str, Any]:
        """What to pass as ``Agent(skill_context=...)`` so that the skills act on this world."""
        return {"world": self}

    def record(self, action: str, **details: Any) -> None:
        """Append one entry to the action log (skills call this after they change the world)."""
        self.log.append((action, details))

    def events(self, action: str, **match: Any) -> list[int]:
        """Log indices of ``action`` entries whose details include every ``match`` pair."""
        return [
            i
            for i, (name, details) in enumerate(self.log)
            if name == action and all(details.get(k) == v for k, v in match.items())
        ]

    def first(self, action: str, **match: Any) -> int | None:
        """Index of the first matching log entry (see :meth:`events`), or None."""
        found = self.events(action, **match)
        return found[0] if found else None


W = TypeVar("W", bound=AppWorld)


def world_of(ctx: SkillContext, kind: type[W]) -> W:
    """The world a skill acts on: ``ctx.extra["world"]``, checked to be a ``kind``."""
    world = ctx.extra.get("world")
    if not isinstance(world, kind):
        found = "nothing" if world is None else type(world).__name__
        raise LookupError(
            f"this skill acts on a {kind.__name__} world but the skill context holds {found}; "
            f"create the agent with Agent(skill_context={kind.__name__}.fresh().context())"
        )
    return world


WORLDS: tuple[type[AppWorld], ...]
"""Every registered world, train and dev (loaded on first use: the world modules import this
one, so the registry cannot import them at the top)."""

_REGISTRY: tuple[tuple[str, str], ...] = (
    ("kitchen", "Kitchen"),
    ("laundry", "Laundry"),
    ("warehouse", "Warehouse"),
    ("lab", "Lab"),
    ("table", "Table"),
    ("assistant", "Assistant"),
)


@cache
def _load_worlds() -> tuple[type[AppWorld], ...]:
    found: list[type[AppWorld]] = []
    for module_name, class_name in _REGISTRY:
        world = getattr(importlib.import_module(f".{module_name}", __package__), class_name)
        if not (isinstance(world, type) and issubclass(world, AppWorld)):
            raise TypeError(f"{module_name}.{class_name} is not an AppWorld subclass")
        found.append(world)
    return tuple(found)


def worlds(split: Split | None = None) -> list[type[AppWorld]]:
    """Every registered world, or those of one split."""
    return [w for w in _load_worlds() if split is None or w.split == split]


def get_world(name: str) -> type[AppWorld]:
    """The world called ``name``; a ``KeyError`` lists the known names."""
    for world in _load_worlds():
        if world.name == name:
            return world
    known = ", ".join(w.name for w in _load_worlds())
    raise KeyError(f"no app world named {name!r}; known: {known}")


def __getattr__(name: str) -> tuple[type[AppWorld], ...]:
    # ``WORLDS`` is loaded on first use: the world modules import this one.
    if name == "WORLDS":
        return _load_worlds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
