"""One conformance suite over every environment pack: each installed pack (entry-point group
``trellis.environments``) and the in-code test pack run the same checks, the way one suite
runs over every checkpointer.

- the spec round-trips through the JSON a task records;
- the spec plus the action history rebuild the same state (how a task resumes);
- a run recorded through the agent replays with every decision matching;
- the held-out records are refused before anything is recorded;
- a refused action raises a clear error and changes nothing.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from trellis import Agent, AgentConfig, EnvironmentPack, EnvSpec, FunctionBackend, LLMRequest
from trellis.agent import (
    Environment,
    EnvironmentFailure,
    EnvironmentPackError,
    EnvironmentRegistry,
    InvalidEnvSpecError,
    UnknownEnvironmentError,
    installed_packs,
    read_trace,
    replay_sync,
)
from trellis.agent.cli import app
from trellis.memory.errors import UsageError

sys.path.insert(0, str(Path(__file__).parent))
from _dial_pack import PACK as DIAL

PACKS = [*installed_packs(), "dial"]
MOVES = 5


def pack_of(kind: str) -> EnvironmentPack:
    return DIAL if kind == "dial" else EnvironmentRegistry().get(kind)


def examples(pack: EnvironmentPack) -> list[EnvSpec]:
    assert pack.examples is not None, f"pack {pack.kind} gives no example specs"
    found = list(pack.examples())
    assert found, f"pack {pack.kind} gives no example specs"
    return found


def pick(offered: list[str], salt: str) -> str:
    """A fixed but varied choice, so every run of the suite takes the same path."""
    return offered[zlib.crc32(salt.encode()) % len(offered)]


def play(environment: Environment, moves: int = MOVES) -> list[str]:
    """Take up to ``moves`` offered actions; the actions taken."""
    taken: list[str] = []
    state = environment.reset()
    for number in range(moves):
        if state.done:
            break
        offered = environment.offered_actions(state)
        assert offered, "an environment that is not done offers at least one action"
        assert set(offered) <= set(state.valid_actions), "only valid actions are offered"
        action = pick(offered, f"{number}:{state.observation}")
        state = environment.step(action)
        taken.append(action)
    return taken


@pytest.fixture(params=PACKS)
def pack(request: pytest.FixtureRequest) -> EnvironmentPack:
    return pack_of(str(request.param))


@pytest.fixture()
def open_envs() -> Iterator[list[Environment]]:
    created: list[Environment] = []
    yield created
    for environment in created:
        environment.close()


def test_the_spec_round_trips_through_its_recorded_json(pack: EnvironmentPack) -> None:
    for spec in examples(pack):
        record = json.loads(json.dumps(spec.record()))
        assert record["kind"] == pack.kind
        assert pack.from_record(record) == spec
        assert EnvironmentRegistry([pack]).for_spec(record) == (pack, spec)


def test_spec_plus_history_rebuilds_the_same_state(
    pack: EnvironmentPack, open_envs: list[Environment]
) -> None:
    for spec in examples(pack):
        first = pack.create(spec)
        open_envs.append(first)
        actions = play(first)
        assert actions, "the example episode accepts at least one action"
        again = pack.create(pack.from_record(spec.record()))
        open_envs.append(again)
        rebuilt = again.replay(actions)
        assert rebuilt == first.state
        assert again.offered_actions(rebuilt) == first.offered_actions(first.state)
        assert again.prompt_notes(rebuilt) == first.prompt_notes(first.state)
        assert again.observed_facts(rebuilt) == first.observed_facts(first.state)


def test_a_refused_action_names_the_valid_ones_and_changes_nothing(
    pack: EnvironmentPack, open_envs: list[Environment]
) -> None:
    environment = pack.create(examples(pack)[0])
    open_envs.append(environment)
    before = environment.reset()
    with pytest.raises(EnvironmentFailure, match="not a valid action") as refused:
        environment.step("xyzzy plugh")
    assert before.valid_actions[0] in str(refused.value)
    assert environment.state == before
    after = environment.step(environment.offered_actions(before)[0])
    assert after.moves == before.moves + 1


def test_held_out_records_are_refused_before_anything_is_recorded(
    pack: EnvironmentPack, tmp_path: Path
) -> None:
    assert pack.refused_records, f"pack {pack.kind} names no held-out record to refuse"
    agent = Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/refused.db"),
        backend=FunctionBackend(lambda request: "{}"),
        environments=[pack],
    )
    try:
        for record in pack.refused_records:
            with pytest.raises(UsageError):
                pack.from_record(record)
            with pytest.raises(UsageError):
                agent.run(env=dict(record))
        assert agent.tasks() == []
    finally:
        agent.close()


def choose_offered(request: LLMRequest) -> str:
    """A scripted model that answers one of the offered actions."""
    schema: dict[str, Any] = request.json_schema or {}
    offered = schema["properties"]["action"]["enum"]
    return json.dumps({"action": pick(offered, request.prompt or "")})


def test_a_recorded_run_replays_with_every_decision_matching(
    pack: EnvironmentPack, tmp_path: Path
) -> None:
    spec = examples(pack)[0]
    agent = Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/run.db", max_steps=4),
        backend=FunctionBackend(choose_offered),
        environments=[pack],
    )
    trace = tmp_path / "run.jsonl"
    try:
        result = agent.run(env=spec, trace=trace)
        moves = agent.tree(result.task_id).env_actions()
    finally:
        agent.close()
    assert result.steps == len(moves) > 0
    replayed = replay_sync(read_trace(trace), environments=[pack])
    assert replayed.ok, replayed.divergence


class ProcessDied(BaseException):
    """Stands for the process dying mid-task: nothing in the runtime catches it."""


def test_a_task_resumes_in_its_rebuilt_world_and_names_a_missing_pack(
    pack: EnvironmentPack, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/resume.db"
    calls = 0

    def crash_on_the_third_move(request: LLMRequest) -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ProcessDied("the process died")
        return choose_offered(request)

    config = AgentConfig(database_url=url, max_steps=5)
    first = Agent(
        config=config, backend=FunctionBackend(crash_on_the_third_move), environments=[pack]
    )
    try:
        with pytest.raises(ProcessDied):
            first.run(env=examples(pack)[0])
        (task,) = first.tasks()
        before = first.tree(task.id).env_actions()
    finally:
        first.close()
    assert len(before) == 2
    if pack.kind == "dial":  # an in-code pack: an agent without it cannot rebuild the world
        listed = CliRunner().invoke(app, ["tasks", "--database-url", url])
        assert task.id in listed.output
        stranger = Agent(config=config, backend=FunctionBackend(choose_offered))
        try:
            with pytest.raises(UnknownEnvironmentError, match="'dial'"):
                stranger.resume(task.id)
        finally:
            stranger.close()
    again = Agent(config=config, backend=FunctionBackend(choose_offered), environments=[pack])
    try:
        resumed = again.resume(task.id)
        after = again.tree(task.id).env_actions()
    finally:
        again.close()
    assert after[:2] == before and resumed.outcome in ("success", "failed", "budget_exhausted")


def test_bad_kinds_specs_and_packs_are_named_at_the_call(tmp_path: Path) -> None:
    registry = EnvironmentRegistry([DIAL])
    with pytest.raises(UnknownEnvironmentError, match=r"'alfworld'.*known: .*dial"):
        registry.get("alfworld")
    with pytest.raises(InvalidEnvSpecError, match=r"'dial'.*code"):
        registry.for_spec({"kind": "dial", "code": "three"})
    with pytest.raises(InvalidEnvSpecError, match="KEY=VALUE"):
        registry.spec_from_options("dial", fields=["code"])
    with pytest.raises(UnknownEnvironmentError, match="EnvSpec"):
        registry.for_spec(42)
    with pytest.raises(EnvironmentPackError, match="EnvironmentPack"):
        EnvironmentRegistry(["dial"])  # type: ignore[list-item]
    agent = Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/bad.db"),
        backend=FunctionBackend(lambda request: "{}"),
    )
    try:
        with pytest.raises(UnknownEnvironmentError, match=r"Agent\(environments="):
            agent.run(env={"kind": "dial"})
        assert agent.tasks() == []
    finally:
        agent.close()


def test_a_pack_that_fails_to_import_is_named_with_the_fix() -> None:
    from importlib.metadata import EntryPoint

    from trellis.agent.env._registry import _load

    broken = EntryPoint(name="broken", value="no_such_module:PACK", group="trellis.environments")
    with pytest.raises(EnvironmentPackError, match=r"'broken'.*failed to import.*Reinstall"):
        _load("broken", broken)
    wrong = EntryPoint(name="wrong", value="json:dumps", group="trellis.environments")
    with pytest.raises(EnvironmentPackError, match="not an EnvironmentPack"):
        _load("wrong", wrong)


@pytest.mark.parametrize("kind", PACKS)
def test_command_line_specs_get_todays_defaults_not_a_records(kind: str) -> None:
    """``--seed``/``--set`` make a new spec: every field not given has its current default
    (a record from the past, read by ``from_record``, may turn newer rules off)."""
    pack = pack_of(kind)
    registry = EnvironmentRegistry([pack])
    made = registry.spec_from_options(pack.kind, fields=["fold=dev"])
    assert made == pack.spec(fold="dev")
    with pytest.raises(UsageError):
        registry.spec_from_options(pack.kind, fields=["fold=test"])
