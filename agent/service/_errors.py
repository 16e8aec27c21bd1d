"""Errors of the service (queue, workers, HTTP, settings). See ``memory.errors`` for the tree."""

from __future__ import annotations

from trellis.memory.errors import RuntimeFailure, UsageError

__all__ = [
    "LeaseLostError",
    "ServiceConfigError",
    "TaskStateError",
    "UnknownProfileError",
]


class ServiceConfigError(UsageError):
    """The service settings cannot work (no tokens, a bad file, an unknown profile name)."""


class UnknownProfileError(UsageError, LookupError):
    """A task names a skill/environment profile this service does not offer."""

    def __init__(self, name: str, allowed: list[str]) -> None:
        listed = ", ".join(sorted(allowed)) or "none"
        super().__init__(
            f"unknown profile {name!r}; this service runs: {listed} "
            "(operators add names to TRELLIS_PROFILES)"
        )
        self.name = name
        self.allowed = sorted(allowed)


class TaskStateError(UsageError):
    """The operation does not apply to the task in its current state."""

    def __init__(self, task_id: str, state: str, wanted: str) -> None:
        super().__init__(f"task {task_id!r} is {state}; {wanted}")
        self.task_id = task_id
        self.state = state


class LeaseLostError(RuntimeFailure):
    """A worker no longer holds the lease of a task (it expired and another worker took it)."""

    def __init__(self, task_id: str, owner: str) -> None:
        super().__init__(
            f"worker {owner!r} lost the lease of task {task_id!r}; another worker resumes it "
            "from its checkpoint. Raise TRELLIS_LEASE_S if steps legitimately take longer"
        )
        self.task_id = task_id
        self.owner = owner
