"""Fault drill: a model that answers garbage. Whatever it says at remind, plan or act, a run
ends (done or failed), never raises anything but a Trellis error, and leaves no task running.

The scripted model answers the stage under test with generated garbage (random text, JSON
nested thousands deep, integers of thousands of digits, NaN, NUL and lone-surrogate escapes,
megabyte strings and skill names) and the other stages sensibly, so every stage is reached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trellis.adapters import (
    FunctionBackend,
    LLMRequest,
    ReminderAdapter,
    ReminderConfig,
    parse_json_text,
    parse_model_json,
)
from trellis.agent import Agent, AgentConfig, skill
from trellis.memory import ModelRetry, TaskStatus, TrellisError
from trellis.planners import LLMPlanner, PlannerConfig

STAGES = ("remind", "plan", "act")


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=12,
    )


def _garbage() -> st.SearchStrategy[str]:
    """Texts a broken or hostile model might produce."""
    deep = st.integers(min_value=50, max_value=20_000).map(lambda n: "[" * n + "]" * n)
    deep_objects = st.integers(min_value=50, max_value=5_000).map(
        lambda n: '{"a":' * n + "1" + "}" * n
    )
    huge_int = st.integers(min_value=41, max_value=9_000).map(lambda n: "9" * n)
    in_plan = st.sampled_from(
        [
            '{"steps": [{"id": "1", "title": "x", "skill": "note", "args": {"text": NaN}}]}',
            '{"skill": "note", "args": {"text": "a\\u0000b"}}',
            '{"skill": "note", "args": {"text": "\\ud800"}}',
            '{"skill": "note", "args": {"text": 1e999}}',
            '{"skill": "note", "args": {"text": -Infinity}}',
            '{"kind": "preference", "polarity": "forbid", "subject": "\\u0000"}',
            '{"action": "' + "a" * 3_000_000 + '"}',
        ]
    )
    long_name = st.integers(min_value=100, max_value=2_000_000).map(
        lambda n: json.dumps({"skill": "s" * n, "args": {}})
    )
    long_title = st.integers(min_value=300, max_value=50_000).map(
        lambda n: json.dumps(
            {
                "steps": [
                    {"id": "1", "title": "t" * n, "skill": "note", "args": {}, "depends_on": []}
                ]
            }
        )
    )
    return st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
        _json_values().map(lambda v: json.dumps(v, allow_nan=True)),
        deep,
        deep_objects,
        huge_int,
        in_plan,
        long_name,
        long_title,
    )


GOOD_PLAN = json.dumps(
    {
        "steps": [
            {"id": "1", "title": "write a note", "skill": "note", "args": {"text": "hi"}},
        ]
    }
)
GOOD_CALL = json.dumps({"skill": "note", "args": {"text": "hi"}})
GOOD_CUE = json.dumps(
    {"kind": "preference", "polarity": "forbid", "action": "use", "subject": "blue cup"}
)


class Scripted:
    """Answers the stage under test with ``garbage``, the others sensibly."""

    def __init__(self) -> None:
        self.stage = "plan"
        self.garbage = ""

    def __call__(self, request: LLMRequest) -> str:
        properties = (request.json_schema or {}).get("properties", {})
        variants = (request.json_schema or {}).get("anyOf", [])
        if "steps" in properties:
            stage, good = "plan", GOOD_PLAN
        elif "polarity" in properties or "kind" in properties:
            stage, good = "remind", GOOD_CUE
        elif "skill" in properties or variants:
            stage, good = "act", GOOD_CALL
        else:
            stage, good = "other", "{}"
        return self.garbage if stage == self.stage else good


@skill(side_effects=False, timeout_s=5)
def note(text: str) -> str:
    """Write a note."""
    return text[:20]


@pytest.fixture(params=["sqlite", "postgres"])
def agent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Agent, Scripted]]:
    url = (
        f"sqlite:///{tmp_path}/garbage.db"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    script = Scripted()
    backend = FunctionBackend(script)
    planner = LLMPlanner(backend, config=PlannerConfig(max_attempts=2, max_replans_per_task=1))
    reminders = ReminderAdapter(backend, config=ReminderConfig(mode="model", max_attempts=2))
    built = Agent(
        config=AgentConfig(
            database_url=url, use_plan_args=False, max_replans=1, max_steps=6, act_attempts=2
        ),
        skills=[note],
        backend=backend,
        planner=planner,
        reminder_adapter=reminders,
        router=None,
    )
    try:
        yield built, script
    finally:
        built.close()


def _run_one(agent: Agent, script: Scripted, stage: str, garbage: str) -> None:
    script.stage, script.garbage = stage, garbage
    try:
        result = agent.run("write a note", reminders=["never use the blue cup"])
    except TrellisError:
        # Allowed by the contract, but then the task must not be left running either.
        task = agent.tasks(limit=1)[0]
        assert task.status is not TaskStatus.RUNNING
        return
    task = agent.store.get_task(result.task_id)
    assert task.status in (TaskStatus.DONE, TaskStatus.FAILED), (stage, task.status)
    assert result.outcome in ("success", "failed", "budget_exhausted")
    if stage == "remind":
        assert result.success  # a bad cue answer only loses that cue
    if stage in ("plan", "act") and garbage not in (GOOD_PLAN, GOOD_CALL):
        assert not result.success or stage == "act"


@pytest.mark.parametrize("stage", STAGES)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(garbage=_garbage())
def test_garbage_never_escapes(agent: tuple[Agent, Scripted], stage: str, garbage: str) -> None:
    built, script = agent
    _run_one(built, script, stage, garbage)


@pytest.mark.parametrize("stage", STAGES)
def test_the_drills_worst_answers(agent: tuple[Agent, Scripted], stage: str) -> None:
    """The answers that escaped in the operator's drills, each at every stage."""
    built, script = agent
    for garbage in [
        "[" * 100_000 + "]" * 100_000,  # RecursionError
        "1" * 5_000,  # ValueError: over 4,300 digits
        json.dumps({"skill": "x" * 2_000_000, "args": {}}),  # a 2 MB skill name
        '{"skill": "note", "args": {"text": NaN}}',  # NotSerializableError
        '{"skill": "note", "args": {"text": "\\u0000"}}',
    ]:
        _run_one(built, script, stage, garbage)


def test_a_huge_unknown_skill_is_recorded_short(agent: tuple[Agent, Scripted]) -> None:
    """A 2 MB invented skill name fails its step with a short record (it used to make the
    record unstorable, and every resume raised again)."""
    built, script = agent
    script.stage, script.garbage = "act", json.dumps({"skill": "x" * 2_000_000, "args": {}})
    result = built.run("write a note")
    assert not result.success
    failed = [n for n in built.tree(result.task_id).nodes if n.error]
    assert failed and all(len(n.error or "") < 5_000 for n in failed)
    assert built.resume(result.task_id).outcome == result.outcome  # resumes cleanly


def test_the_guard_itself() -> None:
    for text, reason in [
        ("[" * 40 + "]" * 40, "levels deep"),
        ("9" * 41, "characters"),
        ('{"a": NaN}', "NaN"),
        ('{"a": 1e999}', "out of range"),
        ('"\\u0000"', "NUL"),
        ('"\\udc00"', "surrogate"),
        ("x" * 300_000, "over the limit"),
        ("{", "not valid JSON"),
    ]:
        with pytest.raises(ModelRetry, match=reason):
            parse_model_json(text)
        value, error = parse_json_text(text)
        assert value is None and error is not None and len(error) < 300
    # Brackets inside strings (escaped quotes included) do not count as nesting.
    tricky = '{"a": "[[[\\"[[[", "b": ["\\\\", "]]]"]}'
    assert parse_model_json(tricky) == {"a": '[[["[[[', "b": ["\\", "]]]"]}
