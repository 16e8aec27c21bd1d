"""Reminder extraction: the rule extractor's forms, and the model path with repair and fallback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from trellis.adapters import (
    AdapterRegistry,
    FunctionBackend,
    ReminderAdapter,
    ReminderConfig,
    build_cue_prompt,
    cue_json_schema,
    rule_extract,
)
from trellis.memory import UsageError
from trellis.planners import call_violations


@pytest.mark.parametrize(
    ("reminder", "expected"),
    [
        ("Never use the blue plates.", ("correction", "forbid", "use", "blue plates", None, "any")),
        ("Don't put anything in the oven", ("correction", "forbid", "put", "oven", None, "any")),
        ("do not open the window", ("correction", "forbid", "open", "window", None, "any")),
        ("Close the fridge afterwards", ("correction", "require", "close", "fridge", "fridge", "after")),
        ("always wipe the table", ("correction", "require", "wipe", "table", None, "any")),
        ("wash your hands before cooking", ("correction", "require", "wash", "hands", "cooking", "before")),
        ("turn off the light after leaving the kitchen", ("correction", "require", "turn off", "light", "kitchen", "after")),
        ("I prefer green tea", ("preference", "prefer", "use", "green tea", None, "any")),
        ("I don't like onions", ("preference", "forbid", None, "onions", None, "any")),
        ("Remember that the keys are in the drawer", ("context", "inform", None, "keys", None, "any")),
        ("the red cup is broken", ("context", "inform", None, "red cup", None, "any")),
    ],
)  # fmt: skip
def test_rule_extractor_forms(reminder: str, expected: tuple[object, ...]) -> None:
    (cue,) = rule_extract(reminder)
    got = (cue.kind, cue.polarity, cue.action, cue.subject, cue.trigger, cue.order)
    assert got == expected
    assert cue.source == reminder and cue.constraint == reminder.rstrip(".")


def test_rule_extractor_splits_sentences_and_ignores_chatter() -> None:
    cues = rule_extract("Do not open the window. Always wipe the table!")
    assert [c.polarity for c in cues] == ["forbid", "require"]
    assert rule_extract("hello there") == []


def answers(*texts: str) -> FunctionBackend:
    it: Iterator[str] = iter(texts)
    return FunctionBackend(lambda request: next(it))


GOOD = '{"kind":"correction","polarity":"forbid","action":"","subject":"the red cup"}'


async def test_hybrid_uses_rules_without_calling_the_model() -> None:
    backend = answers()
    result = await ReminderAdapter(backend).extract("never use the blue plates")
    assert result.method == "rules" and backend.requests == []
    assert result.cues[0].scope == "user"


async def test_model_path_with_repair_round() -> None:
    backend = answers("sure thing", '{"kind":"rule"}', GOOD)
    adapter = ReminderAdapter(backend, adapter="reminder", config=ReminderConfig(max_attempts=3))
    result = await adapter.extract("the red cup is cracked, leave it alone", scope="task")
    assert result.method == "model" and len(backend.requests) == 3
    assert "not JSON" in result.errors[0] and "not a rule" in result.errors[1]
    cue = result.cues[0]
    assert (cue.kind, cue.polarity, cue.subject, cue.scope) == (
        "correction",
        "forbid",
        "red cup",
        "task",
    )
    first = backend.requests[0]
    # A trained adapter gets the short prompt (no worked examples), as in its training rows.
    text = "the red cup is cracked, leave it alone"
    assert first.prompt == build_cue_prompt(text, few_shot=False)
    assert "Reminder: never use the blue plates" not in (first.prompt or "")
    base = await ReminderAdapter(answers(GOOD), config=ReminderConfig(mode="model")).extract(text)
    assert base.prompts[0] == build_cue_prompt(text)  # the base model gets the worked examples
    assert first.json_schema == cue_json_schema() and first.adapter == "reminder"
    assert f"Error: {result.errors[0]}" in (backend.requests[1].prompt or "")


async def test_unusable_model_output_falls_back_to_an_inform_cue() -> None:
    backend = answers("??", "still not json")
    result = await ReminderAdapter(backend).extract("the red cup is cracked, leave it alone")
    assert result.method == "fallback" and len(result.errors) == 3
    assert result.cues[0].polarity == "inform"
    assert result.cues[0].constraint == "the red cup is cracked, leave it alone"


async def test_model_mode_cross_checks_against_rules() -> None:
    agree = await ReminderAdapter(
        answers('{"kind":"correction","polarity":"forbid","action":"use","subject":"blue plates"}'),
        config=ReminderConfig(mode="model"),
    ).extract("never use the blue plates")
    assert agree.method == "model" and agree.agreement is True
    disagree = await ReminderAdapter(
        answers('{"kind":"preference","polarity":"prefer","action":"use","subject":"plates"}'),
        config=ReminderConfig(mode="model"),
    ).extract("never use the blue plates")
    assert disagree.agreement is False and disagree.rule_cues[0].polarity == "forbid"


async def test_a_model_misreading_never_lets_a_forbidden_call_through() -> None:
    """Seen with gemma-3-270m: "never ping" read as action "ping", subject "never ping",
    a cue no call matched, so every ping ran. The rule's form words are dropped, and the
    rules' forbid is kept beside a model cue that does not match it."""
    echoed = await ReminderAdapter(
        answers('{"kind":"correction","polarity":"forbid","action":"ping","subject":"never ping"}'),
        config=ReminderConfig(mode="model"),
    ).extract("never ping")
    assert [(c.action, c.subject) for c in echoed.cues] == [("ping", "ping")]
    assert call_violations("ping", {"x": "hello"}, echoed.cues)
    wrong = await ReminderAdapter(
        answers('{"kind":"preference","polarity":"prefer","action":"use","subject":"plates"}'),
        config=ReminderConfig(mode="model"),
    ).extract("never use the blue plates")
    assert [c.polarity for c in wrong.cues] == ["prefer", "forbid"]
    assert call_violations("take", {"item": "blue plates"}, wrong.cues)
    # Without strict forbids (how traces recorded before it replay) the misreading stands.
    loose = await ReminderAdapter(
        answers('{"kind":"correction","polarity":"forbid","action":"ping","subject":"never ping"}'),
        config=ReminderConfig(mode="model", strict_forbids=False),
    ).extract("never ping")
    assert not call_violations("ping", {"x": "hello"}, loose.cues)


async def test_backend_failure_is_recorded_not_raised() -> None:
    def boom(request: object) -> str:
        raise TimeoutError("slow")

    result = await ReminderAdapter(FunctionBackend(boom)).extract("the cup is cracked, leave it")
    assert result.method == "fallback" and "model call failed: TimeoutError" in result.errors[0]


async def test_empty_and_over_long_reminders_are_usage_errors() -> None:
    adapter = ReminderAdapter(None, config=ReminderConfig(mode="rules"))
    with pytest.raises(UsageError, match="empty"):
        await adapter.extract("   ")
    with pytest.raises(UsageError, match="one reminder per rule"):
        await adapter.extract("never " * 200)
    with pytest.raises(UsageError, match="needs a backend"):
        ReminderAdapter(None)
    assert adapter.extract_sync("never use the blue plates").method == "rules"


def test_from_registry_picks_the_reminder_lora_when_registered(tmp_path: Path) -> None:
    folder = tmp_path / "adapters" / "reminder"
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16,
              "target_modules": ["q_proj"], "base_model_name_or_path": "gemma-3-270m"}  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(config))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {f"{prefix}.lora_A.weight": np.ones((8, 16), dtype=np.float32),
         f"{prefix}.lora_B.weight": np.ones((16, 8), dtype=np.float32)},
        str(folder / "adapter_model.safetensors"),
    )  # fmt: skip
    registry = AdapterRegistry("sqlite://", roots=[tmp_path / "adapters"])
    backend = answers()
    assert ReminderAdapter.from_registry(backend, registry).adapter is None
    registry.add("reminder", folder, description="reminders to rules", examples=["never X"])
    assert ReminderAdapter.from_registry(backend, registry).adapter == "reminder"
