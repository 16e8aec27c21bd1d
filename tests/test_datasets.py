"""Training-data builders: rows use the runtime's prompts and teach correct answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters._reminders import build_cue_prompt, cue_json_schema
from agent._datasets import reminder_cue_examples, twc_act_examples, twc_configs, write_jsonl
from agent._twc import TwcEnvironment
from agent.errors import ForbiddenFoldError


def test_twc_rows_replay_to_success_and_stay_within_valid_actions() -> None:
    configs = twc_configs(range(2), max_locations=2, max_items=2)
    for config in configs:
        rows = list(twc_act_examples([config]))
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
