"""The model's tokenizer, loaded fast, and the tokenizer artefacts cached in the model folder.

``AutoTokenizer`` builds gemma's tokenizer by parsing its 33 MB ``tokenizer.json`` in Python
(about 3 s and 300 MB at its peak on this CPU); the Rust backend reads the same file directly
in about half that time. The direct load is used only for a folder where it was checked to
tokenize exactly like ``AutoTokenizer`` (probe texts, special tokens, the chat template); the
verdict is cached beside the files under their hash.

llguidance builds its tokenizer from the serialized tokenizer in about 3 s (it parses the
whole BPE model again). What it keeps is a token table (every token's bytes, and which are
special); cached beside the files, that table builds the same tokenizer in about a second,
with the model's own tokenizer to tokenize text. ``trellis model prepare`` writes the verdict
and the table, so an app's first run pays for neither.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["build_ll_tokenizer", "load_tokenizer", "tokenizer_digest", "warm_tokenizer_caches"]

_SOURCES = ("tokenizer.json", "tokenizer_config.json")
_SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token")
_PROBES = (
    "Plan the goal as JSON steps. Use only these skills:\n- go_to(place: str) - Move.",
    '{"steps":[{"id":"1","title":"open the fridge","skill":"open","args":{"obj":"fridge"}}]}',
    "<start_of_turn>user\nnever use the blue plates<end_of_turn>\n<start_of_turn>model\n",
    "  Leading spaces,\ttabs\n\nand blank lines  ",
    "héllo wörld: ½ cup, 20°C, ünïcödé, 東京, emoji \U0001f37d",
    "",
)


def tokenizer_digest(model_dir: Path) -> str:
    """A short hash of the files a tokenizer is built from (the key of the caches)."""
    stamps = []
    for name in _SOURCES:
        with contextlib.suppress(OSError):
            stat = (model_dir / name).stat()
            stamps.append((name, stat.st_size, stat.st_mtime_ns))
    # Loading a model asks twice (tokenizer check, token table): hash 33 MB once per process.
    return _digest(str(model_dir.resolve()), tuple(stamps))


@functools.lru_cache(maxsize=8)
def _digest(model_dir: str, stamps: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _size, _mtime in stamps:
        digest.update((Path(model_dir) / name).read_bytes())
    return digest.hexdigest()[:16]


def _write_whole(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)  # whole or absent: a reader never sees half a file
    except OSError:  # a read-only model folder: the work is redone each time
        partial.unlink(missing_ok=True)


def _direct(model_dir: Path) -> Any:
    """The tokenizer read straight into the Rust backend, with the config's special tokens
    and chat template."""
    from transformers import PreTrainedTokenizerFast

    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    kwargs: dict[str, Any] = {k: config[k] for k in _SPECIAL if isinstance(config.get(k), str)}
    template = model_dir / "chat_template.jinja"
    if isinstance(config.get("chat_template"), str):
        kwargs["chat_template"] = config["chat_template"]
    elif template.is_file():
        kwargs["chat_template"] = template.read_text(encoding="utf-8")
    if isinstance(config.get("model_max_length"), int):
        kwargs["model_max_length"] = config["model_max_length"]
    return PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), **kwargs)


def _alike(reference: Any, candidate: Any) -> bool:
    """Whether two tokenizers encode and decode the probes alike, with the same specials."""
    for text in _PROBES:
        for special in (True, False):
            ids = reference(text, add_special_tokens=special)["input_ids"]
            if candidate(text, add_special_tokens=special)["input_ids"] != ids:
                return False
            if candidate.decode(ids) != reference.decode(ids):
                return False
    same = (
        "all_special_ids",
        "eos_token_id",
        "bos_token_id",
        "pad_token_id",
        "unk_token_id",
        "chat_template",
    )
    return len(candidate) == len(reference) and all(
        getattr(candidate, name) == getattr(reference, name) for name in same
    )


def load_tokenizer(model_dir: Path) -> Any:
    """The model's tokenizer: read directly where that was checked to match ``AutoTokenizer``,
    else through ``AutoTokenizer`` (checking once, and caching the verdict)."""
    from transformers import AutoTokenizer

    verdict = model_dir / f"tokenizer-check-{tokenizer_digest(model_dir)}.json"
    if verdict.is_file():
        try:
            direct = json.loads(verdict.read_text(encoding="utf-8")).get("direct") is True
        except (OSError, ValueError):
            direct = False
        if direct:
            return _direct(model_dir)
        return AutoTokenizer.from_pretrained(str(model_dir))
    reference = AutoTokenizer.from_pretrained(str(model_dir))
    try:
        direct = (model_dir / "tokenizer.json").is_file() and _alike(reference, _direct(model_dir))
    except Exception:  # any doubt: the slower, standard way
        direct = False
    _write_whole(verdict, json.dumps({"direct": direct}))
    return reference


_TABLE_MAGIC = b"trellis-llguidance-tokens 1\n"


def _serialized(tokenizer: Any) -> str:
    """The tokenizer as ``llguidance.hf.from_tokenizer`` hands it over: the Rust tokenizer
    with the added tokens, no padding or truncation."""
    import copy

    backend = copy.copy(tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    text: str = backend.to_str()
    return text


def _write_table(path: Path, built: Any) -> None:
    count = int(built.vocab_size)
    special = [i for i in range(count) if built.is_special_token(i)]
    parts = [_TABLE_MAGIC, json.dumps({"tokens": count, "special": special}).encode() + b"\n"]
    for i in range(count):
        data = built.decode_bytes([i])
        parts.append(len(data).to_bytes(4, "little") + data)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        partial.write_bytes(b"".join(parts))
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)


def _read_table(path: Path) -> tuple[list[bytes], list[int]] | None:
    """(token bytes, special token ids), or None when the file is absent or not a table."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_TABLE_MAGIC):
        return None
    try:
        line_end = data.index(b"\n", len(_TABLE_MAGIC))
        header = json.loads(data[len(_TABLE_MAGIC) : line_end])
        view, at = memoryview(data), line_end + 1
        tokens: list[bytes] = []
        for _ in range(int(header["tokens"])):
            size = int.from_bytes(view[at : at + 4], "little")
            tokens.append(bytes(view[at + 4 : at + 4 + size]))
            at += 4 + size
        special = [int(i) for i in header["special"]]
    except (ValueError, KeyError, TypeError):
        return None
    return (tokens, special) if at == len(data) else None


class _Tokens:
    """The token table and the model's own tokenizer, as ``llguidance.TokenizerWrapper``
    reads them."""

    def __init__(self, tokenizer: Any, tokens: list[bytes], special: list[int]) -> None:
        self._tokenizer = tokenizer
        self.tokens = tokens
        self.special_token_ids = special
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id

    def __call__(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError("text only")  # the wrapper then hands over str
        ids: list[int] = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids


def build_ll_tokenizer(model_dir: Path, tokenizer: Any, *, n_vocab: int, eos_token: int) -> Any:
    """llguidance's tokenizer for this model: from the cached token table when there is one,
    else from the serialized tokenizer (which then writes the table for next time)."""
    import llguidance

    table = model_dir / f"llguidance-tokens-{tokenizer_digest(model_dir)}.bin"
    cached = _read_table(table)
    if cached is not None and len(cached[0]) == n_vocab:
        wrapper = llguidance.TokenizerWrapper(_Tokens(tokenizer, *cached))
        return llguidance.LLTokenizer(wrapper, n_vocab=n_vocab, eos_token=eos_token)
    built = llguidance.LLTokenizer(_serialized(tokenizer), n_vocab=n_vocab, eos_token=eos_token)
    _write_table(table, built)
    return built


def warm_tokenizer_caches(model_dir: Path) -> None:
    """Write the tokenizer check and llguidance's token table for this folder (and drop the
    serialized tokenizer earlier versions cached there: nothing reads it now)."""
    for stale in model_dir.glob("llguidance-tokenizer-*.json"):
        stale.unlink(missing_ok=True)
    tokenizer = load_tokenizer(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    text_config = config.get("text_config", config)
    n_vocab = int(text_config["vocab_size"])
    build_ll_tokenizer(model_dir, tokenizer, n_vocab=n_vocab, eos_token=int(tokenizer.eos_token_id))
