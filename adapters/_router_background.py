"""The router's background: general requests a step must be less like than its adapter.

Per-adapter thresholds alone let through unrelated text that happens to share an adapter's
form ("Write a ..." is close to "Write a Python function ..."). The background is a set of
ordinary general-assistant requests; a step goes to an adapter only when the adapter's
embedding score beats the step's similarity to the background by ``background_margin``.

Background requests too close to any adapter's own texts are dropped when the index is
built, so an adapter whose domain the background touches (a poetry adapter, say) keeps
its requests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from trellis.adapters._background import GENERAL_REQUESTS
from trellis.adapters._embeddings import Embedder
from trellis.adapters._router_policies import matvec

if TYPE_CHECKING:
    from trellis.adapters._router_store import RouterStore

__all__ = ["BACKGROUND_CACHE_NAME", "Background"]

BACKGROUND_CACHE_NAME = "<background>"
"""Key of the background's vectors in the embedding cache (no adapter name can be this)."""

_CHUNK_ROWS = 16_384  # adapter rows compared with the background at once while pruning


class Background:
    """Embedded background requests, pruned against the adapters, scored per query."""

    def __init__(self, texts: Sequence[str] | None = None, *, top_k: int = 3) -> None:
        self.texts = tuple(GENERAL_REQUESTS if texts is None else texts)
        self.top_k = top_k
        self.content_hash = hashlib.sha256("\n".join(self.texts).encode()).hexdigest()[:16]
        self._vectors: np.ndarray | None = None
        self.kept = np.zeros((0, 0), dtype=np.float32)
        """The background rows in force after pruning."""

    def vectors(self, embedder: Embedder, store: RouterStore | None) -> np.ndarray:
        """The background's unit vectors, embedded once (and cached with the adapters')."""
        if self._vectors is None:
            key = (BACKGROUND_CACHE_NAME, self.content_hash)
            cached = store.load_embeddings(embedder.name, [key]) if store is not None else {}
            if key in cached:
                self._vectors = cached[key]
            else:
                self._vectors = np.asarray(embedder.embed(list(self.texts)), dtype=np.float32)
                if store is not None:
                    store.save_embeddings(embedder.name, {key: self._vectors})
        return self._vectors

    def prune(self, vectors: np.ndarray, adapter_rows: np.ndarray, limit: float) -> int:
        """Keep the background rows whose similarity to every adapter row is below ``limit``.

        Returns how many were dropped.
        """
        if not len(vectors):
            self.kept = vectors
            return 0
        nearest = np.full(len(vectors), -1.0, dtype=np.float32)
        for start in range(0, len(adapter_rows), _CHUNK_ROWS):
            block = adapter_rows[start : start + _CHUNK_ROWS] @ vectors.T
            np.maximum(nearest, block.max(axis=0), out=nearest)
        self.kept = np.ascontiguousarray(vectors[nearest < limit])
        return int(len(vectors) - len(self.kept))

    def score(self, query: np.ndarray) -> float:
        """Mean similarity of the query to its ``top_k`` nearest background rows (-1: none)."""
        if not len(self.kept):
            return -1.0
        sims = matvec(self.kept, query)
        k = min(self.top_k, len(sims))
        if k == len(sims):
            return float(sims.mean())
        return float(np.partition(sims, len(sims) - k)[len(sims) - k :].mean())
