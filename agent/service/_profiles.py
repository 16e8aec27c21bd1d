"""Skill/environment profiles: the named agent set-ups a service may run tasks with.

A profile builds one :class:`~agent.Agent` per worker process (shared by its task loops)
and turns a submission into the goal and task metadata the agent reads. Submissions can only
name profiles that are both registered here and allowed by ``ServiceSettings.profiles``.

Built in:

* ``demo``: scripted planner and scripted model (no model weights), skills ``demo_wait``
  (read-only), ``demo_record`` (side-effecting: appends to ``effects.jsonl``) and
  ``demo_gate`` (needs a human's approval; planned when the goal contains ``[approval]``).
* every installed environment pack, by its kind (:func:`env_profile`): the pack's first
  example episode on the default embedded model.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trellis.adapters import FunctionBackend, LLMRequest
from trellis.agent.runtime import Agent, AgentConfig, SkillContext, skill
from trellis.agent.service._errors import ServiceConfigError, UnknownProfileError
from trellis.agent.service._settings import DemoProfileConfig, ServiceSettings
from trellis.memory import TaskStore, trellis_home

__all__ = [
    "Profile",
    "available_profiles",
    "get_profile",
    "register_profile",
    "skills_profile",
]

APPROVAL_MARK = "[approval]"


@dataclass(frozen=True)
class Profile:
    """A named way to run tasks."""

    name: str
    """Name that submissions use."""
    description: str
    """What it runs, for the API listing."""
    build: Callable[[ServiceSettings, TaskStore], Agent]
    """Make the agent for one process (called once, lazily)."""
    prepare: Callable[[str], tuple[str, dict[str, Any]]] = lambda goal: (goal, {})
    """Goal text -> (goal, extra task metadata), e.g. the environment a task plays in."""


_PROFILES: dict[str, Profile] = {}


def register_profile(profile: Profile, *, replace: bool = False) -> None:
    """Make a profile available (services still need it in ``ServiceSettings.profiles``)."""
    if profile.name in _PROFILES and not replace:
        raise ServiceConfigError(
            f"profile {profile.name!r} is already registered; pass replace=True to change it"
        )
    _PROFILES[profile.name] = profile


def _registered(name: str) -> Profile | None:
    """A registered profile, or the profile of the installed environment pack ``name``."""
    if name not in _PROFILES:
        from trellis.agent.env import installed_packs

        if name not in installed_packs():
            return None
        _PROFILES[name] = env_profile(name)
    return _PROFILES[name]


def available_profiles(settings: ServiceSettings) -> list[str]:
    """Profiles this service runs: allowed by the settings and registered (or packs)."""
    from trellis.agent.env import installed_packs

    known = set(_PROFILES) | set(installed_packs())
    return [name for name in settings.profiles if name in known]


def get_profile(name: str, settings: ServiceSettings) -> Profile:
    """The profile ``name`` if this service runs it; UnknownProfileError otherwise."""
    profile = _registered(name) if name in settings.profiles else None
    if profile is None:
        raise UnknownProfileError(name, available_profiles(settings))
    return profile


# --- demo ------------------------------------------------------------------------------------


def _effects_file(config: DemoProfileConfig) -> Path:
    folder = config.effects_dir or trellis_home() / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "effects.jsonl"


def _demo_skills(config: DemoProfileConfig) -> list[Any]:
    effects = _effects_file(config)

    @skill(side_effects=False, timeout_s=70)
    async def demo_wait(seconds: float) -> dict[str, float]:
        """Wait a moment (stands in for read-only work such as looking around)."""
        await asyncio.sleep(min(max(seconds, 0.0), 60.0))
        return {"waited_s": seconds}

    @skill(timeout_s=10)
    def demo_record(note: str, context: SkillContext) -> dict[str, str]:
        """Record a note in the world (a side effect that must happen exactly once)."""
        line = json.dumps(
            {
                "task_id": context.task_id,
                "node_id": context.node_id,
                "note": note[:200],
                "pid": os.getpid(),
                "at": time.time(),
            }
        )
        # One O_APPEND write of a short line is atomic between processes.
        fd = os.open(effects, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)
        return {"recorded": note[:200]}

    @skill(needs_approval=True, timeout_s=10)
    def demo_gate(note: str) -> dict[str, str]:
        """A step a human must approve before it runs."""
        return {"passed": note[:200]}

    return [demo_wait, demo_record, demo_gate]


def _demo_plan(config: DemoProfileConfig) -> Callable[[Any], Any]:
    def plan(request: Any) -> Any:
        goal = str(request.goal)
        if request.failure is not None:
            # Never plan the side effect again: its first outcome may be unknown (a worker
            # died during the call), so the repair only looks at the world.
            check = {
                "id": "check",
                "title": "check the world after the failure",
                "skill": "demo_wait",
                "args": {"seconds": 0},
            }
            return {"steps": [check]}
        steps: list[dict[str, Any]] = []
        previous: list[str] = []
        for i in range(config.steps - 1):
            steps.append(
                {
                    "id": f"w{i}",
                    "title": f"look around {i}",
                    "skill": "demo_wait",
                    "args": {"seconds": config.step_s},
                    "depends_on": previous,
                }
            )
            previous = [f"w{i}"]
        if APPROVAL_MARK in goal:
            steps.append(
                {
                    "id": "gate",
                    "title": "pass the gate",
                    "skill": "demo_gate",
                    "args": {"note": "gate"},
                    "depends_on": previous,
                }
            )
            previous = ["gate"]
        steps.append(
            {
                "id": "rec",
                "title": "record the goal",
                "skill": "demo_record",
                "args": {"note": goal[:200]},
                "depends_on": previous,
            }
        )
        return {"steps": steps}

    return plan


def _demo_backend(config: DemoProfileConfig) -> FunctionBackend:
    async def answer(request: LLMRequest) -> str:
        if config.llm_delay_s:
            await asyncio.sleep(config.llm_delay_s)
        # The act schema names the planned skill as a constant; fill in its arguments.
        schema = request.json_schema or {}
        name = schema.get("properties", {}).get("skill", {}).get("const", "demo_wait")
        args: dict[str, Any] = {"seconds": config.step_s} if name == "demo_wait" else {}
        if name in ("demo_record", "demo_gate"):
            args = {"note": "done by the demo model"}
        return json.dumps({"skill": name, "args": args})

    return FunctionBackend(answer, name="demo-scripted")


class _BaseModelRouter:
    """Routes every step to the base model (the demo has no adapters)."""

    async def route(self, context: Any) -> Any:
        from trellis.adapters import RouteDecision

        return RouteDecision(
            adapter=None, score=0.0, policy="empty", reason="demo profile: base model"
        )


def _build_demo(settings: ServiceSettings, store: TaskStore) -> Agent:
    from trellis.planners import ScriptedPlanner

    config = settings.demo
    return Agent(
        # Every step asks the model for its call, as a model-driven profile would.
        config=AgentConfig(max_steps=max(30, 3 * config.steps), use_plan_args=False),
        skills=_demo_skills(config),
        backend=_demo_backend(config),
        planner=ScriptedPlanner(_demo_plan(config)),
        router=_BaseModelRouter(),
        store=store,
    )


# --- environment packs -----------------------------------------------------------------------


@functools.cache
def _shared_backend() -> Any:
    # Each task loop has its own agent; they all share one in-process model.
    from trellis.agent.runtime import default_backend

    return default_backend()


_ADAPTER_BACKENDS: dict[str, Any] = {}


def _backend_with_adapters(store: TaskStore) -> Any:
    """One in-process model per database, loading the registered and shipped adapters."""
    from trellis.agent.runtime import default_backend, default_registry

    key = str(store.engine.url)
    if key not in _ADAPTER_BACKENDS:
        _ADAPTER_BACKENDS[key] = default_backend(default_registry(store.engine, shipped=True))
    return _ADAPTER_BACKENDS[key]


def env_profile(kind: str) -> Profile:
    """The profile of an installed environment pack: tasks in the pack's default episode
    (a submission's goal, else the world's own task) on the default embedded model."""
    from trellis.agent.env import EnvironmentRegistry

    pack = EnvironmentRegistry().get(kind)

    def build(settings: ServiceSettings, store: TaskStore) -> Agent:
        return Agent(store=store, backend=_shared_backend(), environments=[pack])

    def prepare(goal: str) -> tuple[str, dict[str, Any]]:
        examples = list(pack.examples()) if pack.examples is not None else []
        spec = examples[0] if examples else pack.spec()
        return goal, {"env": spec.record()}

    return Profile(
        name=kind,
        description=f"{pack.description or kind} (environment pack) on the default embedded model",
        build=build,
        prepare=prepare,
    )


def skills_profile(module_name: str, *, name: str | None = None) -> Profile:
    """The profile of an app's own skills: every ``@skill`` of the module ``module_name``
    (a dotted name), planned by the default LLM planner on the default embedded model, with
    the shipped adapters; tasks are submitted with their goal. Named after the module
    unless ``name`` is given. ``trellis serve --skills MODULE`` registers and allows it."""
    from trellis.agent.runtime import AgentConfig, skills_from_module

    skills = skills_from_module(module_name)  # checked now: a bad module fails at start-up

    def build(settings: ServiceSettings, store: TaskStore) -> Agent:
        config = AgentConfig(database_url=settings.database_url, shipped_adapters=True)
        backend = _backend_with_adapters(store)
        return Agent(config=config, store=store, backend=backend, skills=skills)

    names = ", ".join(sorted(s.name for s in skills))
    return Profile(
        name=name or module_name,
        description=f"the skills of {module_name} ({names}) with the LLM planner",
        build=build,
    )


register_profile(
    Profile(
        name="demo",
        description="scripted planner and model with demo_wait, demo_record and demo_gate",
        build=_build_demo,
    )
)
