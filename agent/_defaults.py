"""The embedded defaults: the in-process model, the LLM planner, the registered adapters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from adapters import LLMBackend, ReminderAdapter, ReminderConfig
from planners import LLMPlanner, PlannerConfig

__all__ = ["default_backend", "default_planner", "default_reminder_adapter", "default_router"]


def default_backend() -> LLMBackend:
    """The embedded transformers backend on the prepared base model (loaded on first use)."""
    from adapters import EmbeddedBackend

    backend: LLMBackend = EmbeddedBackend()
    return backend


def default_planner(backend: LLMBackend) -> LLMPlanner:
    """The LLM planner, kept short: the default model is small and runs on a CPU."""
    return LLMPlanner(backend, config=PlannerConfig(max_tokens=160, max_steps=5, max_attempts=2))


def default_reminder_adapter() -> ReminderAdapter:
    """Reminders to cues with the rule extractor (no model call, deterministic)."""
    return ReminderAdapter(None, config=ReminderConfig(mode="rules"))


def default_router(engine: Engine, backend: LLMBackend) -> Any:
    """A router over the registered adapters, or None (base model) when none are registered."""
    from adapters import AdapterRegistry

    registry = AdapterRegistry(engine)
    if not registry.list():
        return None
    from adapters import Router

    return Router(registry=registry, engine=engine, backend=backend)
