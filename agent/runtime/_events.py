"""Typed events a run emits: the one event vocabulary of progress display, the service and traces.

Every event carries ``task_id``, ``at`` and a ``type`` tag, so a consumer can dispatch on the
tag or on the class. :data:`AgentEvent` is the discriminated union (``TypeAdapter(AgentEvent)``
parses an event from its JSON form).

A trace (:mod:`trellis.agent.traces`) records these same events, with the same tags and
fields: each trace event class extends the class here with its place in the trace (``seq``,
``t``) and what replay needs beyond the stream (the prompt and text of a model call, the
plan's raw answers, the final tree). ``isinstance(trace_event, SkillCalled)`` holds.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AgentEvent",
    "ApprovalRequested",
    "CuesMade",
    "EventBase",
    "LLMCall",
    "LLMToken",
    "NodeStatusChanged",
    "PlanMade",
    "RouteDecided",
    "SkillCalled",
    "SkillFinished",
    "TaskFinished",
    "TaskStarted",
]


class EventBase(BaseModel):
    """Fields every event has."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    task_id: str
    """The task (and LangGraph thread) this event belongs to."""
    at: float = Field(default_factory=time.time)
    """Unix time the event was produced."""


class TaskStarted(EventBase):
    """A run started or resumed."""

    type: Literal["task_started"] = "task_started"
    goal: str
    """The task's goal."""
    resumed: bool = False
    """True when continuing from a checkpoint."""


class CuesMade(EventBase):
    """Reminders turned into cues for the planner."""

    type: Literal["cues_made"] = "cues_made"
    cues: list[str]
    """The cues, as the planner reads them."""
    standing: list[dict[str, Any]] = []
    """The user's stored cues among them (``Cue`` records), so that a replay holds the same."""


class PlanMade(EventBase):
    """The planner added steps under a node."""

    type: Literal["plan_made"] = "plan_made"
    parent_id: int | None
    """The node the steps were added under (the root, a decomposed step or a replanned node);
    None only in a trace, for a plan that failed before any model call named its node."""
    node_ids: list[int]
    """The new nodes, in plan order."""
    titles: list[str]
    """Their titles."""
    replan: bool = False
    """True when this plan replaces a failed part of the tree."""


class NodeStatusChanged(EventBase):
    """A tree node changed status."""

    type: Literal["node_status"] = "node_status"
    node_id: int
    """The node."""
    title: str
    """Its title."""
    status: str
    """The new status (a ``memory.NodeStatus`` value)."""
    error: str | None = None
    """Why it failed, for failed nodes."""


class RouteDecided(EventBase):
    """The router chose an adapter (or the base model) for a node."""

    type: Literal["route"] = "route"
    node_id: int
    """The node being routed."""
    adapter: str | None
    """The chosen adapter; None means the base model."""
    score: float | None = None
    """The router's score for the choice."""
    reason: str = ""
    """Why (policy, threshold, out-of-distribution)."""


class LLMCall(EventBase):
    """One model call finished."""

    type: Literal["llm_call"] = "llm_call"
    node_id: int | None
    """The node it served (None for planning the root)."""
    stage: str
    """Which loop stage called it: remind, plan or act."""
    adapter: str | None
    """The adapter that served it (None: the base model)."""
    why: str = ""
    """Why that adapter: the router's reason (act), or the stage's own adapter (plan,
    remind)."""
    prompt_tokens: int
    """Prompt tokens."""
    completion_tokens: int
    """Generated tokens."""
    latency_s: float
    """Seconds the call took."""


class LLMToken(EventBase):
    """Generated text as it is produced (one event per generation when not streamed)."""

    type: Literal["llm_token"] = "llm_token"
    node_id: int | None
    """The node it serves."""
    stage: str
    """Which stage is generating."""
    text: str
    """The text piece."""


class SkillCalled(EventBase):
    """A skill call is about to run."""

    type: Literal["skill_called"] = "skill_called"
    node_id: int
    """The node being executed."""
    skill: str
    """The skill."""
    args: dict[str, Any]
    """Its validated arguments."""


class SkillFinished(EventBase):
    """A skill call ended (or its earlier result was reused on resume)."""

    type: Literal["skill_finished"] = "skill_finished"
    node_id: int
    """The node."""
    skill: str
    """The skill."""
    ok: bool
    """Whether it succeeded."""
    result: Any = None
    """Its JSON result."""
    error: str | None = None
    """The recorded error, when it failed."""
    duration_s: float = 0.0
    """Seconds it ran."""
    reused: bool = False
    """True when a resumed run took the recorded result instead of calling again."""


class ApprovalRequested(EventBase):
    """The run paused: a human must approve or reject a call."""

    type: Literal["approval_requested"] = "approval_requested"
    node_id: int
    """The node whose call waits."""
    skill: str
    """The skill."""
    args: dict[str, Any]
    """The arguments it would run with."""


class TaskFinished(EventBase):
    """The run ended (finished, failed, out of budget, or paused for approval)."""

    type: Literal["task_finished"] = "task_finished"
    outcome: Literal["success", "failed", "budget_exhausted", "interrupted"]
    """How it ended; ``interrupted`` means paused for an approval."""
    success: bool
    """True when the goal was achieved (for environments: as the environment judges it)."""
    steps: int
    """Skill calls made (act steps)."""
    replans: int
    """Times the planner repaired the tree."""
    adapters: list[str]
    """Adapters used (``base`` for the base model)."""
    prompt_tokens: int
    """Prompt tokens over all model calls."""
    completion_tokens: int
    """Generated tokens over all model calls."""
    elapsed_s: float
    """Seconds spent in the loop (over every resume)."""
    reason: str = ""
    """Why it ended, in words."""


AgentEvent = Annotated[
    TaskStarted
    | CuesMade
    | PlanMade
    | NodeStatusChanged
    | RouteDecided
    | LLMCall
    | LLMToken
    | SkillCalled
    | SkillFinished
    | ApprovalRequested
    | TaskFinished,
    Field(discriminator="type"),
]
"""Any event a run emits."""
