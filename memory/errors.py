"""The Trellis exception tree, rooted here because every package builds on ``memory``.

Every error Trellis raises derives from :class:`TrellisError` and sits in exactly one of
three branches, so callers can decide what to do without reading messages::

    TrellisError
    ├── UsageError        the caller misused an API or passed bad input: fix the call
    ├── ModelRetry        a model produced output we cannot use: ask it again with feedback
    └── RuntimeFailure    something failed while running (I/O, a server, a timeout, a race)

Each package adds its leaves in its own ``errors`` module (``memory.errors``,
``adapters.errors``, ``planners.errors``, ``agent.errors``); ``docs/errors.md`` draws the
whole tree and a test keeps it complete.
"""

from __future__ import annotations

__all__ = [
    "CycleError",
    "DatabaseUnavailable",
    "DuplicateKeyError",
    "IllegalTransitionError",
    "ModelRetry",
    "NotFoundError",
    "NotSerializableError",
    "PayloadTooLargeError",
    "RuntimeFailure",
    "SchemaMismatchError",
    "StaleWriteError",
    "TrellisError",
    "UnknownNodeError",
    "UnknownTaskError",
    "UsageError",
]


class TrellisError(Exception):
    """Base class of every error Trellis raises."""


class UsageError(TrellisError, ValueError):
    """The caller misused an API or passed bad input. The message says what to change."""


class ModelRetry(TrellisError):
    """A model's output could not be used; ``feedback`` is what to tell the model on retry."""

    def __init__(self, message: str, *, feedback: str | None = None) -> None:
        super().__init__(message)
        self.feedback = feedback if feedback is not None else message


class RuntimeFailure(TrellisError, RuntimeError):
    """Something failed at run time (a server, the disk, a timeout, a concurrent writer)."""


# --- memory leaves -------------------------------------------------------------------------


class NotFoundError(UsageError, LookupError):
    """A named thing does not exist."""


class UnknownTaskError(NotFoundError):
    """No task has this id."""

    def __init__(self, task_id: object) -> None:
        super().__init__(f"unknown task id {task_id!r}: list tasks with `trellis tasks`")
        self.task_id = task_id


class UnknownNodeError(NotFoundError):
    """No node has this id (in this task, when a task is given)."""

    def __init__(self, node_id: object, task_id: object | None = None) -> None:
        where = f" in task {task_id!r}" if task_id is not None else ""
        super().__init__(f"unknown node id {node_id!r}{where}")
        self.node_id = node_id
        self.task_id = task_id


class IllegalTransitionError(UsageError):
    """A status change that the node state machine forbids."""

    def __init__(self, node_id: object, old: str, new: str, allowed: list[str]) -> None:
        allowed_text = ", ".join(allowed) if allowed else "none (terminal state)"
        super().__init__(
            f"node {node_id!r}: illegal status transition {old} -> {new}; "
            f"from {old} the allowed next states are: {allowed_text}"
        )
        self.node_id = node_id
        self.old = old
        self.new = new


class CycleError(UsageError):
    """Adding a dependency would close a cycle; ``cycle`` lists it, first node repeated last."""

    def __init__(self, cycle: list[object], *, reason: str | None = None) -> None:
        path = " -> ".join(str(n) for n in cycle)
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"dependency would create a cycle: {path}{why}; remove one of these dependencies"
        )
        self.cycle = cycle
        self.reason = reason


class DuplicateKeyError(UsageError):
    """A step key is already used by a live sibling; keys are unique among siblings."""

    def __init__(self, key: str, *, where: str) -> None:
        super().__init__(f"step key {key!r} is used twice {where}; give every sibling its own key")
        self.key = key


class PayloadTooLargeError(UsageError):
    """A node input, output or error is larger than the configured limit."""

    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__(
            f"{field} is {size} bytes of JSON, over the limit of {limit} bytes; store large "
            "data elsewhere and keep a reference, or raise MemoryConfig.max_payload_bytes"
        )
        self.field = field
        self.size = size
        self.limit = limit


class NotSerializableError(UsageError, TypeError):
    """A value that must be stored as JSON cannot be serialised."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(
            f"{field} is not JSON-serialisable ({detail}); convert it to dicts, lists, "
            "strings, numbers, booleans or None first"
        )
        self.field = field


class SchemaMismatchError(UsageError):
    """The database schema is not the one this code expects (newer, or not yet upgraded)."""


class StaleWriteError(RuntimeFailure):
    """Optimistic locking rejected a write: someone else changed the row since it was read."""

    def __init__(self, what: str, expected_version: int, actual_version: int | None) -> None:
        now = "deleted" if actual_version is None else f"at version {actual_version}"
        super().__init__(
            f"stale write to {what}: read at version {expected_version}, the row is now {now}; "
            "re-read it and apply the change again"
        )
        self.expected_version = expected_version
        self.actual_version = actual_version


class DatabaseUnavailable(RuntimeFailure):
    """The database stayed unreachable past the retry budget (``retry_s``); resume once it answers.

    Nothing was lost: a run stops at its last checkpoint. ``commit_unknown`` is set when the
    connection dropped during a COMMIT, so the write may or may not have been applied."""

    def __init__(
        self,
        detail: str,
        *,
        task_id: str | None = None,
        waited_s: float = 0.0,
        commit_unknown: bool = False,
    ) -> None:
        if commit_unknown:
            what = f"the connection dropped while a write was committing ({detail})"
            fix = "it may or may not have been applied: read the state again before retrying"
        else:
            what = f"the database is unavailable ({detail}) after retrying for {waited_s:.1f} s"
            fix = "retry once it answers again; nothing half-written was kept"
        if task_id is not None:
            fix = (
                f"once it answers again, continue with `trellis resume {task_id}` "
                f"(SDK: agent.resume({task_id!r})); the run stopped at its last checkpoint"
            )
        super().__init__(f"{what}; {fix}")
        self.detail = detail
        self.task_id = task_id
        self.waited_s = waited_s
        self.commit_unknown = commit_unknown
