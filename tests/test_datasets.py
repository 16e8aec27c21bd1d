"""Training-data builders: rows use the runtime's prompts and teach correct answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trellis_twc import TwcEnvironment
from trellis_twc._datasets import twc_act_examples, twc_configs

from trellis.adapters._reminders import build_cue_prompt, cue_json_schema
from trellis.agent import reminder_cue_examples, write_jsonl
from trellis.agent.errors import ForbiddenFoldError


def test_twc_rows_replay_to_success_and_stay_within_valid_actions() -> None:
    configs = twc_configs(range(2), max_locations=2, max_items=2)
    for config in configs:
        rows = list(twc_act_examples([config], recovery=0.0))
        assert rows, "every game has a gold path"
        env = TwcEnvironment(config)
        try:
            state = env.reset()
            for row in rows:
                action = json.loads(row["completion"])["action"]
                actions_line = next(
                    line for line in row["prompt"].splitlines() if line.startswith("Actions: ")
                )
                assert action in actions_line.removeprefix("Actions: ").split("; ")
                assert row["prompt"].endswith("JSON:")
                state = env.step(action)
            assert state.success, "the completions, played in order, must solve the game"
        finally:
            env.close()


def test_twc_recovery_rows_take_a_wrong_put_back_then_follow_the_gold_path() -> None:
    config = twc_configs([4], max_locations=2, max_items=2)[0]
    env = TwcEnvironment(config)
    try:
        env.reset()
        gold = env.gold_actions()
    finally:
        env.close()
    gold_puts = [a for a in gold if a.startswith("put ")]
    rows = list(twc_act_examples([config], recovery=1.0))
    assert rows == list(twc_act_examples([config], recovery=1.0)), "seeded by the game"
    actions = [json.loads(row["completion"])["action"] for row in rows]
    detours = [i for i, row in enumerate(rows) if "the last action was wrong" in row["prompt"]]
    assert len(detours) == len(gold_puts) > 0, "every gold put gets a detour at recovery=1"
    for index, put in zip(detours, gold_puts, strict=True):
        thing = put[len("put ") : put.rindex(" in ")]
        done = next(ln for ln in rows[index]["prompt"].splitlines() if ln.startswith("Done so"))
        wrong = done.split("; ")[-1]
        assert wrong.startswith(f"put {thing} in ") and wrong != put
        assert actions[index] == f"take {thing}"
        assert actions[index + 1] == put, "after taking it back, the gold put follows"
    # The wrong puts themselves are never taught.
    assert [a for a in actions if a.startswith("put ")] == gold_puts


def test_twc_recovery_must_be_a_probability() -> None:
    with pytest.raises(ValueError, match="recovery"):
        list(twc_act_examples(twc_configs([0]), recovery=1.5))


def test_twc_configs_refuse_the_test_fold() -> None:
    with pytest.raises(ForbiddenFoldError):
        twc_configs([1], fold="test")


def test_reminder_rows_match_their_truth_and_schema(tmp_path: Path) -> None:
    rows = reminder_cue_examples(40, seed=3)
    schema = cue_json_schema()
    kinds = set()
    for row in rows:
        completion = json.loads(row["completion"])
        assert completion == row["truth"]
        assert set(completion) == set(schema["required"])
        assert completion["polarity"] in schema["properties"]["polarity"]["enum"]
        assert row["prompt"] == build_cue_prompt(row["reminder"], few_shot=False)
        kinds.add(completion["kind"])
    assert kinds == {"preference", "correction", "context"}
    assert reminder_cue_examples(40, seed=3) == rows  # deterministic per seed
    assert reminder_cue_examples(40, seed=4) != rows
    path = tmp_path / "rows.jsonl"
    assert write_jsonl(rows, path) == 40
    assert len(path.read_text().splitlines()) == 40


def test_held_out_reminders_share_no_object_or_place_with_training_rows() -> None:
    train = reminder_cue_examples(400, seed=0)
    held = reminder_cue_examples(100, seed=1, vocabulary="held-out")
    train_subjects = {r["truth"]["subject"] for r in train}
    held_subjects = {r["truth"]["subject"] for r in held}
    assert held_subjects and not held_subjects & train_subjects
    assert not any(s in r["reminder"] for r in held for s in train_subjects)
    with pytest.raises(ValueError, match="vocabulary"):
        reminder_cue_examples(1, vocabulary="test")


def test_twc_rows_leave_out_gold_moves_the_runtime_would_not_offer() -> None:
    # With a one-place shortlist the real scorer (by similarity alone) ranks another
    # container first in this game, so its gold open and put are not offered and get no row.
    config = twc_configs([0], max_locations=1, max_items=1)[0].model_copy(
        update={"place_homes": False}
    )
    narrow = list(
        twc_act_examples([config.model_copy(update={"place_shortlist": 1})], recovery=0.0)
    )
    full = list(twc_act_examples([config.model_copy(update={"place_shortlist": 0})], recovery=0.0))
    assert 0 < len(narrow) < len(full)
    for row in narrow:
        action = json.loads(row["completion"])["action"]
        offered = next(ln for ln in row["prompt"].splitlines() if ln.startswith("Actions: "))
        assert action in offered.removeprefix("Actions: ").split("; ")
