"""Vectors computed ahead of time: the table answers what it holds, the embedder the rest."""

from __future__ import annotations

import numpy as np
import pytest

from trellis.adapters import CachedEmbedder, Embedder, HashingEmbedder


def _cached(texts: list[str]) -> tuple[CachedEmbedder, list[int]]:
    inner = HashingEmbedder(dim=64)
    table = dict(zip(texts, inner.embed(texts), strict=True))
    loads: list[int] = []

    def load() -> Embedder:
        loads.append(1)
        return inner

    return CachedEmbedder(table, load, name=inner.name, dim=inner.dim), loads


def test_texts_in_the_table_never_load_the_embedder() -> None:
    cached, loads = _cached(["a dirty mug", "the dishwasher"])
    vectors = cached.embed(["the dishwasher", "a dirty mug", "the dishwasher"])
    assert vectors.shape == (3, 64) and vectors.dtype == np.float32
    assert np.allclose(vectors[0], vectors[2])
    assert loads == [] and cached.misses == 0


def test_a_missing_text_loads_the_embedder_once_and_is_kept() -> None:
    cached, loads = _cached(["a dirty mug"])
    first = cached.embed(["a clean fork", "a dirty mug"])
    again = cached.embed(["a clean fork"])
    assert loads == [1] and cached.misses == 1
    assert np.allclose(first[0], again[0])
    assert np.allclose(first[0], HashingEmbedder(dim=64).embed(["a clean fork"])[0])
    assert cached.embed([]).shape == (0, 64)


def test_a_table_from_another_embedder_is_refused_by_name() -> None:
    cached = CachedEmbedder({}, lambda: HashingEmbedder(dim=32), name="hashing-64-2", dim=64)
    with pytest.raises(ValueError, match=r"made by hashing-64-2.*not hashing-32-2.*rebuild"):
        cached.embed(["anything"])
