"""Past successes: similarity retrieval weighted by value, exploration, AlignBot value updates."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from trellis.adapters import rule_extract
from trellis.adapters._embeddings import HashingEmbedder
from trellis.memory import UsageError, make_engine, upgrade
from trellis.planners import CaseConfig, CaseMemory, Plan, UnknownCaseError

PLAN = Plan.model_validate(
    {"steps": [{"id": "a", "title": "open fridge", "skill": "open", "args": {"obj": "fridge"}}]}
)


@pytest.fixture
def engine(database_url: str) -> Engine:
    engine = make_engine(database_url)
    upgrade(engine)
    return engine


def test_retrieve_ranks_by_similarity_for_this_user_only(engine: Engine) -> None:
    memory = CaseMemory(engine, HashingEmbedder(), CaseConfig(explore=False))
    milk = memory.index("ann", "get the milk from the fridge", PLAN)
    memory.index("ann", "water the plants in the garden", PLAN)
    memory.index("bob", "get the milk from the fridge", PLAN)
    found = memory.retrieve("ann", "get the juice from the fridge", k=1)
    assert [c.id for c in found] == [milk.id]
    assert 0 < found[0].similarity <= 1 and found[0].plan == PLAN
    assert memory.retrieve("carol", "get the milk", k=3) == []
    assert memory.retrieve("ann", "get the milk", k=0) == []


def test_cues_are_part_of_the_indexed_text(engine: Engine) -> None:
    memory = CaseMemory(engine, HashingEmbedder(), CaseConfig(explore=False, min_similarity=-1))
    plain = memory.index("ann", "set the table", PLAN)
    ruled = memory.index(
        "ann", "set the table", PLAN, cues=rule_extract("never use the blue plates")
    )
    assert ruled.cues == ("never use the blue plates",) and plain.cues == ()
    top = memory.retrieve("ann", "set the table", k=1, cues=["never use the blue plates"])
    assert top[0].id == ruled.id
    assert memory.retrieve("ann", "set the table", k=1)[0].id == plain.id


def test_reward_follows_alignbot_update_rule(engine: Engine) -> None:
    memory = CaseMemory(engine, HashingEmbedder(), CaseConfig(initial_value=0.5, learning_rate=0.5))
    case = memory.index("ann", "get the milk", PLAN)
    assert case.value == 0.5
    up = memory.reward(case.id or 0, True)
    assert up.value == pytest.approx(0.75)
    down = memory.reward(case.id or 0, False)
    assert down.value == pytest.approx(0.375)
    assert memory.get(case.id or 0).value == pytest.approx(0.375)
    with pytest.raises(UnknownCaseError):
        memory.reward(999_999, True)


def test_value_reorders_similar_cases_and_one_low_value_case_explores(engine: Engine) -> None:
    memory = CaseMemory(engine, HashingEmbedder(), CaseConfig(learning_rate=0.5, value_weight=1.0))
    a = memory.index("ann", "put the cup in the sink", PLAN)
    b = memory.index("ann", "put the cups in the sink", PLAN)
    c = memory.index("ann", "put the mug in the sink", PLAN)
    for _ in range(3):
        memory.reward(b.id or 0, True)
        memory.reward(a.id or 0, False)
    found = memory.retrieve("ann", "put the cup in the sink", k=2)
    # b (high value) beats the exact match a (low value); the exploration slot goes to the
    # most similar case whose value is below b's: a.
    assert [x.id for x in found] == [b.id, a.id]
    assert [x.exploration for x in found] == [False, True]
    three = memory.retrieve("ann", "put the cup in the sink", k=3)
    assert {x.id for x in three} == {a.id, b.id, c.id} and three[-1].exploration


def test_bad_inputs(engine: Engine) -> None:
    memory = CaseMemory(engine, HashingEmbedder())
    with pytest.raises(UsageError, match="empty goal"):
        memory.index("ann", "  ", PLAN)

    class Flat:
        def embed(self, texts: list[str]) -> list[float]:
            return [1.0, 2.0]

    with pytest.raises(UsageError, match="shape"):
        CaseMemory(engine, Flat()).index("ann", "x", PLAN)


def test_settle_rewards_the_cases_shown_and_indexes_a_success_once(engine: Engine) -> None:
    memory = CaseMemory(engine, HashingEmbedder(), CaseConfig(explore=False))
    old = memory.index("ann", "get the milk from the fridge", PLAN)
    memory.note_use("t1", "ann", [old.id or 0])
    memory.note_use("t1", "ann", [old.id or 0])  # a second plan of the same task
    assert memory.used("t1") == [old.id]
    new = memory.settle("t1", "ann", success=True, goal="get the juice", plan=PLAN)
    assert new is not None and new.goal == "get the juice" and new.plan == PLAN
    assert memory.get(old.id or 0).value == pytest.approx(0.5 + 0.3 * 0.5)
    # Settled once: a resumed run that finishes again changes nothing.
    assert memory.settle("t1", "ann", success=True, goal="get the juice", plan=PLAN) is None
    assert memory.get(old.id or 0).value == pytest.approx(0.65)
    assert [c.goal for c in memory.cases("ann")] == [
        "get the milk from the fridge",
        "get the juice",
    ]


def test_a_failed_task_lowers_the_cases_it_was_shown_and_stores_nothing(engine: Engine) -> None:
    memory = CaseMemory(engine, HashingEmbedder(), CaseConfig(explore=False))
    old = memory.index("ann", "get the milk from the fridge", PLAN)
    memory.note_use("t2", "ann", [old.id or 0])
    assert memory.settle("t2", "ann", success=False, goal="get the milk", plan=PLAN) is None
    assert memory.get(old.id or 0).value == pytest.approx(0.35)
    assert len(memory.cases("ann")) == 1
    memory.note_use("t2", "ann", [999])  # after settlement: ignored
    assert memory.used("t2") == [old.id]
