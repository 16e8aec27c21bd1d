"""Skills: declaration from signatures, validation, timeouts, errors as data, the registry."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import BaseModel

from trellis.agent import (
    SkillContext,
    SkillRegistry,
    UnknownSkillError,
    skill,
)
from trellis.memory.errors import ModelRetry
from trellis.planners import SkillDefinitionError

CTX = SkillContext(task_id="t")


@skill(side_effects=False, timeout_s=2)
def add(a: int, b: int = 1) -> int:
    """Add two numbers.

    Longer text is not part of the description.
    """
    return a + b


@skill(needs_approval=True)
async def send(to: str, body: str, ctx: SkillContext) -> dict[str, str]:
    """Send a message."""
    await asyncio.sleep(0)
    return {"to": to, "task": ctx.task_id}


class Out(BaseModel):
    x: int


class MoveArgs(BaseModel):
    room: str


@skill
def move(args: MoveArgs) -> str:
    """Walk to a room."""
    return args.room


def test_spec_from_signature() -> None:
    spec = add.spec
    assert spec.name == "add"
    assert spec.description == "Add two numbers."
    assert spec.side_effects is False and spec.timeout_s == 2
    schema = spec.args_schema()
    assert schema["required"] == ["a"]
    assert set(schema["properties"]) == {"a", "b"}
    # The context parameter is injected, never part of the model's arguments.
    assert set(send.spec.args_schema()["properties"]) == {"to", "body"}
    assert send.spec.needs_approval is True
    assert move.spec.args_model is MoveArgs


async def test_invoke_sync_async_and_model_argument() -> None:
    assert (await add.invoke({"a": 2, "b": 3}, CTX)).result == 5
    outcome = await send.invoke({"to": "bob", "body": "hi"}, CTX)
    assert outcome.ok and outcome.result == {"to": "bob", "task": "t"}
    assert (await move.invoke({"room": "kitchen"}, CTX)).result == "kitchen"


async def test_bad_arguments_are_recorded_not_raised() -> None:
    outcome = await add.invoke({"a": "not a number"}, CTX)
    assert not outcome.ok
    assert outcome.error_type == "InvalidSkillArgsError"
    assert "a:" in (outcome.error or "")
    unknown = await add.invoke({"a": 1, "c": 2}, CTX)
    assert not unknown.ok and "unexpected argument" in (unknown.error or "")


async def test_raising_skill() -> None:
    @skill
    def broken() -> None:
        """Always fails."""
        raise KeyError("shelf")

    outcome = await broken.invoke({}, CTX)
    assert not outcome.ok
    assert outcome.error_type == "SkillFailedError"
    assert "KeyError" in (outcome.error or "") and "shelf" in (outcome.error or "")


async def test_hanging_sync_and_async_skills_time_out() -> None:
    @skill(timeout_s=0.2)
    def hang_sync() -> None:
        """Never returns in time."""
        time.sleep(5)

    @skill(timeout_s=0.2)
    async def hang_async() -> None:
        """Never returns in time."""
        await asyncio.sleep(5)

    for item in (hang_sync, hang_async):
        started = time.perf_counter()
        outcome = await item.invoke({}, CTX)
        assert time.perf_counter() - started < 2
        assert not outcome.ok and outcome.error_type == "SkillTimeoutError"
        assert "0.2 s" in (outcome.error or "")


async def test_unstorable_results() -> None:
    @skill
    def returns_object() -> object:
        """Returns something that is not JSON."""
        return object()

    @skill
    def returns_nan() -> float:
        """Returns NaN."""
        return float("nan")

    for item in (returns_object, returns_nan):
        outcome = await item.invoke({}, CTX)
        assert not outcome.ok
        assert outcome.error_type == "SkillResultNotSerializableError"

    @skill
    def returns_model() -> Out:
        """Returns a pydantic model."""
        return Out(x=3)

    assert (await returns_model.invoke({}, CTX)).result == {"x": 3}


def test_registry_only_runs_registered_skills() -> None:
    registry = SkillRegistry([add, send])
    assert registry.get("add") is add
    with pytest.raises(UnknownSkillError) as info:
        registry.get("launch_rocket")
    assert isinstance(info.value, ModelRetry)
    assert "add" in str(info.value) and "send" in str(info.value)
    with pytest.raises(SkillDefinitionError):
        registry.register(add)
    assert [s.name for s in registry.specs()] == ["add", "send"]


def test_bad_declarations() -> None:
    with pytest.raises(SkillDefinitionError, match="type annotation"):

        @skill
        def untyped(x) -> None:  # type: ignore[no-untyped-def]
            """No annotation."""

    with pytest.raises(SkillDefinitionError, match="description"):

        @skill
        def undocumented(x: int) -> None:
            pass

    with pytest.raises(SkillDefinitionError, match="kwargs"):

        @skill
        def variadic(**kwargs: int) -> None:
            """Variadic."""


def test_invoke_sync_matches_invoke() -> None:
    assert add.invoke_sync({"a": 2}, CTX).result == 3
    assert send.invoke_sync({"to": "x", "body": "y"}, CTX).result == {"to": "x", "task": "t"}

    @skill(timeout_s=0.2)
    def slow() -> None:
        """Too slow."""
        time.sleep(3)

    started = time.perf_counter()
    outcome = slow.invoke_sync({}, CTX)
    assert outcome.error_type == "SkillTimeoutError" and time.perf_counter() - started < 2
    assert add.invoke_sync({"a": "x"}, CTX).error_type == "InvalidSkillArgsError"
