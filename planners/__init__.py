"""Planning: plan schema, LLM and scripted planners, validation and repair."""

from planners._skills import DECOMPOSE, SkillSpec, format_validation_error, skill_catalogue
from planners.errors import (
    InvalidSkillArgsError,
    PlanningFailedError,
    PlanValidationError,
    ReminderExtractionError,
    SkillDefinitionError,
    UnknownCaseError,
)

__all__ = [
    "DECOMPOSE",
    "InvalidSkillArgsError",
    "PlanValidationError",
    "PlanningFailedError",
    "ReminderExtractionError",
    "SkillDefinitionError",
    "SkillSpec",
    "UnknownCaseError",
    "format_validation_error",
    "skill_catalogue",
]
