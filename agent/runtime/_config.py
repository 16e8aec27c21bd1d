"""Configuration of the agent loop and the SDK."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AgentConfig"]


class AgentConfig(BaseModel):
    """How an :class:`~agent.Agent` runs tasks. Every field has a safe default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str | None = None
    """Trellis database (tree, checkpoints, call records). None: ``trellis.db`` in TRELLIS_HOME."""
    shipped_adapters: bool | None = None
    """Use the shipped adapters: Trellis's own (``reminder`` for reminder cues) and those an
    installed environment pack brings for its action skill. None: with the default embedded backend only; True: with
    any backend (it must load adapters by name, e.g. ``resolve_adapter_path=registry.path_of``);
    False: never (the base model serves unless you register adapters)."""
    max_steps: int = Field(default=30, ge=1, le=10_000)
    """Skill calls (act steps) a task may make before it stops as ``budget_exhausted``."""
    max_replans: int = Field(default=3, ge=0, le=1_000)
    """Times the planner may repair a failed step before the task fails."""
    wall_time_s: float = Field(default=900.0, gt=0)
    """Seconds a task may spend in the loop, summed over every resume."""
    durability: Literal["sync", "async", "exit"] = "sync"
    """LangGraph checkpoint durability. ``sync`` persists every step before the next starts
    (needed for crash safety); ``exit`` only at the end of a run."""
    keep_checkpoints: int | None = Field(default=1, ge=0)
    """Checkpoints kept per finished task (0 deletes them, None keeps every one)."""
    keep_checkpoints_running: int | None = Field(default=20, ge=2)
    """While a task runs, older checkpoints beyond this many are pruned (None: never)."""
    prune_every_steps: int = Field(default=10, ge=1)
    """How often (in act steps) running tasks are pruned."""
    act_max_tokens: int = Field(default=40, ge=4, le=1024)
    """Token limit of one act answer (a JSON skill call or environment action)."""
    act_attempts: int = Field(default=2, ge=1, le=5)
    """Model answers tried per act step before the step fails."""
    llm_timeout_s: float = Field(default=300.0, gt=0)
    """Wall-clock limit of one model call."""
    use_plan_args: bool = True
    """Run a plan step's arguments directly when they validate (no act model call)."""
    context_chars: int = Field(default=600, ge=0)
    """Size budget of the Task Memory Tree context put into act prompts."""
