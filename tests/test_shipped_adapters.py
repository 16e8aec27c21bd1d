"""The adapters that ship with Trellis: present, documented, registered and used by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trellis_twc import TwcConfig

from trellis.adapters import (
    AdapterRegistry,
    FunctionBackend,
    LLMRequest,
    StepContext,
    is_shipped,
    register_shipped_adapters,
    shipped_adapters,
    shipped_folders,
    shipped_route_rules,
)
from trellis.agent import Agent, AgentConfig, load_installed_packs
from trellis.agent.runtime._defaults import default_reminder_adapter, default_router
from trellis.memory import TaskStore, run_sync
from trellis.planners import ScriptedPlanner

EXPECTED = {"reminder", "twc-act"}  # the runtime's own and the twc pack's

load_installed_packs()  # an installed pack's adapters are shipped adapters too


@pytest.fixture()
def store(tmp_path: Path) -> TaskStore:
    opened = TaskStore.open(f"sqlite:///{tmp_path}/t.db")
    yield opened
    opened.close()


def test_each_shipped_adapter_has_weights_a_card_and_a_manifest() -> None:
    found = {a.name: a for a in shipped_adapters()}
    assert set(found) >= EXPECTED
    for adapter in found.values():
        folder = adapter.path
        assert folder.parent in shipped_folders()
        assert (folder / "adapter_model.safetensors").stat().st_size > 100_000
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "gemma-3-270m"  # never a local path
        card = json.loads((folder / "training.json").read_text())
        assert card["steps"] > 0 and card["data_sha256"]
        assert (folder / "README.md").read_text().startswith(f"# {adapter.name}")
        assert not (folder / "checkpoints").exists()  # training state is not shipped
    assert "twc_act" in found["twc-act"].pinned_skills


def test_registration_is_idempotent_and_keeps_a_users_adapter(store: TaskStore) -> None:
    registry = AdapterRegistry(store.engine, roots=[])  # no user roots: shipped still allowed
    added = register_shipped_adapters(registry)
    assert set(added) >= EXPECTED
    assert register_shipped_adapters(registry) == []
    record = registry.get("twc-act")
    assert is_shipped(record.path) and record.examples
    # A user's adapter registered under a shipped name wins: it is left in place.
    registry.remove("reminder")
    user_copy = registry.get("twc-act").path
    registry.add("reminder", user_copy, description="my own reminder adapter", examples=["x"])
    register_shipped_adapters(registry)
    assert registry.get("reminder").description == "my own reminder adapter"


def test_default_router_pins_the_twc_move_and_leaves_other_steps_to_the_base_model(
    store: TaskStore,
) -> None:
    registry = AdapterRegistry(store.engine)
    register_shipped_adapters(registry)
    assert any(
        r.skill == "twc_act" and r.adapter == "twc-act" for r in shipped_route_rules(registry)
    )
    router = default_router(store.engine, FunctionBackend(lambda r: ""), registry)
    move = run_sync(router.route(StepContext(text="take the next action", skill="twc_act")))
    assert move.adapter == "twc-act" and move.policy == "rule"
    # Shipped adapters are not embedding candidates: an unrelated step stays on the base model.
    other = run_sync(router.route(StepContext(text="water the plants", skill="water")))
    assert other.adapter is None
    assert (
        default_router(store.engine, FunctionBackend(lambda r: ""), registry, shipped=False) is None
    )


def test_reminder_adapter_default_follows_the_registry(store: TaskStore) -> None:
    backend = FunctionBackend(lambda r: "")
    registry = AdapterRegistry(store.engine)
    assert default_reminder_adapter(backend, registry).adapter is None  # nothing registered
    register_shipped_adapters(registry)
    chosen = default_reminder_adapter(backend, registry)
    assert chosen.adapter == "reminder" and chosen.config.mode == "model"
    assert default_reminder_adapter(backend, registry, shipped=False).adapter is None
    assert default_reminder_adapter(None, registry).config.mode == "rules"


def _first_action(request: LLMRequest) -> str:
    line = next(ln for ln in (request.prompt or "").splitlines() if ln.startswith("Actions: "))
    return json.dumps({"action": line[len("Actions: ") :].split("; ")[0]})


@pytest.mark.parametrize("shipped", [True, False, None])
def test_agent_routes_twc_moves_to_the_shipped_adapter_when_enabled(
    tmp_path: Path, shipped: bool | None
) -> None:
    adapters_seen: list[str | None] = []

    def answer(request: LLMRequest) -> str:
        adapters_seen.append(request.adapter)
        return _first_action(request)

    agent = Agent(
        config=AgentConfig(
            database_url=f"sqlite:///{tmp_path}/t.db", max_steps=2, shipped_adapters=shipped
        ),
        backend=FunctionBackend(answer),
        planner=ScriptedPlanner({}),
    )
    try:
        result = agent.run(env=TwcConfig(seed=2, fold="dev"))
    finally:
        agent.close()
    assert adapters_seen
    if shipped:
        assert set(adapters_seen) == {"twc-act"} and result.adapters == ["twc-act"]
    else:
        # None with a backend passed in: Trellis cannot know it loads adapters by name.
        assert set(adapters_seen) == {None} and result.adapters == ["base"]
