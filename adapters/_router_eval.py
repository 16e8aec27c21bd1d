"""Routing evaluation on labelled rows: accuracy, confusion matrix, OOD precision and recall.

A labelled file is JSON Lines, one row per line: ``{"text": "...", "expected": "cooking"}``,
with ``"expected": null`` for a step no adapter should serve (out of distribution).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from trellis.adapters._router import Router, StepContext
from trellis.adapters._router_policies import AdapterProfile
from trellis.memory.errors import UsageError

__all__ = [
    "NONE_LABEL",
    "EvalRow",
    "RouterEvaluation",
    "evaluate_predictions",
    "evaluate_router",
    "load_eval_rows",
    "load_profiles_file",
]

NONE_LABEL = "none"
"""Label of 'no adapter: the base model serves' in reports and confusion matrices."""

_MAX_FILE_BYTES = 64 * 1024 * 1024


class EvalRow(BaseModel):
    """One labelled step."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    text: str
    """The step text."""
    expected: str | None
    """The adapter that should serve it, or None when none should (out of distribution).

    The string ``"none"`` (how the confusion matrix writes it) means the same as null."""

    @field_validator("expected")
    @classmethod
    def _none_label(cls, value: str | None) -> str | None:
        return None if value == NONE_LABEL else value


class RouterEvaluation(BaseModel):
    """How well routing matched the labels."""

    rows: int
    """Labelled rows evaluated."""
    accuracy: float
    """Share of rows routed exactly as labelled (None counts as a label)."""
    in_distribution_accuracy: float
    """Accuracy on rows labelled with an adapter."""
    ood_precision: float
    """Of the rows sent to the base model, the share labelled out of distribution."""
    ood_recall: float
    """Of the rows labelled out of distribution, the share sent to the base model."""
    labels: list[str]
    """Row and column order of the confusion matrix (``none`` last)."""
    confusion: dict[str, dict[str, int]]
    """confusion[expected][predicted] = count."""
    mistakes: list[dict[str, Any]]
    """Up to 50 misrouted rows: text, expected, predicted."""


def _read_text(path: Path, what: str) -> str:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {str(path)!r} does not exist or is not a file")
    size = path.stat().st_size
    if size > _MAX_FILE_BYTES:
        raise UsageError(
            f"{what} {str(path)!r} is {size} bytes, over the {_MAX_FILE_BYTES} byte limit"
        )
    return path.read_text(encoding="utf-8")


def load_eval_rows(path: Path) -> list[EvalRow]:
    """Read a labelled JSONL file; a bad line fails with its line number."""
    rows: list[EvalRow] = []
    for number, line in enumerate(_read_text(path, "labelled file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(EvalRow.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise UsageError(
                f"{path}:{number}: not a labelled row ({exc.__class__.__name__}: "
                f'{str(exc).splitlines()[0]}); each line must be {{"text": "...", '
                '"expected": "<adapter>" or null or "none"}'
            ) from exc
    if not rows:
        raise UsageError(f"{path} holds no labelled rows")
    return rows


def load_profiles_file(path: Path) -> list[AdapterProfile]:
    """Adapter profiles from JSON: a list, or ``{"adapters": [...]}`` of name/description/examples."""
    try:
        data = json.loads(_read_text(path, "adapter file"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from exc
    items = data.get("adapters") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise UsageError(f'{path} must hold a list of adapters or {{"adapters": [...]}}')
    return [AdapterProfile.of(item) for item in items]


def evaluate_predictions(
    expected: Sequence[str | None], predicted: Sequence[str | None], texts: Sequence[str] = ()
) -> RouterEvaluation:
    """Metrics from labels and predictions (None = base model / out of distribution)."""
    if len(expected) != len(predicted) or not expected:
        raise UsageError("expected and predicted must be non-empty and of the same length")
    names = sorted({x for x in (*expected, *predicted) if x is not None})
    labels = [*names, NONE_LABEL]
    confusion = {row: dict.fromkeys(labels, 0) for row in labels}
    mistakes: list[dict[str, Any]] = []
    correct = in_correct = in_total = true_ood = predicted_ood = hit_ood = 0
    for i, (want, got) in enumerate(zip(expected, predicted, strict=True)):
        confusion[want or NONE_LABEL][got or NONE_LABEL] += 1
        correct += want == got
        if want is None:
            true_ood += 1
        else:
            in_total += 1
            in_correct += want == got
        if got is None:
            predicted_ood += 1
            hit_ood += want is None
        if want != got and len(mistakes) < 50:
            mistakes.append(
                {"text": texts[i] if i < len(texts) else "", "expected": want, "predicted": got}
            )
    return RouterEvaluation(
        rows=len(expected),
        accuracy=correct / len(expected),
        in_distribution_accuracy=in_correct / in_total if in_total else 1.0,
        ood_precision=hit_ood / predicted_ood if predicted_ood else 1.0,
        ood_recall=hit_ood / true_ood if true_ood else 1.0,
        labels=labels,
        confusion=confusion,
        mistakes=mistakes,
    )


def evaluate_router(router: Router, rows: Sequence[EvalRow]) -> RouterEvaluation:
    """Route every row (one batched embedding call; no re-ranking, nothing logged)."""
    known = set(router.names)
    for number, row in enumerate(rows, start=1):
        if row.expected is not None and row.expected not in known:
            raise UsageError(
                f"row {number} expects adapter {row.expected!r}, which the router does not know; "
                f"known: {', '.join(sorted(known)) or 'none'}"
            )
    texts = [row.text for row in rows]
    vectors = router.embedder.embed(texts)
    predicted = [
        router.decide(vectors[i], StepContext(text=text)).adapter for i, text in enumerate(texts)
    ]
    return evaluate_predictions([row.expected for row in rows], predicted, texts)
