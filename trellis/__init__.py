"""Trellis: an agentic task-planning runtime with adapter-routed LLMs.

The front door for apps. The four runtime packages are reachable as ``trellis.memory``
(the Task Memory Tree), ``trellis.adapters`` (LLM backends, registry, router),
``trellis.planners`` (plans, cues, past successes) and ``trellis.agent`` (the loop, the SDK,
traces, the service)::

    from trellis import Agent, skill
"""

from trellis.adapters import FunctionBackend, LLMBackend, LLMRequest, LLMResult
from trellis.agent import (
    Agent,
    AgentConfig,
    AgentEvent,
    Environment,
    EnvironmentPack,
    EnvSpec,
    EnvState,
    Fact,
    GoalPart,
    RunResult,
    Skill,
    SkillContext,
    SkillOutcome,
    TaskTree,
    skill,
)
from trellis.memory import NodeStatus, TaskStatus, TaskStore
from trellis.memory.errors import ModelRetry, RuntimeFailure, TrellisError, UsageError
from trellis.planners import ScriptedPlanner

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentEvent",
    "EnvSpec",
    "EnvState",
    "Environment",
    "EnvironmentPack",
    "Fact",
    "FunctionBackend",
    "GoalPart",
    "LLMBackend",
    "LLMRequest",
    "LLMResult",
    "ModelRetry",
    "NodeStatus",
    "RunResult",
    "RuntimeFailure",
    "ScriptedPlanner",
    "Skill",
    "SkillContext",
    "SkillOutcome",
    "TaskStatus",
    "TaskStore",
    "TaskTree",
    "TrellisError",
    "UsageError",
    "skill",
]
