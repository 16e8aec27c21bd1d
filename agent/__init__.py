"""The agent: skills, the LangGraph loop, the SDK, the CLI and the service."""

from agent._act import ChosenCall, act_json_schema, build_act_prompt, choose_call
from agent._config import AgentConfig
from agent._eval import (
    Comparison,
    EvalRun,
    TaskEval,
    compare_runs,
    evaluate,
    evaluate_sync,
    load_run,
)
from agent._events import (
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
from agent._queue import QueuedTask, QueueState, TaskQueue
from agent._replay import Divergence, Replayer, ReplayResult, replay, replay_many, replay_sync
from agent._replay_check import check_trace
from agent._sdk import Agent, RunResult, TaskTree
from agent._service_errors import (
    LeaseLostError,
    ServiceConfigError,
    TaskStateError,
    UnknownProfileError,
)
from agent._service_profiles import Profile, available_profiles, register_profile
from agent._service_settings import DemoProfileConfig, ServiceSettings
from agent._skills import Skill, SkillContext, SkillOutcome, SkillRegistry, skill
from agent._trace import Trace, read_trace
from agent._trace_io import MemoryTraceSink, TraceWriter
from agent._trace_record import TraceRecorder
from agent._trace_store import TraceStore
from agent._twc import TWC_ACT, TwcConfig, TwcEnvironment, TwcState, twc_skills
from agent.errors import (
    ApprovalPendingError,
    BudgetExhaustedError,
    EnvironmentFailure,
    ForbiddenFoldError,
    NoPendingApprovalError,
    SkillFailedError,
    SkillResultNotSerializableError,
    SkillTimeoutError,
    TraceFormatError,
    TraceVersionError,
    UnknownSkillError,
)

__all__ = [
    "TWC_ACT",
    "Agent",
    "AgentConfig",
    "AgentEvent",
    "ApprovalPendingError",
    "ApprovalRequested",
    "BudgetExhaustedError",
    "ChosenCall",
    "Comparison",
    "CuesMade",
    "DemoProfileConfig",
    "Divergence",
    "EnvironmentFailure",
    "EvalRun",
    "EventBase",
    "ForbiddenFoldError",
    "LLMCall",
    "LLMToken",
    "LeaseLostError",
    "MemoryTraceSink",
    "NoPendingApprovalError",
    "NodeStatusChanged",
    "PlanMade",
    "Profile",
    "QueueState",
    "QueuedTask",
    "ReplayResult",
    "Replayer",
    "RouteDecided",
    "RunResult",
    "ServiceConfigError",
    "ServiceSettings",
    "Skill",
    "SkillCalled",
    "SkillContext",
    "SkillFailedError",
    "SkillFinished",
    "SkillOutcome",
    "SkillRegistry",
    "SkillResultNotSerializableError",
    "SkillTimeoutError",
    "TaskEval",
    "TaskFinished",
    "TaskQueue",
    "TaskStarted",
    "TaskStateError",
    "TaskTree",
    "Trace",
    "TraceFormatError",
    "TraceRecorder",
    "TraceStore",
    "TraceVersionError",
    "TraceWriter",
    "TwcConfig",
    "TwcEnvironment",
    "TwcState",
    "UnknownProfileError",
    "UnknownSkillError",
    "act_json_schema",
    "available_profiles",
    "build_act_prompt",
    "check_trace",
    "choose_call",
    "compare_runs",
    "evaluate",
    "evaluate_sync",
    "load_run",
    "read_trace",
    "register_profile",
    "replay",
    "replay_many",
    "replay_sync",
    "skill",
    "twc_skills",
]
