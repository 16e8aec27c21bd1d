"""The runtime: skills, the LangGraph loop and its stages, the SDK, checkpoints, defaults."""

from trellis.agent.runtime._act import (
    ChosenCall,
    act_json_schema,
    build_act_prompt,
    choose_call,
    env_act_prompt_args,
    offered_actions,
    world_memory_text,
)
from trellis.agent.runtime._checkpoint import open_checkpointer
from trellis.agent.runtime._config import AgentConfig
from trellis.agent.runtime._defaults import (
    default_backend,
    default_planner,
    default_registry,
    default_reminder_adapter,
    default_router,
)
from trellis.agent.runtime._env_skill import action_skill
from trellis.agent.runtime._events import (
    AgentEvent,
    ApprovalRequested,
    CuesMade,
    EventBase,
    LLMCall,
    LLMToken,
    NodeStatusChanged,
    PlanMade,
    RouteDecided,
    SkillCalled,
    SkillFinished,
    TaskFinished,
    TaskStarted,
)
from trellis.agent.runtime._sdk import Agent, RunResult, TaskTree, set_trace_recorder
from trellis.agent.runtime._settings_file import FileSettingsSource, read_settings_file
from trellis.agent.runtime._skills import (
    Skill,
    SkillContext,
    SkillLike,
    SkillOutcome,
    SkillRegistry,
    skill,
    skills_from_module,
    to_json_value,
)

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentEvent",
    "ApprovalRequested",
    "ChosenCall",
    "CuesMade",
    "EventBase",
    "FileSettingsSource",
    "LLMCall",
    "LLMToken",
    "NodeStatusChanged",
    "PlanMade",
    "RouteDecided",
    "RunResult",
    "Skill",
    "SkillCalled",
    "SkillContext",
    "SkillFinished",
    "SkillLike",
    "SkillOutcome",
    "SkillRegistry",
    "TaskFinished",
    "TaskStarted",
    "TaskTree",
    "act_json_schema",
    "action_skill",
    "build_act_prompt",
    "choose_call",
    "default_backend",
    "default_planner",
    "default_registry",
    "default_reminder_adapter",
    "default_router",
    "env_act_prompt_args",
    "offered_actions",
    "open_checkpointer",
    "read_settings_file",
    "set_trace_recorder",
    "skill",
    "skills_from_module",
    "to_json_value",
    "world_memory_text",
]
