"""LoRA training on prompt/completion pairs, with checkpoints, resume, evaluation and a card.

The data is JSON Lines, one ``{"prompt": ..., "completion": ...}`` object a row, where the
prompt is built by the same function the runtime uses at inference (``build_plan_prompt``,
``build_act_prompt``, ``build_cue_prompt``), so the adapter learns exactly what it will see.
The loss covers completion tokens only. Long rows lose prompt tokens from the left (the end
of a prompt carries the question); rows that cannot fit, or have an empty completion, are
dropped. Every count is reported.

Checkpoints hold the adapter, the optimizer and the step; a rerun of the same command resumes
from the newest one, and refuses to resume on other data or another base model.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trellis.adapters._model import DEFAULT_BASE_MODEL, model_identity, resolve_model_dir
from trellis.adapters.errors import ModelPreparationError, TrainingDataError, TrainingResumeError

__all__ = [
    "TrainingConfig",
    "TrainingExample",
    "TrainingReport",
    "load_examples",
    "train_adapter",
]

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


class TrainingExample(BaseModel):
    """One supervised row."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    prompt: str
    """Exactly what the runtime sends to the model."""
    completion: str
    """What the model should answer."""


class TrainingConfig(BaseModel):
    """How to train one LoRA adapter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Adapter name (lowercase letters, digits, '-' and '_')."""
    output_dir: Path
    """Folder that receives the adapter, its card and its checkpoints."""
    base_model_dir: Path | None = None
    """Base model folder; None means the prepared default model."""
    base_model_name: str = DEFAULT_BASE_MODEL
    """Recorded as the adapter's base model (checked by the registry)."""
    rank: int = Field(default=8, ge=1, le=64)
    """LoRA rank; keep it low (vLLM's max_lora_rank)."""
    alpha: int = Field(default=16, ge=1)
    """LoRA scaling numerator."""
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """LoRA dropout during training."""
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    """Modules that receive LoRA matrices."""
    learning_rate: float = Field(default=3e-4, gt=0)
    """AdamW learning rate (linear warm-up, cosine decay)."""
    batch_size: int = Field(default=8, ge=1)
    """Rows per optimizer step."""
    max_length: int = Field(default=192, ge=16)
    """Tokens per row, prompt and completion together."""
    max_steps: int = Field(default=200, ge=1)
    """Optimizer steps to run in total (resumed runs count the steps already done)."""
    warmup_steps: int = Field(default=10, ge=0)
    """Linear warm-up steps."""
    eval_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    """Share of rows held back for evaluation (chosen by a seeded shuffle)."""
    eval_generate: int = Field(default=20, ge=0)
    """Held-back rows decoded greedily to measure exact-match accuracy at the end."""
    checkpoint_every: int = Field(default=25, ge=1)
    """Steps between checkpoints."""
    keep_checkpoints: int = Field(default=2, ge=1)
    """Newest checkpoints kept on disk."""
    seed: int = 0
    """Seed for the split, the shuffles and the LoRA initialisation."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value or not set(value) <= _NAME_CHARS or len(value) > 64:
            raise ValueError(
                f"adapter name {value!r} must be 1-64 characters of lowercase letters, digits, '-' and '_'"
            )
        return value


@dataclass
class TrainingReport:
    """What a training run did and measured."""

    adapter_dir: Path
    steps: int
    resumed_from: int
    rows_total: int
    rows_train: int
    rows_eval: int
    rows_truncated: int
    rows_dropped_empty: int
    rows_dropped_too_long: int
    data_sha256: str
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_loss: float | None = None
    eval_exact_match: float | None = None
    seconds: float = 0.0


def _data_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_examples(path: Path) -> list[TrainingExample]:
    """Read JSONL rows; a malformed line raises :class:`TrainingDataError` naming it."""
    if not path.is_file():
        raise TrainingDataError(f"training data {path} does not exist")
    rows: list[TrainingExample] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(TrainingExample.model_validate_json(line))
            except Exception as exc:
                raise TrainingDataError(
                    f"{path} line {number}: expected an object with string fields prompt and "
                    f"completion ({str(exc).splitlines()[0]})"
                ) from exc
    if not rows:
        raise TrainingDataError(f"{path} holds no rows")
    return rows


@dataclass
class _Encoded:
    input_ids: list[int]
    labels: list[int]


def _encode(
    examples: Sequence[TrainingExample], tokenizer: Any, max_length: int, report: TrainingReport
) -> list[_Encoded]:
    encoded: list[_Encoded] = []
    eos = tokenizer.eos_token_id
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    for example in examples:
        if not example.completion.strip():
            report.rows_dropped_empty += 1
            continue
        prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"] + [
            eos
        ]
        room = max_length - len(bos) - len(completion_ids)
        if room < 8:  # not even a prompt tail fits: the row would teach nothing useful
            report.rows_dropped_too_long += 1
            continue
        if len(prompt_ids) > room:
            prompt_ids = prompt_ids[-room:]
            report.rows_truncated += 1
        ids = bos + prompt_ids + completion_ids
        labels = [-100] * (len(bos) + len(prompt_ids)) + completion_ids
        encoded.append(_Encoded(ids, labels))
    return encoded


def _collate(rows: Sequence[_Encoded], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _completion_loss(peft_model: Any, tensors: dict[str, Any]) -> Any:
    """Mean cross-entropy over completion tokens, with logits computed only where they count.

    The language-model head of a small model with a large vocabulary costs more than the
    whole transformer body (Gemma 3 270M: 262k x 640); computing it for the few completion
    positions instead of every prompt position halves a training step on a CPU.
    """
    import torch

    causal_lm = peft_model.get_base_model()
    hidden = causal_lm.get_decoder()(
        input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"]
    ).last_hidden_state
    targets = tensors["labels"][:, 1:]
    keep = targets != -100
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep])
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def _latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(
        (p for p in folder.glob("step-*") if (p / "trainer_state.json").is_file()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    return found[-1] if found else None


Progress = Callable[[int, int, float], None]


def train_adapter(
    config: TrainingConfig, data_path: Path, *, progress: Progress | None = None
) -> TrainingReport:
    """Train (or resume training) one adapter; returns what was done and measured."""
    try:
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelPreparationError(
            f"training needs the embedded extra ({exc.name} is missing): pip install 'trellis-agent[embedded]'"
        ) from exc

    started = time.perf_counter()
    base_dir = resolve_model_dir(config.base_model_dir)
    identity = model_identity(base_dir)
    examples = load_examples(data_path)
    data_sha = _data_hash(data_path)
    report = TrainingReport(
        adapter_dir=config.output_dir,
        steps=0,
        resumed_from=0,
        rows_total=len(examples),
        rows_train=0,
        rows_eval=0,
        rows_truncated=0,
        rows_dropped_empty=0,
        rows_dropped_too_long=0,
        data_sha256=data_sha,
    )
    rng = random.Random(config.seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    n_eval = int(len(examples) * config.eval_fraction)
    eval_rows = [examples[i] for i in order[:n_eval]]
    train_rows = [examples[i] for i in order[n_eval:]]

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    train_encoded = _encode(train_rows, tokenizer, config.max_length, report)
    eval_encoded = _encode(eval_rows, tokenizer, config.max_length, report)
    report.rows_train, report.rows_eval = len(train_encoded), len(eval_encoded)
    if not train_encoded:
        raise TrainingDataError(
            f"no usable training rows in {data_path}: {report.rows_dropped_empty} empty "
            f"completions, {report.rows_dropped_too_long} too long for max_length={config.max_length}"
        )

    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    checkpoints = config.output_dir / "checkpoints"
    latest = _latest_checkpoint(checkpoints)
    state: dict[str, Any] = {}
    if latest is not None:
        state = json.loads((latest / "trainer_state.json").read_text())
        if state.get("data_sha256") != data_sha:
            raise TrainingResumeError(
                f"checkpoint {latest.name} was trained on other data (sha256 "
                f"{str(state.get('data_sha256'))[:12]}, now {data_sha[:12]}); use another "
                "--output folder or delete its checkpoints to start over"
            )
        if state.get("base_model_sha256") != identity["sha256"]:
            raise TrainingResumeError(
                f"checkpoint {latest.name} was trained on another base model; use the same "
                "--base-model or another --output folder"
            )
        peft_model = PeftModel.from_pretrained(model, str(latest), is_trainable=True)
        report.resumed_from = int(state["step"])
    else:
        lora = LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, lora)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    if latest is not None and (latest / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(latest / "optimizer.pt", weights_only=True))
    report.losses = [(int(s), float(v)) for s, v in state.get("losses", [])]

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return config.learning_rate * (step + 1) / config.warmup_steps
        span = max(1, config.max_steps - config.warmup_steps)
        return (
            config.learning_rate
            * 0.5
            * (1 + math.cos(math.pi * (step - config.warmup_steps) / span))
        )

    batch_rng = random.Random(config.seed + report.resumed_from)
    peft_model.train()
    step = report.resumed_from
    while step < config.max_steps:
        batch = batch_rng.sample(train_encoded, min(config.batch_size, len(train_encoded)))
        tensors = _collate(batch, pad_id)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        loss = _completion_loss(peft_model, tensors)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        report.losses.append((step, float(loss.item())))
        if progress is not None:
            progress(step, config.max_steps, float(loss.item()))
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            _save_checkpoint(peft_model, optimizer, checkpoints, step, report, identity, config)
    report.steps = step

    peft_model.eval()
    if eval_encoded:
        report.eval_loss = _eval_loss(peft_model, eval_encoded, pad_id, config.batch_size)
        if config.eval_generate:
            report.eval_exact_match = _exact_match(
                peft_model, tokenizer, eval_rows[: config.eval_generate]
            )
    _write_adapter(peft_model, config, report, identity)
    report.seconds = time.perf_counter() - started
    _write_card(config, report, identity)
    return report


def _save_checkpoint(
    peft_model: Any,
    optimizer: Any,
    folder: Path,
    step: int,
    report: TrainingReport,
    identity: dict[str, str],
    config: TrainingConfig,
) -> None:
    import torch

    target = folder / f"step-{step}"
    partial = folder / f".step-{step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    peft_model.save_pretrained(str(partial))
    torch.save(optimizer.state_dict(), partial / "optimizer.pt")
    state = {
        "step": step,
        "data_sha256": report.data_sha256,
        "base_model_sha256": identity["sha256"],
        "losses": report.losses,
    }
    (partial / "trainer_state.json").write_text(json.dumps(state))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)  # a checkpoint exists only once it is complete
    kept = sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in kept[: -config.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)


def _eval_loss(peft_model: Any, rows: Sequence[_Encoded], pad_id: int, batch_size: int) -> float:
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            total += float(_completion_loss(peft_model, _collate(chunk, pad_id)).item()) * len(
                chunk
            )
            count += len(chunk)
    return total / max(1, count)


def _exact_match(peft_model: Any, tokenizer: Any, rows: Sequence[TrainingExample]) -> float:
    import torch

    hits = 0
    with torch.no_grad():
        for row in rows:
            ids = tokenizer(row.prompt, return_tensors="pt")
            target = row.completion.strip()
            budget = len(tokenizer(target, add_special_tokens=False)["input_ids"]) + 4
            out = peft_model.generate(**ids, max_new_tokens=budget, do_sample=False)
            text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            hits += int(text.strip() == target)
    return hits / max(1, len(rows))


def _write_adapter(
    peft_model: Any, config: TrainingConfig, report: TrainingReport, identity: dict[str, str]
) -> None:
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    adapter_config = out / "adapter_config.json"
    data = json.loads(adapter_config.read_text())
    data["base_model_name_or_path"] = config.base_model_name  # never a local path
    adapter_config.write_text(json.dumps(data, indent=2, sort_keys=True))


def _write_card(config: TrainingConfig, report: TrainingReport, identity: dict[str, str]) -> None:
    out = config.output_dir
    plot = _plot_losses(report, out / "loss.png")
    metrics = {
        "name": config.name,
        "base_model": config.base_model_name,
        "base_model_sha256": identity["sha256"],
        "data_sha256": report.data_sha256,
        "steps": report.steps,
        "resumed_from": report.resumed_from,
        "rows": {
            "total": report.rows_total,
            "train": report.rows_train,
            "eval": report.rows_eval,
            "truncated": report.rows_truncated,
            "dropped_empty": report.rows_dropped_empty,
            "dropped_too_long": report.rows_dropped_too_long,
        },
        "hyperparameters": config.model_dump(mode="json", exclude={"output_dir", "base_model_dir"}),
        "final_train_loss": report.losses[-1][1] if report.losses else None,
        "eval_loss": report.eval_loss,
        "eval_exact_match": report.eval_exact_match,
        "seconds": round(report.seconds, 1),
    }
    (out / "training.json").write_text(json.dumps(metrics, indent=2))
    lines = [
        f"# {config.name}",
        "",
        f"LoRA adapter (r={config.rank}, alpha={config.alpha}, modules {', '.join(config.target_modules)}) "
        f"for `{config.base_model_name}`.",
        "",
        "| field | value |",
        "|---|---|",
        f"| data sha256 | `{report.data_sha256}` |",
        f"| rows (train / eval) | {report.rows_train} / {report.rows_eval} |",
        f"| rows truncated / dropped | {report.rows_truncated} / "
        f"{report.rows_dropped_empty + report.rows_dropped_too_long} |",
        f"| steps | {report.steps} (batch {config.batch_size}, lr {config.learning_rate}) |",
        f"| final train loss | {metrics['final_train_loss']} |",
        f"| eval loss | {report.eval_loss} |",
        f"| eval exact match | {report.eval_exact_match} |",
        "",
    ]
    if plot is not None:
        lines += ["![loss curve](loss.png)", ""]
    (out / "README.md").write_text("\n".join(lines))


def _plot_losses(report: TrainingReport, path: Path) -> Path | None:
    if not report.losses:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps = [s for s, _ in report.losses]
    values = [v for _, v in report.losses]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(steps, values, linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel("train loss (completion tokens)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
