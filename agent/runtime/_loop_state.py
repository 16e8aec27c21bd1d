"""The loop's checkpointed state and the dependencies its stages share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypedDict

from trellis.adapters import LLMBackend
from trellis.agent.env import Environment
from trellis.agent.runtime._calls import SkillCallLog
from trellis.agent.runtime._config import AgentConfig
from trellis.agent.runtime._events import EventBase
from trellis.agent.runtime._skills import SkillRegistry
from trellis.memory import TaskStore
from trellis.memory.errors import RuntimeFailure, TrellisError

__all__ = [
    "EventSink",
    "LoopDeps",
    "LoopState",
    "ending",
    "registry_error",
    "require",
]


class LoopState(TypedDict, total=False):
    """The checkpointed state: ids and counters (the tree holds everything else)."""

    task_id: str
    cues: list[dict[str, Any]]
    next: str
    node_id: int | None
    plan_target: int | None
    failed_node: int | None
    adapter: str | None
    attempt: int
    call: dict[str, Any] | None
    decision: str | None
    steps: int
    replans: int
    elapsed_s: float
    prompt_tokens: int
    completion_tokens: int
    adapters: list[str]
    result: dict[str, Any] | None


class EventSink(Protocol):
    """Where a task's events go. ``put`` may only buffer; ``flush`` delivers what is
    buffered. The loop flushes before it waits on something slow (a model, a skill, a
    human) and after every superstep, so a consumer is woken once per burst of events."""

    def put(self, event: EventBase) -> None: ...

    def flush(self) -> None: ...


STANDING_CUES_KEY = "standing_cues"
"""Task metadata: the user's stored cues in force when the task was created (``Cue`` records)."""


class LoopDeps:
    """Everything the stages use; one per agent, shared by its tasks."""

    def __init__(
        self,
        *,
        store: TaskStore,
        skills: SkillRegistry,
        backend: LLMBackend,
        planner: Any,
        router: Any,
        reminder_adapter: Any,
        config: AgentConfig,
        env_factory: Callable[[dict[str, Any]], tuple[Environment, str]] | None,
        skill_context: dict[str, Any],
    ) -> None:
        self.store = store
        self.skills = skills
        self.backend = backend
        self.planner = planner
        self.router = router
        self.reminder_adapter = reminder_adapter
        self.config = config
        self.env_factory = env_factory
        self.skill_context = skill_context
        self.calls = SkillCallLog(store.engine)
        self.sinks: dict[str, EventSink] = {}
        self.envs: dict[str, tuple[Environment, str]] = {}
        self.no_env: set[str] = set()
        self.prune: Callable[[str, int], None] | None = None
        """Set by the graph: keep only the newest N checkpoints of a task."""
        self.cases: Any = None
        """The users' past successes (``trellis.planners.CaseMemory``): retrieved as examples
        for root plans and settled when a task ends; None plans without examples."""
        self.standing_cues: Callable[[str, str | None], list[Any]] | None = None
        """(user id, task id) -> the user's stored cues in force; None: the ``CueStore`` in
        the task's database (a replay gives the cues its trace recorded)."""


def require(node_id: int | None) -> int:
    # The graph's edges only lead to these stages with a node selected.
    if node_id is None:
        raise RuntimeFailure("the loop reached a node stage without a selected node")
    return node_id


def ending(outcome: str, reason: str) -> dict[str, Any]:
    return {"outcome": outcome, "reason": reason}


def registry_error(registry: SkillRegistry, name: str) -> dict[str, Any]:
    """The recorded error for a skill name that is not registered."""
    try:
        registry.get(name)
    except TrellisError as exc:
        return {"error": str(exc), "error_type": type(exc).__name__}
    return {}
