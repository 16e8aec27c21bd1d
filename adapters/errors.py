"""Errors of the adapters package (registry, router, backends). See ``memory.errors``."""

from __future__ import annotations

from memory.errors import NotFoundError, UsageError

__all__ = ["ModelPreparationError", "UnknownAdapterError"]


class ModelPreparationError(UsageError):
    """The base model folder is missing or could not be built; the message names the fix."""


class UnknownAdapterError(NotFoundError):
    """No adapter of this name is registered (or served by the backend)."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        hint = f"; registered: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"unknown adapter {name!r}{hint}; see `trellis adapters list`")
        self.name = name


