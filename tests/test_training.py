"""LoRA training: real peft training steps on the real base model (slow), and data checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trellis.adapters._training import TrainingConfig, load_examples, train_adapter
from trellis.adapters.errors import TrainingDataError, TrainingResumeError


def _write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_load_examples_names_the_bad_line(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": 3}\n')
    with pytest.raises(TrainingDataError, match="line 2"):
        load_examples(data)


def test_load_examples_rejects_empty_file(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("\n")
    with pytest.raises(TrainingDataError, match="no rows"):
        load_examples(data)


def test_adapter_name_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lowercase"):
        TrainingConfig(name="../evil", output_dir=tmp_path)


@pytest.mark.slow
def test_train_counts_rows_checkpoints_and_resumes(tmp_path: Path) -> None:
    rows = [{"prompt": f"Put the apple {i} in the", "completion": " fridge"} for i in range(6)]
    rows.append({"prompt": "empty", "completion": "   "})
    rows.append(
        {"prompt": "word " * 400, "completion": " fridge"}
    )  # prompt truncated from the left
    data = _write_rows(tmp_path / "data.jsonl", rows)
    out = tmp_path / "adapter"
    config = TrainingConfig(
        name="twc-test",
        output_dir=out,
        max_steps=2,
        batch_size=2,
        max_length=48,
        checkpoint_every=1,
        eval_fraction=0.25,
        eval_generate=1,
        learning_rate=1e-3,
    )
    report = train_adapter(config, data)
    assert report.steps == 2 and report.resumed_from == 0
    assert report.rows_dropped_empty == 1
    assert report.rows_truncated == 1
    assert report.rows_train + report.rows_eval == 7
    assert (out / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "gemma-3-270m"
    card = (out / "README.md").read_text()
    assert report.data_sha256 in card
    metrics = json.loads((out / "training.json").read_text())
    assert metrics["steps"] == 2 and len(metrics["rows"]) == 6

    # Same command with more steps resumes from the newest checkpoint.
    more = config.model_copy(update={"max_steps": 3})
    resumed = train_adapter(more, data)
    assert resumed.resumed_from == 2 and resumed.steps == 3
    assert [s for s, _ in resumed.losses] == [1, 2, 3]

    # Other data must not silently continue an old run.
    other = _write_rows(tmp_path / "other.jsonl", rows[:3])
    with pytest.raises(TrainingResumeError, match="other data"):
        train_adapter(more.model_copy(update={"max_steps": 4}), other)
