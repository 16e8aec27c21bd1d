"""Errors of the agent package (skills, the loop, environments, the SDK). See ``memory.errors``."""

from __future__ import annotations

from trellis.memory.errors import ModelRetry, RuntimeFailure, UsageError

__all__ = [
    "ApprovalPendingError",
    "BudgetExhaustedError",
    "CueViolation",
    "EnvironmentFailure",
    "ForbiddenFoldError",
    "NoPendingApprovalError",
    "SkillFailedError",
    "SkillResultNotSerializableError",
    "SkillTimeoutError",
    "TraceFormatError",
    "TraceVersionError",
    "UnknownSkillError",
]


class UnknownSkillError(ModelRetry, LookupError):
    """A skill name that is not registered (often one a model invented): only those ever run."""

    def __init__(self, name: str, known: list[str]) -> None:
        listed = ", ".join(sorted(known)) or "none registered"
        # The name may be anything a model wrote: keep the message (and records) short.
        shown = repr(name) if len(name) <= 80 else f"{name[:80]!r}... ({len(name)} characters)"
        message = f"unknown skill {shown}; registered skills: {listed}"
        super().__init__(message, feedback=f"{message}. Choose one of the registered skills.")
        self.name = name
        self.known = sorted(known)


class CueViolation(ModelRetry):
    """A call the model chose breaks one of the user's cues (a ``forbid`` rule); it never runs.

    The model is asked again with the rule named; when it keeps breaking it, the step fails
    with this error.
    """


class SkillFailedError(RuntimeFailure):
    """A skill raised; the original exception type and message are kept."""

    def __init__(self, name: str, error_type: str, detail: str) -> None:
        super().__init__(f"skill {name!r} raised {error_type}: {detail}")
        self.name = name
        self.error_type = error_type
        self.detail = detail


class SkillTimeoutError(RuntimeFailure):
    """A skill did not finish within its ``timeout_s``."""

    def __init__(self, name: str, timeout_s: float) -> None:
        super().__init__(
            f"skill {name!r} did not finish within {timeout_s:g} s; raise its timeout_s in "
            "@skill(...) if it legitimately needs longer, or make it return sooner"
        )
        self.name = name
        self.timeout_s = timeout_s


class SkillResultNotSerializableError(UsageError, TypeError):
    """A skill returned a value that cannot be stored as JSON on the node."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(
            f"skill {name!r} returned a value that cannot be stored as JSON ({detail}); return "
            "dicts, lists, strings, numbers, booleans, None or a pydantic model"
        )
        self.name = name


class BudgetExhaustedError(RuntimeFailure):
    """A run stopped because a budget (steps, replans, wall time) ran out."""


class ApprovalPendingError(UsageError):
    """The task waits for a human decision; approve or reject it before resuming."""

    def __init__(self, task_id: str, skill: str) -> None:
        super().__init__(
            f"task {task_id!r} waits for approval of a call to skill {skill!r}: run "
            f"`trellis approve {task_id}` or `trellis reject {task_id}` "
            "(SDK: agent.approve / agent.reject)"
        )
        self.task_id = task_id
        self.skill = skill


class NoPendingApprovalError(UsageError):
    """Approve or reject was called on a task that is not waiting for approval."""

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"task {task_id!r} is not waiting for an approval; see its state with "
            f"`trellis tree {task_id}`"
        )
        self.task_id = task_id


class ForbiddenFoldError(UsageError):
    """The held-out part of a world (its ``test`` fold) was requested: it is kept for the
    final measure and never used to run, train or tune."""


class EnvironmentFailure(RuntimeFailure):
    """An environment failed, or refused an action it does not accept now."""


class UnknownEnvironmentError(UsageError):
    """No pack serves the requested environment kind (the message lists the known ones)."""


class InvalidEnvSpecError(UsageError):
    """An environment spec does not validate (the message names the pack and the field)."""


class EnvironmentPackError(UsageError):
    """An environment pack failed to import or is registered wrongly (the pack is named)."""


class TraceFormatError(UsageError):
    """A trace file is not a Trellis trace, or is truncated or corrupted (the line is named)."""


class TraceVersionError(TraceFormatError):
    """A trace was written in a format major version this Trellis does not read."""
