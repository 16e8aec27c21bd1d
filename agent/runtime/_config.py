"""Configuration of the agent loop and the SDK."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    env_budget: Literal["world", "max_steps"] = "world"
    """An environment task's action budget: ``world`` takes the world's own move limit when
    its state states one (``max_steps`` otherwise); ``max_steps`` always takes
    ``max_steps``. Giving ``max_steps`` without this field means ``max_steps``."""
    world_memory_chars: int = Field(default=700, ge=0, le=20_000)
    """Size budget of the world memory (what the environment has shown so far, from the
    tree) in an environment move's prompt; 0 leaves it out."""
    offer_filter: bool = True
    """Offer an environment move the actions the pack's ``offered_actions`` keeps (its own
    filters); False offers every valid action (the model chooses among all of them)."""
    part_moves: int = Field(default=12, ge=1, le=1000)
    """Moves one part of an environment goal may take without the world judging it done
    before the runtime turns to another part (the part fails; it is tried again later)."""
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
    past_cases: bool = True
    """Learn from past successes: a task that succeeds stores its plan as a case of its
    user, and planning a new goal shows the most similar cases as examples. On by default
    with the default planner; another planner takes them with ``Agent(cases=...)``."""
    case_examples: int = Field(default=2, ge=0, le=8)
    """Most past cases shown to the planner per plan (0: store cases, show none)."""
    shared_steps: int = Field(default=12, ge=0, le=50)
    """Most steps of other branches a sub-plan or a replan is offered to wait for (the
    latest that cannot close a cycle; ``depends_on`` names them ``"task.3"``). 0 offers none:
    a sub-plan then orders only its own steps."""

    @model_validator(mode="before")
    @classmethod
    def _budget_from_max_steps(cls, data: Any) -> Any:
        # A caller who sets max_steps means it, for environment tasks too.
        if isinstance(data, dict) and "max_steps" in data and "env_budget" not in data:
            return {**data, "env_budget": "max_steps"}
        return data
