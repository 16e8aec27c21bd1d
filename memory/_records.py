"""Snapshots returned by the store, node specs accepted by it, and the node state machine.

Records are frozen dataclasses read out of a finished transaction: never live ORM objects,
so they can be passed between threads, cached and compared freely.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "SATISFIED",
    "TERMINAL",
    "TRANSITIONS",
    "EventRecord",
    "MemoryConfig",
    "NodeRecord",
    "NodeSpec",
    "NodeStatus",
    "TaskRecord",
    "TaskStatus",
    "allowed_next",
    "replay_events",
]


class NodeStatus(enum.StrEnum):
    """Where a node is in its life."""

    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class TaskStatus(enum.StrEnum):
    """Where a whole task is in its life (set by the agent; not state-machined)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


# The node state machine. FAILED -> PENDING is the retry path; DONE, SKIPPED and CANCELLED
# are terminal (replanning supersedes nodes instead of reopening them).
TRANSITIONS: dict[NodeStatus, frozenset[NodeStatus]] = {
    NodeStatus.PENDING: frozenset(
        {NodeStatus.READY, NodeStatus.RUNNING, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
    ),
    NodeStatus.READY: frozenset(
        {NodeStatus.PENDING, NodeStatus.RUNNING, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
    ),
    NodeStatus.RUNNING: frozenset({NodeStatus.DONE, NodeStatus.FAILED, NodeStatus.CANCELLED}),
    NodeStatus.FAILED: frozenset({NodeStatus.PENDING, NodeStatus.SKIPPED, NodeStatus.CANCELLED}),
    NodeStatus.DONE: frozenset(),
    NodeStatus.SKIPPED: frozenset(),
    NodeStatus.CANCELLED: frozenset(),
}

TERMINAL = frozenset({NodeStatus.DONE, NodeStatus.SKIPPED, NodeStatus.CANCELLED})

# A dependency in one of these states no longer blocks its dependents.
SATISFIED = frozenset({NodeStatus.DONE, NodeStatus.SKIPPED})

_ORDER = list(NodeStatus)


def allowed_next(status: NodeStatus) -> list[str]:
    """The states a node in ``status`` may move to, in declaration order."""
    return [s.value for s in _ORDER if s in TRANSITIONS[status]]


class MemoryConfig(BaseModel):
    """Limits and defaults of the Task Memory Tree."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_payload_bytes: int = Field(default=1_000_000, ge=64)
    """Largest JSON size (bytes, UTF-8) of one node input, output, route, error or task metadata."""
    max_title_chars: int = Field(default=2_000, ge=1)
    """Longest node title or task goal accepted."""
    insert_batch_size: int = Field(default=5_000, ge=1)
    """Rows per executemany batch when adding many nodes at once."""


class NodeSpec(BaseModel):
    """A node to add: its step id (``key``), what to do, and what it waits for.

    ``depends_on`` entries are either keys of siblings in the same batch (strings) or ids of
    existing nodes of the same task (integers). ``children`` adds a whole subtree at once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1, max_length=200)
    """The planner's step id; unique among the live children of one parent."""
    title: str = ""
    """What the step is, in words (shown in prompts and renders)."""
    kind: str = Field(default="step", min_length=1, max_length=32)
    """``goal``, ``step``, ``decompose`` or any label the planner uses."""
    input: Any = None
    """JSON arguments of the step (skill arguments, for example)."""
    depends_on: list[str | int] = Field(default_factory=list)
    """Sibling keys (str) or existing node ids (int) that must finish first."""
    adapter: str | None = None
    """Adapter chosen up front, if the planner already knows it."""
    children: list[NodeSpec] = Field(default_factory=list)
    """Sub-steps, added in the same transaction."""

    @field_validator("depends_on", mode="before")
    @classmethod
    def _no_bools(cls, value: Any) -> Any:
        # bool is an int subclass: True would silently mean node id 1.
        if isinstance(value, list | tuple) and any(isinstance(v, bool) for v in value):
            raise ValueError("depends_on takes sibling keys (str) or node ids (int), not bools")
        return value


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task as stored."""

    id: str
    goal: str
    user_id: str
    status: TaskStatus
    metadata: Any
    root_id: int | None
    created_at: datetime
    updated_at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A node as stored, with the ids of the nodes it depends on."""

    id: int
    task_id: str
    parent_id: int | None
    key: str
    kind: str
    title: str
    status: NodeStatus
    input: Any
    output: Any
    error: str | None
    adapter: str | None
    route: Any
    attempts: int
    position: int
    depth: int
    superseded: bool
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    version: int
    depends_on: tuple[int, ...] = field(default=())

    @property
    def is_terminal(self) -> bool:
        """True once the node can no longer change status."""
        return self.status in TERMINAL


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One change: ``field`` went from ``old`` to ``new`` because of ``cause``.

    ``field`` is ``created`` (``new`` is the first snapshot), a node column (``status``,
    ``output``, ...), ``depends_on`` (sorted id lists) or ``task.<column>`` for task changes.
    """

    id: int
    task_id: str
    node_id: int | None
    field: str
    old: Any
    new: Any
    cause: str | None
    at: datetime


# Fields that replaying the history reproduces exactly.
REPLAYED_FIELDS = (
    "parent_id",
    "key",
    "kind",
    "title",
    "status",
    "input",
    "output",
    "error",
    "adapter",
    "route",
    "attempts",
    "superseded",
    "depends_on",
)


def replay_events(events: list[EventRecord]) -> dict[int, dict[str, Any]]:
    """Rebuild every node's state (the ``REPLAYED_FIELDS``) from its event history alone."""
    nodes: dict[int, dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: e.id):
        if event.node_id is None:
            continue
        if event.field == "created":
            nodes[event.node_id] = {name: event.new.get(name) for name in REPLAYED_FIELDS}
            nodes[event.node_id]["depends_on"] = sorted(event.new.get("depends_on") or [])
        elif event.node_id in nodes and event.field in REPLAYED_FIELDS:
            nodes[event.node_id][event.field] = event.new
    return nodes


def snapshot_fields(record: NodeRecord) -> dict[str, Any]:
    """The ``REPLAYED_FIELDS`` of a record, comparable with :func:`replay_events` output."""
    values = {name: getattr(record, name) for name in REPLAYED_FIELDS}
    values["status"] = record.status.value
    values["depends_on"] = sorted(record.depends_on)
    return values
