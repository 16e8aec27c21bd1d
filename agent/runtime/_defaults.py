"""The embedded defaults: the in-process model, the LLM planner, the shipped adapters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from trellis.adapters import (
    AdapterRecord,
    AdapterRegistry,
    LLMBackend,
    ReminderAdapter,
    ReminderConfig,
    is_shipped,
    register_shipped_adapters,
    shipped_route_rules,
)
from trellis.agent.env import load_installed_packs
from trellis.planners import LLMPlanner, PlannerConfig

__all__ = [
    "default_backend",
    "default_planner",
    "default_registry",
    "default_reminder_adapter",
    "default_router",
]


def default_registry(engine: Engine, *, shipped: bool = True) -> AdapterRegistry:
    """The database's adapter registry, with the shipped adapters registered when ``shipped``
    (Trellis's own and those of every installed environment pack)."""
    registry = AdapterRegistry(engine, migrate=False)
    if shipped:
        load_installed_packs()  # a pack's adapters are shipped adapters too
        register_shipped_adapters(registry)
    return registry


def default_backend(registry: AdapterRegistry | None = None) -> LLMBackend:
    """The embedded transformers backend on the prepared base model (loaded on first use).

    With a registry, adapters load on first use by name.
    """
    from trellis.adapters import EmbeddedBackend

    backend: LLMBackend = EmbeddedBackend(
        resolve_adapter_path=registry.path_of if registry is not None else None
    )
    return backend


PLAN_ADAPTER = "plan"
"""The adapter name that plans app goals when one is registered (none ships; docs/training.md)."""


def default_planner(
    backend: LLMBackend,
    registry: AdapterRegistry | None = None,
    *,
    shipped: bool = True,
) -> LLMPlanner:
    """The LLM planner: the ``plan`` adapter when it is registered (and shipped adapters are
    on, or it is the user's own), else the base model.

    Kept short for a small model on a CPU: at most 8 steps (app goals run to 8 calls), titles
    of at most 40 characters, one repair round, and no ``decompose`` steps (a flat plan of
    catalogue calls; see ``bench/bench_plans.py`` and docs/planners.md for the measurements).
    Rows for the adapter are built under exactly this configuration.
    """
    config = PlannerConfig(
        max_tokens=320, max_steps=8, max_attempts=2, max_title_chars=40, allow_decompose=False
    )
    adapter = None
    if registry is not None and _usable(registry, PLAN_ADAPTER, shipped):
        adapter = PLAN_ADAPTER
    return LLMPlanner(backend, adapter=adapter, config=config)


def _usable(registry: AdapterRegistry, name: str, shipped: bool) -> bool:
    if name not in registry:
        return False
    return shipped or not is_shipped(registry.get(name).path)


def default_reminder_adapter(
    backend: LLMBackend | None = None,
    registry: AdapterRegistry | None = None,
    *,
    shipped: bool = True,
) -> ReminderAdapter:
    """Reminders to cues: the ``reminder`` adapter, with the rule extractor as fallback.

    The adapter reads phrasings the rules do not know (98% against the rules' 75% on
    held-back reminders, ``bench/bench_adapters.py --part cues``), so it goes first and the
    rules cross-check it. Without a backend or a registered ``reminder`` adapter only the
    rules run (no model call, deterministic).
    """
    name = ReminderAdapter.ADAPTER_NAME
    if backend is not None and registry is not None and _usable(registry, name, shipped):
        return ReminderAdapter(backend, adapter=name, config=ReminderConfig(mode="model"))
    return ReminderAdapter(None, config=ReminderConfig(mode="rules"))


class _OwnAdapters:
    """The registry without the shipped adapters, which serve only the skills they are pinned to."""

    def __init__(self, registry: AdapterRegistry) -> None:
        self.registry = registry
        self.engine = registry.engine

    def __contains__(self, name: object) -> bool:
        return name in self.registry  # rules may pin any registered adapter

    def list(self) -> list[AdapterRecord]:
        return [r for r in self.registry.list() if not is_shipped(r.path)]


def default_router(
    engine: Engine,
    backend: LLMBackend,
    registry: AdapterRegistry | None = None,
    *,
    shipped: bool = True,
) -> Any:
    """A router over the registered adapters, or None (base model) when there is nothing to route.

    Shipped adapters are reached only through their rules (a pack's action skill goes to the
    adapter its manifest pins it to); the adapters a user registers are routed by rules,
    embeddings and keywords.
    """
    from trellis.adapters import Router, RouterConfig

    registry = registry if registry is not None else AdapterRegistry(engine, migrate=False)
    rules = shipped_route_rules(registry) if shipped else ()
    own = _OwnAdapters(registry)
    if not rules and not own.list():
        return None
    config = RouterConfig(rules=rules)
    return Router(registry=own, engine=engine, backend=backend, config=config)


def default_cases(engine: Engine) -> Any:
    """Past successes on the agent's database, compared by word hashing: repeated and
    reworded goals match at no model cost. Semantic matching is one argument away:
    ``Agent(cases=CaseMemory(engine, SentenceEmbedder()))`` (a 90 MB model, loaded once)."""
    from trellis.adapters import HashingEmbedder
    from trellis.planners import CaseConfig, CaseMemory

    # Only a close match helps a small model; a loose one misleads it.
    return CaseMemory(engine, HashingEmbedder(), CaseConfig(min_similarity=0.5))
