"""Constrained decoding's token masks: the uncompiled mask is llguidance's own, and the
llguidance tokenizer built from the cached serialized form is the one llguidance builds."""

from __future__ import annotations

import pytest
import torch

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
def test_the_cached_llguidance_tokenizer_is_the_one_llguidance_builds() -> None:
    import llguidance.hf

    from trellis.adapters import resolve_model_dir
    from trellis.adapters._embedded_model import load_model

    loaded = load_model(resolve_model_dir(), name="gemma-3-270m", device="cpu", dtype="float32")
    ours = loaded.ll_tokenizer()
    assert list(loaded.model_dir.glob("llguidance-tokenizer-*.json"))  # kept for next time
    vocab = int(loaded.model.config.get_text_config().vocab_size)
    theirs = llguidance.hf.from_tokenizer(
        loaded.tokenizer, n_vocab=vocab, eos_token=sorted(loaded.eos_ids)[0]
    )
    for text in ['{"skill": "go_to", "args": {"place": "sink"}}', "take dirty mug", "ünïcode ✓"]:
        assert ours.tokenize_str(text) == theirs.tokenize_str(text)
    assert ours.vocab_size == theirs.vocab_size and ours.eos_token == theirs.eos_token
