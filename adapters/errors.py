"""Errors of the adapters package (registry, router, backends). See ``memory.errors``."""

from __future__ import annotations

from trellis.memory.errors import NotFoundError, RuntimeFailure, UsageError

__all__ = [
    "AdapterMismatchError",
    "AdapterPathError",
    "AdapterProfileError",
    "AdapterValidationError",
    "BackendError",
    "BackendRequestError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "DuplicateAdapterError",
    "EmbeddingModelMissingError",
    "IncompatibleAdapterError",
    "MalformedResponseError",
    "ModelPreparationError",
    "ReplayMismatchError",
    "SchemaCompileError",
    "TrainingDataError",
    "TrainingResumeError",
    "UnknownAdapterError",
]


class ModelPreparationError(UsageError):
    """The base model folder is missing or could not be built; the message names the fix."""


class UnknownAdapterError(NotFoundError):
    """No adapter of this name is registered (or served by the backend)."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f"; registered: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown adapter {name!r}{hint}; see `trellis adapters list`")
        self.name = name


# --- backends --------------------------------------------------------------------------------


class BackendError(RuntimeFailure):
    """A backend failed while serving a request (base of the backend failures below)."""


class BackendUnavailableError(BackendError):
    """The backend (a server, the model) cannot be reached or is not running."""


class BackendTimeoutError(BackendError):
    """A request did not finish within its ``timeout_s``."""


class MalformedResponseError(BackendError):
    """A backend answered with something that is not the expected response shape."""


class BackendRequestError(UsageError):
    """A server rejected a request as invalid (an HTTP 4xx answer); retrying cannot help."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AdapterMismatchError(BackendError):
    """A server answered with another adapter (or model) than the one requested."""

    def __init__(self, requested: str, served: str, server: str) -> None:
        super().__init__(
            f"{server} served model {served!r} for a request to {requested!r}; the answer was "
            "discarded (a request is never served by another adapter): check that the server's "
            "--served-model-name and --lora-modules names match the registry"
        )
        self.requested = requested
        self.served = served
        self.server = server


class SchemaCompileError(UsageError):
    """A request's JSON schema cannot be compiled into a constrained-decoding grammar."""


class ReplayMismatchError(RuntimeFailure):
    """A replayed run asked for something other than what was recorded at that point."""


# --- adapter registry -----------------------------------------------------------------------


class AdapterValidationError(UsageError):
    """An adapter folder is not a usable PEFT LoRA adapter; the message names the problem."""


class IncompatibleAdapterError(AdapterValidationError):
    """The adapter was made for another base model, or its rank exceeds the allowed maximum."""


class AdapterPathError(AdapterValidationError):
    """The adapter path lies outside the configured adapter roots (after resolving symlinks)."""


class DuplicateAdapterError(UsageError):
    """An adapter of this name is already registered (or loaded)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"adapter {name!r} is already registered; remove it first "
            f"(`trellis adapters remove {name}`) or choose another name"
        )
        self.name = name


# --- router ----------------------------------------------------------------------------------


class AdapterProfileError(UsageError):
    """An adapter cannot be routed to: its name, description or examples are missing or bad."""


class EmbeddingModelMissingError(UsageError):
    """The sentence-embedding model package is not installed; the message gives the command."""


# --- training --------------------------------------------------------------------------------


class TrainingDataError(UsageError):
    """Training data is missing, malformed (the message names the line) or has no usable row."""


class TrainingResumeError(UsageError):
    """A checkpoint cannot be resumed: it was made from other data or another base model."""
