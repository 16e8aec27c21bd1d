"""The in-process model: loaded once per process, several LoRA adapters, batched generation.

:func:`generate_batch` serves rows for different adapters in one ``generate`` call
(peft's ``adapter_names=``), with per-row stop strings, max tokens and llguidance
JSON-schema constraints. Rows stop independently: a stopping criterion records where each
row ended and finished rows are padded until the longest row is done.
Everything here runs on the scheduler's worker thread under the model lock.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trellis.adapters._backend import LLMRequest, Message
from trellis.adapters._registry import BASE_ADAPTER_NAME
from trellis.adapters._tokenizer_files import build_ll_tokenizer, load_tokenizer
from trellis.adapters.errors import (
    AdapterValidationError,
    ModelPreparationError,
    SchemaCompileError,
)

__all__ = [
    "LoadedModel",
    "Row",
    "RowOutput",
    "compile_schema",
    "first_stop",
    "generate_batch",
    "load_model",
]

_JSON_OPTIONS = {"whitespace_flexible": False}  # compact JSON: small models ramble in whitespace

# peft reads transformers' deprecated ``is_gradient_checkpointing`` whenever it wraps the model
# (every adapter load): a FutureWarning on every run that says nothing to a Trellis user.
warnings.filterwarnings(
    "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
)


@dataclass
class Row:
    """One request inside a batch, and where it ended."""

    request: LLMRequest
    input_ids: list[int]
    grammar: str | None
    deadline: float
    cancelled: bool = False
    on_tokens: Callable[[list[int]], None] | None = None
    """Called on the worker thread with the row's tokens so far (streaming)."""
    # Filled while generating:
    keep: int | None = None
    reason: Literal["stop", "length"] = "stop"
    timed_out: bool = False
    grammar_error: str | None = None

    @property
    def adapter(self) -> str:
        return self.request.adapter or BASE_ADAPTER_NAME


@dataclass
class RowOutput:
    """What one row produced."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]
    timed_out: bool
    grammar_error: str | None


@dataclass
class LoadedModel:
    """A model loaded in this process, with the adapters currently on it."""

    model_dir: Path
    name: str
    device: str
    model: Any
    tokenizer: Any
    eos_ids: frozenset[int]
    adapters: dict[str, Path] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _ll_tokenizer: Any = None

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    @property
    def ll_tokenizer_ready(self) -> bool:
        """Whether the llguidance tokenizer was built already."""
        return self._ll_tokenizer is not None

    def ll_tokenizer(self) -> Any:
        """The llguidance tokenizer (built once per process: about 1 s on CPU from the token
        table cached in the model folder, about 4 s the first time a folder is used)."""
        with self.lock:
            if self._ll_tokenizer is None:
                vocab = int(self.model.config.get_text_config().vocab_size)
                self._ll_tokenizer = build_ll_tokenizer(
                    self.model_dir, self.tokenizer, n_vocab=vocab, eos_token=sorted(self.eos_ids)[0]
                )
            return self._ll_tokenizer

    def add_adapter(self, name: str, path: Path) -> None:
        """Put a LoRA adapter on the model (the caller validated the folder)."""
        from peft import PeftModel

        with self.lock:
            try:
                if self.is_peft:
                    self.model.load_adapter(str(path), adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
            except (ValueError, KeyError, RuntimeError, OSError) as exc:
                raise AdapterValidationError(
                    f"adapter {name!r} at {path} does not fit model {self.name}: {exc}"
                ) from exc
            self.model.eval()
            self.adapters[name] = path

    def remove_adapter(self, name: str) -> None:
        with self.lock:
            if len(self.adapters) == 1:
                # peft cannot hold zero adapters; strip the LoRA layers back off instead.
                self.model = self.model.unload()
            else:
                self.model.delete_adapter(name)
            del self.adapters[name]


_models: dict[tuple[str, str, str], LoadedModel] = {}
_models_lock = threading.Lock()


def load_model(model_dir: Path, *, name: str, device: str, dtype: str) -> LoadedModel:
    """The process-wide model for this folder, device and dtype (loaded on first use)."""
    key = (str(model_dir.resolve()), device, dtype)
    with _models_lock:
        loaded = _models.get(key)
        if loaded is not None:
            return loaded
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise ModelPreparationError(
                f"the embedded backend needs the embedded extra ({exc.name} is missing): "
                "pip install 'trellis-agent[embedded]'"
            ) from exc
        from transformers.utils import logging as hf_logging

        # A library loads its model quietly: no "Loading weights" bar on the app's terminal.
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            tokenizer = load_tokenizer(model_dir)
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=getattr(torch, dtype)
            )
        except (OSError, ValueError) as exc:
            raise ModelPreparationError(
                f"cannot load the model at {model_dir}: {exc}; run `trellis model verify`"
            ) from exc
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        model = model.to(device)  # type: ignore[arg-type]
        model.eval()
        tokenizer.padding_side = "left"
        eos = set()
        for candidate in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
            if isinstance(candidate, int):
                eos.add(candidate)
            elif isinstance(candidate, list):
                eos.update(int(c) for c in candidate)
        end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
        if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
            eos.add(end_of_turn)  # chat turns end here even when the config names only <eos>
        loaded = LoadedModel(
            model_dir=model_dir,
            name=name,
            device=device,
            model=model,
            tokenizer=tokenizer,
            eos_ids=frozenset(eos),
        )
        _models[key] = loaded
        return loaded


def compile_schema(schema: dict[str, Any]) -> str:
    """The llguidance grammar for a JSON schema; SchemaCompileError names what is wrong."""
    from llguidance import LLMatcher

    try:
        grammar = LLMatcher.grammar_from_json_schema(
            json.dumps(schema),
            defaults=_JSON_OPTIONS,  # type: ignore[arg-type]
        )
    except (ValueError, TypeError) as exc:
        raise SchemaCompileError(f"the JSON schema is not valid JSON: {exc}") from exc
    error = LLMatcher.validate_grammar(grammar)
    if error:
        raise SchemaCompileError(
            f"the JSON schema cannot be compiled for constrained decoding: {error}; "
            "fix or simplify the schema (supported: types, properties, required, enum, const, "
            "items, anyOf, pattern, min/max)"
        )
    return grammar


def render_prompt(loaded: LoadedModel, request: LLMRequest) -> list[int]:
    """Token ids of the prompt; chat messages go through the chat template."""
    tokenizer = loaded.tokenizer
    if request.prompt is not None:
        return list(tokenizer(request.prompt)["input_ids"])
    messages = list(request.messages or ())
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(_gemma_chat(messages))["input_ids"])


def _gemma_chat(messages: list[Message]) -> str:
    # The GGUF-derived tokenizer carries no template; this is Gemma's turn format
    # (no system role: the system text leads the first user turn).
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    parts: list[str] = []
    for message in messages:
        if message.role == "system":
            continue
        content = message.content
        if system and message.role == "user":
            content, system = f"{system}\n\n{content}", ""
        role = "model" if message.role == "assistant" else "user"
        parts.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    if system:
        parts.insert(0, f"<start_of_turn>user\n{system}<end_of_turn>\n")
    parts.append("<start_of_turn>model\n")
    return "".join(parts)


def first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    positions = [text.find(s) for s in stops if s and s in text]
    return min(positions) if positions else None


def generate_batch(loaded: LoadedModel, rows: list[Row]) -> list[RowOutput]:
    """Serve ``rows`` (same sampling settings) in one generate call."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    tokenizer = loaded.tokenizer
    sampling = rows[0].request.sampling
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row.input_ids) :] = torch.tensor(row.input_ids)
        attention[i, width - len(row.input_ids) :] = 1

    matchers: list[Any] = [None] * len(rows)
    if any(r.grammar for r in rows):
        from llguidance import LLMatcher

        ll_tokenizer = loaded.ll_tokenizer()
        for i, row in enumerate(rows):
            if row.grammar:
                matcher = LLMatcher(ll_tokenizer, row.grammar, log_level=0)
                if matcher.is_error():
                    row.grammar_error = matcher.get_error()
                    row.keep = 0
                else:
                    matchers[i] = matcher

    stopper = _RowStopper(loaded, rows, matchers, width)
    generator = None
    if sampling.temperature > 0:
        generator = torch.Generator()
        if sampling.seed is not None:
            generator.manual_seed(sampling.seed)
        else:
            generator.seed()
    shaper = _LogitsShaper(rows, matchers, sampling.temperature, sampling.top_p, generator)
    max_new = max(r.request.sampling.max_tokens for r in rows)
    # Greedy as far as generate knows: the shaper samples itself (after the grammar mask)
    # and leaves only the chosen token, so model-level sampling defaults never interfere.
    config = GenerationConfig(
        max_new_tokens=max_new,
        do_sample=False,
        pad_token_id=pad_id,
        eos_token_id=sorted(loaded.eos_ids),
    )
    kwargs: dict[str, Any] = {
        "input_ids": input_ids.to(loaded.device),
        "attention_mask": attention.to(loaded.device),
        "generation_config": config,
        "logits_processor": LogitsProcessorList([shaper]),
        "stopping_criteria": StoppingCriteriaList([stopper]),
    }
    names = [r.adapter for r in rows]
    with loaded.lock, torch.inference_mode():
        if all(r.keep is not None for r in rows):
            sequences = input_ids  # nothing to generate (every grammar failed)
        else:
            model = loaded.model
            if not loaded.is_peft:
                sequences = model.generate(**kwargs)
            elif all(n == BASE_ADAPTER_NAME for n in names):
                with model.disable_adapter():
                    sequences = model.generate(**kwargs)
            elif len(set(names)) == 1:
                model.set_adapter(names[0])  # one adapter: peft's plain (fastest) path
                sequences = model.generate(**kwargs)
            else:
                sequences = model.generate(**kwargs, adapter_names=names)

    outputs: list[RowOutput] = []
    for i, row in enumerate(rows):
        generated = sequences[i, width:].tolist()
        keep = row.keep if row.keep is not None else len(generated)
        token_ids = generated[:keep]
        text = tokenizer.decode(token_ids, skip_special_tokens=True)
        cut = first_stop(text, row.request.sampling.stop)
        if cut is not None:
            text = text[:cut]
        outputs.append(
            RowOutput(
                text=text,
                token_ids=token_ids,
                finish_reason=row.reason,
                timed_out=row.timed_out,
                grammar_error=row.grammar_error,
            )
        )
    return outputs


class _RowStopper:
    """Decides, after every token, which rows are done and where their output ends."""

    def __init__(self, loaded: LoadedModel, rows: list[Row], matchers: list[Any], width: int):
        self.loaded = loaded
        self.rows = rows
        self.matchers = matchers
        self.width = width

    def __call__(self, input_ids: Any, scores: Any, **_kwargs: Any) -> Any:
        import torch

        step = input_ids.shape[1] - self.width
        now = time.monotonic()
        done = torch.zeros(len(self.rows), dtype=torch.bool, device=input_ids.device)
        for i, row in enumerate(self.rows):
            if row.keep is not None:
                done[i] = True
                continue
            token = int(input_ids[i, -1])
            matcher = self.matchers[i]
            if matcher is not None and not matcher.consume_token(token):
                row.grammar_error = matcher.get_error() or "the constraint rejected a token"
                row.keep = step - 1
            elif token in self.loaded.eos_ids:
                row.keep = step - 1
            elif (matcher is not None and matcher.is_stopped()) or (
                row.request.sampling.stop
                and first_stop(
                    self.loaded.tokenizer.decode(
                        input_ids[i, self.width :].tolist(), skip_special_tokens=True
                    ),
                    row.request.sampling.stop,
                )
                is not None
            ):
                row.keep = step
            elif step >= row.request.sampling.max_tokens:
                row.keep = step
                row.reason = "length"
            elif row.cancelled or now > row.deadline:
                row.keep = step
                row.timed_out = True
            if row.on_tokens is not None:
                upto = step if row.keep is None else row.keep
                row.on_tokens(input_ids[i, self.width : self.width + upto].tolist())
            done[i] = row.keep is not None
        return done


class _LogitsShaper:
    """Masks constrained rows with llguidance, then samples when the temperature is above 0.

    Sampling happens here, after the mask, so top-p never removes every allowed token; the
    chosen token is left as the only finite logit for generate's greedy pick.
    """

    def __init__(
        self,
        rows: list[Row],
        matchers: list[Any],
        temperature: float,
        top_p: float,
        generator: Any,
    ) -> None:
        self.rows = rows
        self.matchers = matchers
        self.temperature = temperature
        self.top_p = top_p
        self.generator = generator
        self.bitmask: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        active = [
            i for i, m in enumerate(self.matchers) if m is not None and self.rows[i].keep is None
        ]
        if active:
            if self.bitmask is None:
                words = (scores.shape[-1] + 31) // 32
                self.bitmask = torch.full((len(self.rows), words), -1, dtype=torch.int32)
            self.bitmask.fill_(-1)  # every token allowed for unconstrained rows
            for i in active:
                row = self.bitmask[i]
                self.matchers[i].unsafe_compute_mask_ptr(row.data_ptr(), row.numel() * 4)
            masked = scores.float().cpu()
            _apply_token_bitmask(masked, self.bitmask)
            scores = masked.to(scores.device, scores.dtype)
        if self.temperature <= 0:
            return scores
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            ordered, index = torch.sort(probs, descending=True, dim=-1)
            before = ordered.cumsum(dim=-1) - ordered
            ordered = ordered.masked_fill(before > self.top_p, 0.0)  # the top token always stays
            probs = torch.zeros_like(probs).scatter(-1, index, ordered)
        chosen = torch.multinomial(probs.cpu(), 1, generator=self.generator).to(scores.device)
        picked = torch.full_like(scores, float("-inf"))
        return picked.scatter(-1, chosen, 0.0)


_BIT_SHIFTS: Any = None


def _apply_token_bitmask(logits: Any, bitmask: Any) -> None:
    """Set the logits of tokens whose bit is 0 to -inf, in place (bit ``t % 32`` of word
    ``t // 32`` allows token ``t``). The same as ``llguidance.torch``'s function without its
    ``torch.compile``, which costs seconds at the first call and about 1 ms less per token."""
    import torch

    words = bitmask.shape[1]
    if logits.shape[1] > 32 * words:
        logits[:, 32 * words :] = float("-inf")
    global _BIT_SHIFTS
    if _BIT_SHIFTS is None:  # made once: this runs for every generated token
        _BIT_SHIFTS = torch.arange(32, dtype=torch.int32)
    shifts = _BIT_SHIFTS
    allowed = ((bitmask.unsqueeze(-1) >> shifts) & 1).reshape(bitmask.shape[0], -1)
    vocab = min(logits.shape[1], 32 * words)
    logits[:, :vocab].masked_fill_(allowed[:, :vocab] == 0, float("-inf"))
