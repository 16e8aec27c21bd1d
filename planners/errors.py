"""Errors of the planners package (skills, plans, cues, past successes). See ``memory.errors``."""

from __future__ import annotations

from trellis.memory.errors import ModelRetry, NotFoundError, RuntimeFailure, UsageError

__all__ = [
    "InvalidSkillArgsError",
    "PlanValidationError",
    "PlanningFailedError",
    "ReminderExtractionError",
    "SkillDefinitionError",
    "UnknownCaseError",
]


class SkillDefinitionError(UsageError):
    """A skill was declared wrongly (bad name, missing argument model, bad timeout)."""


class InvalidSkillArgsError(UsageError):
    """Arguments given to a skill do not satisfy its argument model."""

    def __init__(self, skill: str, detail: str) -> None:
        super().__init__(f"invalid arguments for skill {skill!r}: {detail}")
        self.skill = skill
        self.detail = detail


class PlanValidationError(ModelRetry):
    """A proposed plan cannot be executed; the message is the exact feedback for a repair round."""

    def __init__(self, problems: list[str]) -> None:
        text = "; ".join(problems)
        super().__init__(f"the plan is invalid: {text}")
        self.problems = problems


class ReminderExtractionError(ModelRetry):
    """The model's answer is not a usable cue; the message is the feedback for a retry."""


class PlanningFailedError(RuntimeFailure):
    """Planning gave up after its bounded repair rounds; the message lists every attempt's error."""


class UnknownCaseError(NotFoundError):
    """No past case has this id."""

    def __init__(self, case_id: object) -> None:
        super().__init__(f"unknown past case id {case_id!r}; list them with CaseMemory.cases()")
        self.case_id = case_id
