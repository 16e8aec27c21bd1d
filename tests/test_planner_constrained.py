"""Constrained planning: the position-aware plan schema, training rows, and the real model.

The schema is checked with llguidance itself (the embedded backend's decoder) over a byte-level
tokenizer, so every document below is accepted or refused exactly as constrained decoding
would allow or forbid writing it. The slow test decodes plans with the real gemma-3-270m.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from llguidance import LLMatcher, LLTokenizer, TokenizerWrapper
from pydantic import BaseModel, Field

from trellis.adapters import (
    AdapterRegistry,
    EmbeddedBackend,
    EmbeddedConfig,
    FunctionBackend,
    LLMRequest,
    SamplingParams,
    create_lora_adapter,
    default_model_dir,
    register_shipped_adapters,
    rule_extract,
    verify_model,
)
from trellis.adapters._embedded_model import compile_schema
from trellis.agent.runtime._defaults import default_planner
from trellis.memory import TaskStore, run_sync
from trellis.planners import (
    DECOMPOSE,
    LLMPlanner,
    OtherStep,
    Plan,
    PlannerConfig,
    PlanRequest,
    PlanValidationError,
    SkillSpec,
    build_plan_prompt,
    plan_completion,
    plan_json_schema,
    plan_row,
    validate_plan,
)


class Place(BaseModel):
    place: Literal["counter", "sink", "table", "fridge", "cupboard"]


class Item(BaseModel):
    item: str


class Door(BaseModel):
    door: Literal["fridge", "cupboard"]


class Nothing(BaseModel):
    pass


SKILLS = (
    SkillSpec("look", "Describe the kitchen.", Nothing, side_effects=False),
    SkillSpec("go_to", "Move the robot to a place.", Place),
    SkillSpec("pick_up", "Pick up an object at the robot's place.", Item),
    SkillSpec("put_down", "Put the held object down at the robot's place.", Item),
    SkillSpec("open", "Open the fridge or the cupboard (go there first).", Door),
    SkillSpec("close", "Close the fridge or the cupboard (go there first).", Door),
)
NAMES = {s.name for s in SKILLS}


class _Bytes:
    """A byte-level tokenizer: llguidance then checks documents character by character."""

    eos_token_id = 256
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]
    special_token_ids = [256]

    def __call__(self, text: str | bytes) -> list[int]:
        return list(text.encode() if isinstance(text, str) else text)


BYTES = LLTokenizer(TokenizerWrapper(_Bytes()))


def decodable(schema: dict[str, Any], document: str) -> bool:
    """Whether constrained decoding under ``schema`` can write exactly ``document``."""
    matcher = LLMatcher(BYTES, compile_schema(schema), log_level=0)
    data = list(document.encode())
    return matcher.try_consume_tokens(data) == len(data) and matcher.is_accepting()


def step(
    k: int, skill: str, args: dict[str, Any] | None = None, deps: Sequence[str] = ()
) -> dict[str, Any]:
    return {
        "id": str(k),
        "title": f"{skill} step",
        "skill": skill,
        "args": args or {},
        "depends_on": list(deps),
    }


def doc(*steps: dict[str, Any]) -> str:
    return json.dumps({"steps": list(steps)}, separators=(",", ":"))


# --- the schema ------------------------------------------------------------------------------


def test_schema_accepts_plans_whose_steps_depend_on_earlier_steps() -> None:
    schema = plan_json_schema(SKILLS, max_steps=4)
    assert decodable(schema, doc(step(1, "pick_up", {"item": "apple"})))
    assert decodable(
        schema,
        doc(
            step(1, "go_to", {"place": "fridge"}),
            step(2, "open", {"door": "fridge"}, ["1"]),
            step(3, "pick_up", {"item": "milk"}, ["1", "2"]),
            step(4, "look", {}, []),
        ),
    )


def test_schema_offers_steps_already_in_the_task_to_every_position() -> None:
    schema = plan_json_schema(SKILLS, max_steps=3, other_ids=["task.1", "task.3.2"])
    assert decodable(
        schema,
        doc(
            step(1, "go_to", {"place": "sink"}, ["task.3.2"]),
            step(2, "look", {}, ["1", "task.1"]),
        ),
    )
    assert not decodable(schema, doc(step(1, "look", {}, ["task.2"])))  # not offered
    assert not decodable(
        plan_json_schema(SKILLS, max_steps=3), doc(step(1, "look", {}, ["task.1"]))
    )
    plan = validate_plan(doc(step(1, "look", {}, ["task.1"])), SKILLS, other_ids={"task.1"})
    assert plan.steps[0].depends_on == ["task.1"]
    with pytest.raises(PlanValidationError, match=r"steps already in the task: task\.1"):
        validate_plan(doc(step(1, "look", {}, ["task.2"])), SKILLS, other_ids={"task.1"})
    request = PlanRequest(
        goal="wash up",
        skills=SKILLS,
        other_steps=(OtherStep(id="task.1", title="fill the sink", status="pending"),),
    )
    assert "- task.1: fill the sink (pending)" in build_plan_prompt(request)
    # A training row keeps the dependency on the existing step as the decoder writes it.
    row = plan_row(request, Plan.model_validate({"steps": [step(7, "look", {}, ["task.1"])]}))
    assert json.loads(row["completion"])["steps"][0]["depends_on"] == ["task.1"]


@pytest.mark.parametrize(
    "document",
    [
        doc(step(1, "pick_up", {"item": "apple"}, ["1"])),  # self
        doc(step(1, "go_to", {"place": "sink"}, ["2"]), step(2, "look")),  # forward
        doc(step(1, "go_to", {"place": "sink"}), step(2, "look", {}, ["2"])),  # self, later
        doc(step(1, "look"), step(2, "look", {}, ["1"]), step(3, "look", {}, ["4"])),  # dangling
        doc(step(2, "look")),  # ids follow positions
        doc(step(1, "look"), step(1, "look")),  # duplicate id
        doc(step(1, "look"), step(3, "look")),  # skipped id
    ],
    ids=["self", "forward", "self-later", "dangling", "wrong-id", "duplicate-id", "skipped-id"],
)
def test_schema_refuses_self_forward_and_dangling_dependencies(document: str) -> None:
    assert not decodable(plan_json_schema(SKILLS, max_steps=4), document)


@pytest.mark.parametrize(
    "document",
    [
        doc(step(1, "fly", {})),  # unknown skill
        doc(step(1, "go_to", {"place": "moon"})),  # argument outside its enum
        doc(step(1, "go_to", {"place": "sink", "speed": 2})),  # unknown argument
        doc(step(1, "pick_up", {})),  # missing argument
        doc(step(1, "open", {"item": "fridge"})),  # another skill's arguments
        doc(*[step(k, "look") for k in range(1, 6)]),  # over max_steps
        json.dumps({"steps": []}),
        doc({**step(1, "look"), "title": ""}),
        doc({**step(1, "look"), "title": "x" * 41}),
        doc(step(1, DECOMPOSE)),  # not allowed here
    ],
    ids=[
        "unknown-skill",
        "bad-enum",
        "extra-arg",
        "missing-arg",
        "other-args",
        "too-many",
        "empty",
        "empty-title",
        "long-title",
        "decompose",
    ],
)
def test_schema_refuses_unknown_skills_bad_arguments_and_limits(document: str) -> None:
    schema = plan_json_schema(SKILLS, max_steps=4, allow_decompose=False, max_title_chars=40)
    assert not decodable(schema, document)


def test_schema_options_decompose_and_loose_arguments() -> None:
    with_decompose = plan_json_schema(SKILLS, max_steps=3)
    assert decodable(with_decompose, doc(step(1, DECOMPOSE), step(2, "look", {}, ["1"])))
    assert not decodable(with_decompose, doc(step(1, DECOMPOSE, {"x": 1})))
    loose = plan_json_schema(SKILLS, max_steps=3, per_skill_args=False, allow_decompose=False)
    assert decodable(loose, doc(step(1, "go_to", {"anything": 1})))  # names only
    assert not decodable(loose, doc(step(1, "fly")))
    assert not decodable(loose, doc(step(1, "look", {}, ["1"])))  # positions still hold
    assert len(json.dumps(loose)) < len(json.dumps(with_decompose))


def test_schema_is_compact_and_has_no_all_of() -> None:
    schema = plan_json_schema(SKILLS, max_steps=8, allow_decompose=False)
    text = json.dumps(schema)
    assert "allOf" not in text  # some decoders (xgrammar) silently ignore multi-branch allOf
    steps = schema["properties"]["steps"]
    assert len(steps["prefixItems"]) == steps["maxItems"] == 8 and steps["items"] is False
    assert steps["prefixItems"][0]["anyOf"][0]["properties"]["id"] == {"const": "1"}
    # Argument schemas are written once and referenced from every position.
    assert text.count('"required": ["place"]') == 1
    assert len(text) < 20_000


def test_schema_bounds_free_text_and_integers_but_keeps_a_skills_own_limits() -> None:
    """A small model can loop inside a value ("10101...") until its tokens run out."""

    class Count(BaseModel):
        item: str
        quantity: int = 1
        code: str = Field(default="x", max_length=3)

    skills = (SkillSpec("pick", "Pick a quantity of an item.", Count),)
    schema = plan_json_schema(skills, max_steps=1, allow_decompose=False)
    args = schema["$defs"]["args_pick"]["properties"]
    assert args["item"]["maxLength"] == 200 and args["code"]["maxLength"] == 3
    assert args["quantity"]["maximum"] == 10**9 and args["quantity"]["minimum"] == -(10**9)
    assert decodable(schema, doc(step(1, "pick", {"item": "bolt", "quantity": 2})))
    assert not decodable(schema, doc(step(1, "pick", {"item": "bolt", "quantity": 10**10})))
    assert not decodable(schema, doc(step(1, "pick", {"item": "b" * 201})))
    assert not decodable(schema, doc(step(1, "pick", {"item": "bolt", "code": "abcd"})))


def test_every_document_the_schema_allows_also_validates() -> None:
    """What the decoder can write, validate_plan accepts (ids, dependencies, skills, args)."""
    schema = plan_json_schema(SKILLS, max_steps=3, allow_decompose=False)
    document = doc(
        step(1, "go_to", {"place": "cupboard"}),
        step(2, "open", {"door": "cupboard"}, ["1"]),
        step(3, "close", {"door": "cupboard"}, ["2", "1"]),
    )
    assert decodable(schema, document)
    assert len(validate_plan(document, SKILLS, allow_decompose=False).steps) == 3


# --- training rows ---------------------------------------------------------------------------


CONFIG = PlannerConfig(max_steps=8, max_tokens=320, allow_decompose=False, max_title_chars=40)


def _request(goal: str = "get the milk", reminders: Sequence[str] = ()) -> PlanRequest:
    cues = tuple(c for r in reminders for c in rule_extract(r))
    return PlanRequest(goal=goal, skills=SKILLS, cues=cues)


def _plan(*calls: tuple[str, dict[str, Any]], ids: Sequence[str] | None = None) -> Plan:
    names = list(ids or [str(i + 1) for i in range(len(calls))])
    return Plan.model_validate(
        {
            "steps": [
                {
                    "id": names[i],
                    "title": f"{skill} {' '.join(map(str, args.values()))}".strip(),
                    "skill": skill,
                    "args": args,
                    "depends_on": [names[i - 1]] if i else [],
                }
                for i, (skill, args) in enumerate(calls)
            ]
        }
    )


MILK = _plan(
    ("go_to", {"place": "fridge"}),
    ("open", {"door": "fridge"}),
    ("pick_up", {"item": "milk"}),
    ("close", {"door": "fridge"}),
)


def test_plan_row_prompt_is_what_the_planner_sends() -> None:
    request = _request(reminders=["never use the blue plates"])
    row = plan_row(request, MILK, config=CONFIG)
    sent: list[LLMRequest] = []

    def answer(llm_request: LLMRequest) -> str:
        sent.append(llm_request)
        return row["completion"]

    outcome = run_sync(LLMPlanner(FunctionBackend(answer), config=CONFIG).plan(request))
    assert row["prompt"] == sent[0].prompt
    assert row["prompt"] == build_plan_prompt(
        request, max_context_chars=CONFIG.max_context_chars, allow_decompose=False
    )
    assert DECOMPOSE not in row["prompt"]  # not offered when the schema forbids it
    assert outcome.first_attempt_valid and outcome.plan == MILK
    assert sent[0].json_schema == plan_json_schema(
        SKILLS, max_steps=8, allow_decompose=False, max_title_chars=40
    )


def test_plan_row_completion_is_what_the_decoder_writes() -> None:
    row = plan_row(_request(), MILK, config=CONFIG)
    completion = row["completion"]
    assert completion.startswith('{"steps":[{"id":"1","title":"go_to fridge","skill":"go_to"')
    compact = json.dumps(json.loads(completion), separators=(",", ":"), ensure_ascii=False)
    assert completion == compact  # no whitespace outside strings, keys in schema order
    schema = plan_json_schema(SKILLS, max_steps=8, allow_decompose=False, max_title_chars=40)
    assert decodable(schema, completion)


def test_plan_row_renumbers_ids_orders_arguments_and_refuses_forward_dependencies() -> None:
    class Move(BaseModel):
        item: str
        place: str

    skills = (*SKILLS, SkillSpec("move", "Move an object to a place.", Move))
    request = PlanRequest(goal="move the mug", skills=skills)
    lettered = Plan.model_validate(
        {
            "steps": [
                {"id": "a", "title": "look", "skill": "look", "args": {}},
                {
                    "id": "b",
                    "title": "move mug",
                    "skill": "move",
                    "args": {"place": "sink", "item": "mug"},  # not in field order
                    "depends_on": ["a"],
                },
            ]
        }
    )
    completion = json.loads(plan_completion(lettered, request))
    assert [s["id"] for s in completion["steps"]] == ["1", "2"]
    assert completion["steps"][1]["depends_on"] == ["1"]
    assert list(completion["steps"][1]["args"]) == ["item", "place"]
    backwards = Plan.model_validate(
        {
            "steps": [
                {"id": "a", "title": "look", "skill": "look", "depends_on": ["b"]},
                {"id": "b", "title": "look again", "skill": "look"},
            ]
        }
    )
    with pytest.raises(ValueError, match="after the steps it depends on"):
        plan_completion(backwards, request)


def test_plan_row_refuses_plans_the_runtime_would_reject() -> None:
    blue = _plan(("pick_up", {"item": "blue plate"}))
    with pytest.raises(PlanValidationError, match="blue plates"):
        plan_row(_request(reminders=["never use the blue plates"]), blue, config=CONFIG)
    long_title = Plan.model_validate(
        {"steps": [{"id": "1", "title": "look " * 20, "skill": "look"}]}
    )
    with pytest.raises(ValueError, match="over 40 characters"):
        plan_row(_request(), long_title, config=CONFIG)


def test_default_planner_uses_the_plan_adapter_when_registered(tmp_path: Path) -> None:
    backend = FunctionBackend(lambda request: "")
    store = TaskStore.open(f"sqlite:///{tmp_path}/t.db")
    try:
        registry = AdapterRegistry(store.engine, roots=[tmp_path])
        assert default_planner(backend).adapter is None  # no registry: the base model
        register_shipped_adapters(registry)
        # No plan adapter ships (the trained one did not beat the base model on the dev
        # worlds, bench/results/bench_plans.json): the base model plans.
        assert default_planner(backend, registry).adapter is None
        folder = create_lora_adapter(default_model_dir(), tmp_path / "plan", seed=1)
        registry.add("plan", folder, description="plans app goals", examples=["tidy up"])
        # A user's own adapter named "plan" serves planning, shipped adapters on or off.
        assert default_planner(backend, registry).adapter == "plan"
        assert default_planner(backend, registry, shipped=False).adapter == "plan"
        config = default_planner(backend).config
        assert config.max_steps == 8 and not config.allow_decompose
    finally:
        store.close()


# --- the real model --------------------------------------------------------------------------


@pytest.mark.slow
def test_real_model_decodes_plans_with_valid_ids_and_dependencies() -> None:
    """gemma-3-270m under the schema: every answer has ids 1..n, earlier-only dependencies and
    catalogue skills, and validates (the base model with no adapter)."""
    assert verify_model(default_model_dir(), full=False), (
        "the base model is not prepared: run `trellis model prepare` (this test needs it)"
    )
    goals = ["open the fridge", "put the apple on the table", "get the milk from the fridge"]

    async def decode() -> list[Any]:
        backend = EmbeddedBackend(EmbeddedConfig(threads=2))
        await backend.start()
        try:
            schema = plan_json_schema(SKILLS, max_steps=4, allow_decompose=False)
            requests = [
                LLMRequest(
                    prompt=build_plan_prompt(_request(goal), allow_decompose=False),
                    json_schema=schema,
                    sampling=SamplingParams(max_tokens=200),
                )
                for goal in goals
            ]
            return list(await asyncio.gather(*(backend.generate(r) for r in requests)))
        finally:
            await backend.aclose()

    for result in asyncio.run(decode()):
        assert result.finish_reason == "stop", result.text  # room enough for a whole plan
        assert result.json_error is None and isinstance(result.parsed, dict), result.text
        steps = result.parsed["steps"]
        assert 1 <= len(steps) <= 4
        for k, s in enumerate(steps, start=1):
            assert s["id"] == str(k)
            assert all(1 <= int(d) < k for d in s["depends_on"]), s
            assert s["skill"] in NAMES
        plan = validate_plan(result.parsed, SKILLS, allow_decompose=False)
        assert [s.id for s in plan.steps] == [str(k) for k in range(1, len(steps) + 1)]
