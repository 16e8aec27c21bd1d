"""Planning: plan schema, LLM and scripted planners, validation and repair."""

from trellis.planners._cases import CaseConfig, CaseMemory, EmbedderLike, PastCase, case_text
from trellis.planners._cues import CueStore, cue_key
from trellis.planners._plan import (
    OTHER_STEP_PREFIX,
    OtherStep,
    Plan,
    PlanStep,
    other_step_id,
    plan_json_schema,
)
from trellis.planners._planner import (
    LLMPlanner,
    Planner,
    PlannerConfig,
    PlanOutcome,
    PlanRequest,
    ScriptedPlanner,
    build_plan_prompt,
    build_repair_prompt,
    replan_request,
)
from trellis.planners._rows import plan_completion, plan_row
from trellis.planners._skills import DECOMPOSE, SkillSpec, format_validation_error, skill_catalogue
from trellis.planners._validate import (
    call_violations,
    cue_violations,
    extract_json,
    step_words,
    validate_plan,
)
from trellis.planners.errors import (
    InvalidSkillArgsError,
    PlanningFailedError,
    PlanValidationError,
    ReminderExtractionError,
    SkillDefinitionError,
    UnknownCaseError,
)

__all__ = [
    "DECOMPOSE",
    "OTHER_STEP_PREFIX",
    "CaseConfig",
    "CaseMemory",
    "CueStore",
    "EmbedderLike",
    "InvalidSkillArgsError",
    "LLMPlanner",
    "OtherStep",
    "PastCase",
    "Plan",
    "PlanOutcome",
    "PlanRequest",
    "PlanStep",
    "PlanValidationError",
    "Planner",
    "PlannerConfig",
    "PlanningFailedError",
    "ReminderExtractionError",
    "ScriptedPlanner",
    "SkillDefinitionError",
    "SkillSpec",
    "UnknownCaseError",
    "build_plan_prompt",
    "build_repair_prompt",
    "call_violations",
    "case_text",
    "cue_key",
    "cue_violations",
    "extract_json",
    "format_validation_error",
    "other_step_id",
    "plan_completion",
    "plan_json_schema",
    "plan_row",
    "replan_request",
    "skill_catalogue",
    "step_words",
    "validate_plan",
]
