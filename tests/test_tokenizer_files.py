"""The tokenizer read directly, where it was checked to match AutoTokenizer (real files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from trellis.adapters._tokenizer_files import (
    _PROBES,
    _read_table,
    _write_table,
    load_tokenizer,
    tokenizer_digest,
    warm_tokenizer_caches,
)


class _Built:
    """What ``_write_table`` reads of an llguidance tokenizer."""

    vocab_size = 5

    def is_special_token(self, token: int) -> bool:
        return token < 2

    def decode_bytes(self, tokens: list[int]) -> bytes:
        return [b"<pad>", b"<eos>", b"a", b"\xe2\x96\x81b", b""][tokens[0]]


def test_the_token_table_reads_back_and_a_damaged_one_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "table.bin"
    _write_table(path, _Built())
    assert _read_table(path) == ([b"<pad>", b"<eos>", b"a", b"\xe2\x96\x81b", b""], [0, 1])
    data = path.read_bytes()
    for damaged in (data[:-3], data[5:], data + b"x", b""):
        path.write_bytes(damaged)
        assert _read_table(path) is None
    assert _read_table(tmp_path / "absent.bin") is None


@pytest.fixture
def tokenizer_folder(prepared_model: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(prepared_model / name, folder / name)
    return folder


@pytest.mark.slow
def test_the_direct_load_is_used_once_checked_and_tokenizes_alike(tokenizer_folder: Path) -> None:
    reference = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    first = load_tokenizer(tokenizer_folder)  # checks, and answers the standard way
    verdict = tokenizer_folder / f"tokenizer-check-{tokenizer_digest(tokenizer_folder)}.json"
    assert json.loads(verdict.read_text()) == {"direct": True}
    assert type(first) is type(reference)
    direct = load_tokenizer(tokenizer_folder)
    assert type(direct) is not type(reference)  # read straight into the Rust backend
    for text in (*_PROBES, "put the mug in the dishwasher"):
        assert direct(text)["input_ids"] == reference(text)["input_ids"]
    assert direct.eos_token_id == reference.eos_token_id
    assert direct.convert_tokens_to_ids("<end_of_turn>") == 106


@pytest.mark.slow
def test_a_folder_checked_unlike_or_changed_loads_the_standard_way(tokenizer_folder: Path) -> None:
    reference = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    verdict = tokenizer_folder / f"tokenizer-check-{tokenizer_digest(tokenizer_folder)}.json"
    verdict.write_text(json.dumps({"direct": False}))
    assert type(load_tokenizer(tokenizer_folder)) is type(reference)
    verdict.write_text("{not json")
    assert type(load_tokenizer(tokenizer_folder)) is type(reference)
    # Changed files have another hash: the old verdict does not apply to them.
    config = tokenizer_folder / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"<pad>"', '"<unk>"', 1))
    assert not (
        tokenizer_folder / f"tokenizer-check-{tokenizer_digest(tokenizer_folder)}.json"
    ).exists()


@pytest.mark.slow
def test_warming_writes_both_caches(tokenizer_folder: Path) -> None:
    warm_tokenizer_caches(tokenizer_folder)
    digest = tokenizer_digest(tokenizer_folder)
    assert (tokenizer_folder / f"tokenizer-check-{digest}.json").is_file()
    assert (tokenizer_folder / f"llguidance-tokens-{digest}.bin").is_file()
