"""Constrained decoding's token masks: the uncompiled mask is llguidance's own, and the
llguidance tokenizer built from the cached token table is the one llguidance builds."""

from __future__ import annotations

from typing import Literal

import pytest
import torch
from pydantic import BaseModel

from trellis.adapters._embedded_model import _apply_token_bitmask


@pytest.mark.parametrize(("rows", "vocab"), [(1, 64), (3, 1000), (2, 262144), (2, 70)])
def test_the_mask_is_llguidances_own(rows: int, vocab: int) -> None:
    from llguidance.torch import apply_token_bitmask_inplace

    generator = torch.Generator().manual_seed(rows * vocab)
    words = (vocab + 31) // 32
    bitmask = torch.randint(
        -(2**31), 2**31 - 1, (rows, words), dtype=torch.int32, generator=generator
    )
    bitmask[0, 0] = -1  # all 32 tokens allowed
    bitmask[-1, -1] = 0  # none allowed
    logits = torch.randn(rows, vocab, generator=generator)
    expected = logits.clone()
    apply_token_bitmask_inplace(expected, bitmask)
    _apply_token_bitmask(logits, bitmask)
    assert torch.equal(logits, expected)
    assert torch.isinf(logits).any() and torch.isfinite(logits).any()


@pytest.mark.slow
def test_the_llguidance_tokenizer_from_the_token_table_is_the_one_llguidance_builds() -> None:
    """Built from the cached token table, llguidance's tokenizer tokenizes like the one it
    builds itself and gives the same token masks under a plan schema, step by step."""
    import llguidance.hf
    from llguidance import LLMatcher

    from trellis.adapters import resolve_model_dir
    from trellis.adapters._embedded_model import compile_schema, load_model
    from trellis.adapters._tokenizer_files import build_ll_tokenizer, warm_tokenizer_caches
    from trellis.planners import SkillSpec, plan_json_schema

    loaded = load_model(resolve_model_dir(), name="gemma-3-270m", device="cpu", dtype="float32")
    vocab = int(loaded.model.config.get_text_config().vocab_size)
    theirs = llguidance.hf.from_tokenizer(
        loaded.tokenizer, n_vocab=vocab, eos_token=sorted(loaded.eos_ids)[0]
    )
    warm_tokenizer_caches(loaded.model_dir)  # what `trellis model prepare` leaves
    assert list(loaded.model_dir.glob("llguidance-tokens-*.bin"))
    ours = build_ll_tokenizer(
        loaded.model_dir, loaded.tokenizer, n_vocab=vocab, eos_token=sorted(loaded.eos_ids)[0]
    )
    assert ours.vocab_size == theirs.vocab_size and ours.eos_token == theirs.eos_token
    for text in ['{"skill": "go_to", "args": {"place": "sink"}}', "take dirty mug", "ünïcode ✓"]:
        assert ours.tokenize_str(text) == theirs.tokenize_str(text)

    class Place(BaseModel):
        place: Literal["sink", "fridge"]

    schema = plan_json_schema([SkillSpec("go_to", "Go somewhere.", Place)], max_steps=2)
    document = (
        '{"steps":[{"id":"1","title":"go to the sink","skill":"go_to",'
        '"args":{"place":"sink"},"depends_on":[]}]}'
    )
    grammar = compile_schema(schema)
    ours_matcher, theirs_matcher = LLMatcher(ours, grammar), LLMatcher(theirs, grammar)
    for token in [*theirs.tokenize_str(document), sorted(loaded.eos_ids)[0]]:
        assert ours_matcher.compute_bitmask() == theirs_matcher.compute_bitmask()
        assert ours_matcher.consume_token(token) and theirs_matcher.consume_token(token)
    assert ours_matcher.is_accepting() and theirs_matcher.is_accepting()
