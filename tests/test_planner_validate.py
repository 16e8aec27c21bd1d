"""Plan schema and validation: every kind of bad plan is rejected with feedback naming the fix."""

from __future__ import annotations

import json

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from trellis.adapters import Cue, rule_extract
from trellis.planners import (
    DECOMPOSE,
    InvalidSkillArgsError,
    Plan,
    PlanStep,
    PlanValidationError,
    SkillDefinitionError,
    SkillSpec,
    cue_violations,
    plan_json_schema,
    validate_plan,
)
from trellis.planners.errors import ModelRetry


class Obj(BaseModel):
    obj: str = Field(min_length=1)


class Put(BaseModel):
    obj: str
    container: str


class Go(BaseModel):
    room: str


SKILLS = [
    SkillSpec("go_to", "Walk to a room.", Go, side_effects=False),
    SkillSpec("pick_up", "Pick up an object.", Obj),
    SkillSpec("put", "Put an object into a container.", Put),
    SkillSpec("open", "Open a container or door.", Obj),
    SkillSpec("close", "Close a container or door.", Obj),
]


def step(id: str, skill: str, deps: list[str] | None = None, **args: str) -> dict[str, object]:
    return {"id": id, "title": f"{skill} {' '.join(args.values())}", "skill": skill,
            "args": args, "depends_on": deps or []}  # fmt: skip


def problems(raw: object, cues: list[Cue] | None = None) -> str:
    with pytest.raises(PlanValidationError) as info:
        validate_plan(raw, SKILLS, cues or [])  # type: ignore[arg-type]
    assert isinstance(info.value, ModelRetry)
    return str(info.value)


def test_skill_spec_rejects_bad_definitions_and_checks_args() -> None:
    with pytest.raises(SkillDefinitionError, match="invalid skill name"):
        SkillSpec("Pick Up", "x", Obj)
    with pytest.raises(SkillDefinitionError, match="reserved"):
        SkillSpec(DECOMPOSE, "x", Obj)
    with pytest.raises(SkillDefinitionError, match="BaseModel"):
        SkillSpec("x", "x", dict)  # type: ignore[arg-type]
    spec = SKILLS[3]
    assert spec.validate_args({"obj": "fridge"}) == Obj(obj="fridge")
    with pytest.raises(InvalidSkillArgsError, match="unexpected argument"):
        spec.validate_args({"obj": "fridge", "force": "yes"})
    with pytest.raises(InvalidSkillArgsError, match="obj: Field required"):
        spec.validate_args({})
    assert spec.signature() == "open(obj: str) - Open a container or door."
    assert spec.args_schema()["required"] == ["obj"]


def test_valid_plan_from_text_fence_and_bare_list() -> None:
    steps = [step("a", "open", obj="fridge"), step("b", "pick_up", ["a"], obj="milk")]
    plan = validate_plan(json.dumps({"steps": steps}), SKILLS)
    assert [s.id for s in plan.steps] == ["a", "b"]
    assert validate_plan("```json\n" + json.dumps({"steps": steps}) + "\n```", SKILLS) == plan
    assert validate_plan(steps, SKILLS) == plan
    specs = plan.to_node_specs()
    assert specs[1].key == "b" and specs[1].depends_on == ["a"]
    assert specs[1].input == {"skill": "pick_up", "args": {"obj": "milk"}}


def test_numeric_ids_are_accepted_as_text() -> None:
    raw = {"steps": [step("x", "open", obj="door") | {"id": 1},
                     step("y", "close", obj="door") | {"id": 2, "depends_on": [1]}]}  # fmt: skip
    plan = validate_plan(raw, SKILLS)
    assert plan.steps[1].depends_on == ["1"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("I will open the fridge", "not JSON"),
        ('{"steps": [', "not JSON"),
        ("", "empty"),
        ('{"plan": "open the fridge"}', "not a plan"),
        ('{"steps": [{"id": "a"}]}', "not a plan"),
        ('{"steps": []}', "no steps"),
        ([], "no steps"),
    ],
)
def test_unusable_answers(raw: object, expected: str) -> None:
    assert expected in problems(raw)


def test_unknown_skill_names_the_catalogue() -> None:
    text = problems({"steps": [step("a", "teleport", room="kitchen")]})
    assert "unknown skill 'teleport'" in text
    assert "close, go_to, open, pick_up, put" in text


def test_bad_args_dangling_and_self_dependencies_are_all_reported() -> None:
    text = problems(
        {
            "steps": [
                step("a", "put", obj="cup"),
                step("b", "open", ["zzz"], obj="fridge"),
                step("c", "close", ["c"], obj="fridge"),
            ]
        }
    )
    assert "step 'a': invalid arguments for skill 'put': container: Field required" in text
    assert "step 'b' depends on 'zzz', which is not a step id" in text
    assert "step 'c' depends on itself" in text


def test_cycle_and_duplicate_ids() -> None:
    cyc = {"steps": [step("a", "open", ["c"], obj="x"), step("b", "open", ["a"], obj="y"),
                     step("c", "open", ["b"], obj="z")]}  # fmt: skip
    assert "cycle: a -> c -> b -> a" in problems(cyc)
    dup = {"steps": [step("a", "open", obj="x"), step("a", "close", obj="x")]}
    assert "step id 'a' is used twice" in problems(dup)


def test_too_many_steps_and_decompose_policy() -> None:
    many = [step(str(i), "open", obj="door") for i in range(5)]
    with pytest.raises(PlanValidationError, match="over the limit of 3"):
        validate_plan(many, SKILLS, max_steps=3)
    sub = [{"id": "a", "title": "set the table", "skill": DECOMPOSE, "args": {}, "depends_on": []}]
    assert validate_plan(sub, SKILLS).steps[0].is_decompose
    with pytest.raises(PlanValidationError, match="'decompose', which is not allowed"):
        validate_plan(sub, SKILLS, allow_decompose=False)


def test_forbid_cue_is_enforced_on_args_and_titles() -> None:
    cues = rule_extract("Never use the blue plates.")
    bad = {"steps": [step("a", "pick_up", obj="blue plate")]}
    assert "breaks the rule 'Never use the blue plates'" in problems(bad, cues)
    also_bad = [{"id": "a", "title": "Set the table with blue plates", "skill": DECOMPOSE,
                 "args": {}, "depends_on": []}]  # fmt: skip
    assert "step 'a' (decompose) breaks the rule" in problems(also_bad, cues)
    ok = validate_plan({"steps": [step("a", "pick_up", obj="red plate")]}, SKILLS, cues)
    assert ok.steps[0].args == {"obj": "red plate"}


def test_forbid_with_a_generic_verb_covers_any_use() -> None:
    cues = rule_extract("do not take the white forks")
    assert "breaks the rule" in problems([step("a", "pick_up", obj="white fork")], cues)
    assert "breaks the rule" in problems(
        [step("a", "put", obj="white forks", container="box")], cues
    )


def test_forbid_cue_with_action_only_hits_that_action() -> None:
    cues = rule_extract("don't open the window")
    assert "breaks the rule" in problems([step("a", "open", obj="window")], cues)
    validate_plan([step("a", "close", obj="window")], SKILLS, cues)


def test_require_cue_afterwards_checks_presence_and_order() -> None:
    cues = rule_extract("close the fridge afterwards")
    missing = [step("a", "open", obj="fridge"), step("b", "pick_up", ["a"], obj="milk")]
    assert "add a step that does 'close fridge' after" in problems(missing, cues)
    early = [step("c", "close", obj="fridge"), step("a", "open", obj="fridge")]
    assert "must come after step(s) 'a'" in problems(early, cues)
    good = [*missing, step("c", "close", ["b"], obj="fridge")]
    assert len(validate_plan(good, SKILLS, cues).steps) == 3
    # The rule only applies to plans that touch the fridge.
    validate_plan([step("a", "go_to", room="garden")], SKILLS, cues)


def test_require_before_and_unconditional_require() -> None:
    before = [
        Cue(kind="correction", polarity="require", action="go to", subject="kitchen",
            constraint="go to the kitchen before opening the fridge", trigger="fridge",
            order="before"),
    ]  # fmt: skip
    wrong = [step("a", "open", obj="fridge"), step("b", "go_to", ["a"], room="kitchen")]
    assert "must come before step(s) 'a'" in problems(wrong, before)
    right = [step("b", "go_to", room="kitchen"), step("a", "open", ["b"], obj="fridge")]
    validate_plan(right, SKILLS, before)
    always = rule_extract("always close the door")
    assert "add a step that does 'close door'" in problems([step("a", "go_to", room="x")], always)


def test_prefer_and_inform_cues_are_advice_only() -> None:
    cues = rule_extract("I prefer the red mug. Remember that the keys are in the drawer.")
    assert [c.polarity for c in cues] == ["prefer", "inform"]
    plan = Plan(steps=[PlanStep(id="a", title="pick keys", skill="pick_up", args={"obj": "keys"})])
    assert cue_violations(plan, cues) == []


def test_plan_json_schema_constrains_skills_and_args() -> None:
    schema = plan_json_schema(SKILLS, max_steps=4)
    steps = schema["properties"]["steps"]
    assert steps["maxItems"] == 4 and len(steps["prefixItems"]) == 4 and steps["items"] is False
    first = steps["prefixItems"][0]["anyOf"]
    consts = [v["properties"]["skill"]["const"] for v in first]
    assert consts == ["go_to", "pick_up", "put", "open", "close", DECOMPOSE]
    ref = first[2]["properties"]["args"]["$ref"].rsplit("/", 1)[-1]
    put = schema["$defs"][ref]
    assert put["required"] == ["obj", "container"] and put["additionalProperties"] is False
    loose = plan_json_schema(SKILLS, per_skill_args=False, allow_decompose=False)
    loose_first = loose["properties"]["steps"]["prefixItems"][0]
    assert loose_first["properties"]["skill"]["enum"] == [
        "go_to", "pick_up", "put", "open", "close"
    ]  # fmt: skip
    assert len(json.dumps(loose)) < len(json.dumps(schema)) < 12000  # grammar, not prompt


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=10))
def test_cycle_detection_agrees_with_networkx(edges: list[tuple[int, int]]) -> None:
    graph = nx.DiGraph()
    graph.add_nodes_from(range(6))
    graph.add_edges_from((a, b) for a, b in edges if a != b)
    steps = [
        step(str(n), "open", [str(d) for d in graph.successors(n)], obj="door") for n in range(6)
    ]
    if nx.is_directed_acyclic_graph(graph):
        assert len(validate_plan(steps, SKILLS).steps) == 6
    else:
        assert "forms a cycle" in problems(steps)


def test_inflections_match_between_cues_and_steps() -> None:
    cues = rule_extract("wash your hands before cooking")
    plan = [step("a", "open", obj="cooked rice"), step("b", "open", obj="oven")]
    wrong = [
        {"id": "c", "title": "cook the pasta", "skill": DECOMPOSE, "args": {}, "depends_on": []}
    ]
    assert "add a step that does 'wash hands' before" in problems(wrong, cues)
    validate_plan(plan, SKILLS, rule_extract("never open the dishes"))
    assert "breaks the rule" in problems(
        [step("a", "open", obj="dish")], rule_extract("never open the dishes")
    )
