"""The router's building blocks: adapter profiles, rules, the embedding index and BM25.

The index keeps every adapter's description and examples as unit vectors. One decision is
one matrix product over all adapters: with at most ``shortlist`` adapters the product runs
over every example row; above that, over one centroid per adapter, and the exact per-example
scores are computed only for the shortlisted adapters (and the best keyword matches).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from trellis.adapters._backend import LLMRequest, SamplingParams
from trellis.adapters._embeddings import normalize_rows
from trellis.adapters.errors import AdapterProfileError

__all__ = [
    "AdapterLike",
    "AdapterProfile",
    "Bm25Index",
    "EmbeddingIndex",
    "RouteRule",
    "Scores",
    "fit_thresholds",
    "loo_scores",
    "refine_request",
    "tokenize",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORD_TEXT = """a an and are as at be by for from has have how i in into is it its me my of on or our
    please so that the their them then there these this to up us was we what when where which
    who will with you your can could would should do does did not no yes all any some
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


class AdapterLike(Protocol):
    """What the router reads from a registered adapter (``AdapterRecord`` satisfies it)."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str | None: ...

    @property
    def examples(self) -> Sequence[str]: ...

    @property
    def tags(self) -> Sequence[str]: ...


class AdapterProfile(BaseModel):
    """An adapter as the router sees it: name, what it is for, and example requests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Registered adapter name (what the backend is asked for)."""
    description: str
    """One or two sentences on what the adapter is for."""
    examples: tuple[str, ...]
    """Example step texts the adapter should serve (at least one)."""
    tags: tuple[str, ...] = ()
    """Domain and skill words matched exactly by the keyword policy."""

    @classmethod
    def of(cls, adapter: AdapterLike | dict[str, Any]) -> AdapterProfile:
        """Validate a registry record, a dict or a profile; names what is missing."""
        if isinstance(adapter, AdapterProfile):
            return adapter
        get = (
            adapter.get if isinstance(adapter, dict) else (lambda key: getattr(adapter, key, None))
        )
        name = get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise AdapterProfileError(
                f"adapter name {name!r} is not usable: use 1-200 letters, digits, '.', '_', "
                "'-', ':' or '/', starting with a letter or digit"
            )
        if name.lower() == "none":
            raise AdapterProfileError(
                "adapter name 'none' is reserved: routing reports and labelled files use it for "
                "'no adapter, the base model serves'; choose another name"
            )
        description = get("description")
        if not isinstance(description, str) or not description.strip():
            raise AdapterProfileError(
                f"adapter {name!r} has no description: the router needs one or two sentences "
                "on what it is for; register it again with a description"
            )
        raw_examples = get("examples") or ()
        if isinstance(raw_examples, str):
            raw_examples = (raw_examples,)
        examples = tuple(str(text).strip() for text in raw_examples if str(text).strip())
        if not examples:
            raise AdapterProfileError(
                f"adapter {name!r} has no examples: the router needs at least one example "
                "request it should serve (five or more make its threshold reliable); register "
                "it again with examples"
            )
        tags = tuple(str(tag).strip() for tag in (get("tags") or ()) if str(tag).strip())
        return cls(name=name, description=description.strip(), examples=examples, tags=tags)

    @property
    def texts(self) -> list[str]:
        """The embedded texts: the description first, then each example."""
        return [self.description, *self.examples]

    @property
    def content_hash(self) -> str:
        """Changes whenever anything the router reads changes."""
        payload = json.dumps([self.description, self.examples, self.tags], ensure_ascii=True)
        return hashlib.sha256(payload.encode()).hexdigest()


class RouteRule(BaseModel):
    """Pin a node kind and/or a skill to an adapter (or to the base model); rules always win."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    adapter: str | None
    """Adapter that serves matching steps; None pins them to the base model."""
    node_kind: str | None = None
    """Match steps of this node kind (None: any kind)."""
    skill: str | None = None
    """Match steps calling this skill (None: any skill)."""

    def model_post_init(self, _context: Any) -> None:
        if self.node_kind is None and self.skill is None:
            raise ValueError("a route rule needs node_kind or skill (or both)")

    def matches(self, node_kind: str | None, skill: str | None) -> bool:
        if self.node_kind is not None and self.node_kind != node_kind:
            return False
        return not (self.skill is not None and self.skill != skill)

    def describe(self) -> str:
        parts = [
            f"{key}={value!r}"
            for key, value in (("node_kind", self.node_kind), ("skill", self.skill))
            if value
        ]
        return " ".join(parts)


# --- keywords -----------------------------------------------------------------------------


def tokenize(text: str) -> list[str]:
    """Lower-case words without stop words; a plural 's' is dropped so 'emails' finds 'email'."""
    tokens = []
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        tokens.append(word)
    return tokens


def profile_terms(profile: AdapterProfile) -> Counter[str]:
    """The adapter's keyword document: name parts, tags (twice: they are chosen words), texts."""
    terms: Counter[str] = Counter()
    terms.update(tokenize(profile.name.replace("-", " ").replace("_", " ")))
    for tag in profile.tags:
        terms.update(tokenize(tag) * 2)
    for text in profile.texts:
        terms.update(tokenize(text))
    return terms


class Bm25Index:
    """Okapi BM25 over one document per adapter, stored as postings (term -> adapters, weights)."""

    def __init__(
        self, documents: Sequence[Counter[str]], *, k1: float = 1.2, b: float = 0.75
    ) -> None:
        self.size = len(documents)
        lengths = np.array([sum(doc.values()) for doc in documents], dtype=np.float32)
        average = float(lengths.mean()) if self.size and lengths.sum() else 1.0
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for position, doc in enumerate(documents):
            norm = k1 * (1.0 - b + b * float(lengths[position]) / average)
            for term, count in doc.items():
                ids, weights = postings.setdefault(term, ([], []))
                ids.append(position)
                weights.append(count * (k1 + 1.0) / (count + norm))
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, (ids, weights) in postings.items():
            df = len(ids)
            idf = math.log(1.0 + (self.size - df + 0.5) / (df + 0.5))
            self.postings[term] = (
                np.asarray(ids, dtype=np.int64),
                np.asarray(weights, dtype=np.float32) * np.float32(idf),
            )

    def scores(self, tokens: Iterable[str]) -> np.ndarray:
        """BM25 score of every adapter for these query tokens (each distinct token once)."""
        out = np.zeros(self.size, dtype=np.float32)
        for term in set(tokens):
            posting = self.postings.get(term)
            if posting is not None:
                out[posting[0]] += posting[1]
        return out

    def matched_terms(self, tokens: Iterable[str], position: int) -> list[str]:
        """Query terms that occur in one adapter's document (for the decision's reason)."""
        return sorted(
            term
            for term in set(tokens)
            if term in self.postings and position in self.postings[term][0]
        )


# --- embeddings ---------------------------------------------------------------------------


_BLAS_SINGLE_THREAD_ELEMENTS = 1 << 18
"""Largest product OpenBLAS keeps on the calling thread (measured: it starts threads from
about 400k elements, and on busy cores those threads cost milliseconds)."""


def matvec(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``matrix @ vector`` on the calling thread.

    A decision's products are small; multi-threaded BLAS wakes worker threads for them,
    which costs milliseconds when the cores are busy. Below its threading size BLAS runs on
    the calling thread, so a large product is split into blocks of that size (four times
    faster than einsum's loop, and as steady under load).
    """
    rows, cols = matrix.shape
    if rows * cols <= _BLAS_SINGLE_THREAD_ELEMENTS:
        return np.dot(matrix, vector)
    out = np.empty(rows, dtype=np.result_type(matrix, vector))
    step = max(1, _BLAS_SINGLE_THREAD_ELEMENTS // max(1, cols))
    for start in range(0, rows, step):
        np.dot(matrix[start : start + step], vector, out=out[start : start + step])
    return out


@dataclass
class Scores:
    """Scores of the candidate adapters for one query (arrays aligned with ``candidates``)."""

    candidates: np.ndarray
    """Adapter positions in the index."""
    embedding: np.ndarray
    """Per-adapter embedding similarity (top-k mean blended with the centroid similarity)."""
    keyword: np.ndarray
    """Saturated BM25 score in [0, 1)."""
    probe: np.ndarray
    """The ridge probe's score (zeros when the probe is off)."""
    combined: np.ndarray
    """embedding + keyword_weight * keyword + probe_weight * probe: what ranks the candidates."""
    probe_background: float | None = None
    """The probe's score of the background class (None when the probe or background is off)."""


class EmbeddingIndex:
    """All adapters' text vectors in one matrix, grouped by adapter, plus one centroid each."""

    def __init__(
        self,
        blocks: Sequence[np.ndarray],
        *,
        top_k: int = 1,
        centroid_weight: float = 0.0,
        coarse_dim: int = 48,
        coarse_from: int = 256,
    ) -> None:
        self.size = len(blocks)
        self.top_k = top_k
        self.centroid_weight = centroid_weight
        self.counts = np.array([block.shape[0] for block in blocks], dtype=np.int64)
        self.starts = np.zeros(self.size + 1, dtype=np.int64)
        np.cumsum(self.counts, out=self.starts[1:])
        dim = blocks[0].shape[1] if blocks else 0
        self.rows = (
            np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)
            if blocks
            else np.zeros((0, dim), dtype=np.float32)
        )
        if blocks:
            sums = np.add.reduceat(self.rows, self.starts[:-1], axis=0)
            self.centroids = normalize_rows(sums)
        else:
            self.centroids = np.zeros((0, dim), dtype=np.float32)
        # Shortlisting reads one row per adapter on every decision. Projected onto the
        # centroids' main directions, that matrix stays small enough to live in the CPU
        # cache at 10,000 adapters; the exact full-dimension scores come afterwards.
        self.projection: np.ndarray | None = None
        self.coarse = self.centroids
        if self.size >= coarse_from and 0 < coarse_dim < dim:
            _, vectors = np.linalg.eigh(self.centroids.T.astype(np.float64) @ self.centroids)
            self.projection = np.ascontiguousarray(
                vectors[:, ::-1][:, :coarse_dim], dtype=np.float32
            )
            self.coarse = np.ascontiguousarray(self.centroids @ self.projection)

    def score(self, query: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """Exact per-adapter scores for the given adapters (all when None), vectorised.

        The score blends the top-k mean of the adapter's row similarities with the
        similarity to its centroid. The row similarities are laid out in a padded
        (adapters x rows) matrix so that every top-k mean is one partition, with no Python loop.
        """
        if positions is None:
            sims = matvec(self.rows, query)
            lengths = self.counts
            starts = self.starts[:-1]
        else:
            lengths = self.counts[positions]
            starts = self.starts[positions]
        total = int(lengths.sum())
        segment = np.repeat(np.arange(len(lengths)), lengths)
        offsets = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        within = np.arange(total) - offsets[segment]
        if positions is not None:
            sims = matvec(self.rows[starts[segment] + within], query)
        if not total:
            return np.zeros(0, dtype=np.float32)
        if self.top_k == 1:
            nearest = np.maximum.reduceat(sims, offsets)
        else:
            padded = np.full((len(lengths), int(lengths.max())), -np.inf, dtype=np.float32)
            padded[segment, within] = sims
            k = min(self.top_k, padded.shape[1])
            top = -np.partition(-padded, k - 1, axis=1)[:, :k]
            valid = np.isfinite(top)
            nearest = np.where(valid, top, 0.0).sum(axis=1) / valid.sum(axis=1)
        if self.centroid_weight > 0:
            centroids = self.centroids if positions is None else self.centroids[positions]
            weight = np.float32(self.centroid_weight)
            nearest = (1 - weight) * nearest + weight * matvec(centroids, query)
        return np.asarray(nearest, dtype=np.float32)

    def shortlist(self, query: np.ndarray, size: int, *, pool: int | None = None) -> np.ndarray:
        """Positions of the ``size`` adapters whose centroid is nearest the query.

        With a projection, the projected centroids first keep the ``pool`` nearest (at least
        ``size``); their exact centroid similarity then picks ``size``. The cheap pass can
        afford fewer dimensions because the exact pass repairs its ranking errors.
        """
        if size >= self.size:
            return np.arange(self.size)
        if self.projection is None:
            exact = matvec(self.centroids, query)
            return np.argpartition(exact, self.size - size)[self.size - size :]
        pool = min(self.size, max(size, pool or size))
        coarse = matvec(self.coarse, np.einsum("i,ij->j", query, self.projection))
        nearest = np.argpartition(coarse, self.size - pool)[self.size - pool :]
        if pool == size:
            return nearest
        exact = matvec(self.centroids[nearest], query)
        return nearest[np.argpartition(exact, pool - size)[pool - size :]]


def loo_scores(block: np.ndarray, *, top_k: int, centroid_weight: float) -> np.ndarray:
    """Each example's score against its own adapter with that example left out.

    ``block`` is the adapter's rows (row 0 is the description); the score is the one
    :meth:`EmbeddingIndex.score` computes, so thresholds fitted on it apply to decisions.
    """
    examples = block.shape[0] - 1
    if examples < 1:
        return np.zeros(0, dtype=np.float32)
    sims = block[1:] @ block.T
    sims[np.arange(examples), np.arange(1, examples + 1)] = -np.inf
    k = min(top_k, block.shape[0] - 1)
    scores = (-np.sort(-sims, axis=1)[:, :k]).mean(axis=1)
    if centroid_weight > 0:
        rest = block.sum(axis=0)[None, :] - block[1:]
        norms = np.linalg.norm(rest, axis=1)
        norms[norms == 0] = 1.0
        centroid = np.einsum("ij,ij->i", block[1:], rest) / norms
        scores = (1 - centroid_weight) * scores + centroid_weight * centroid
    return scores.astype(np.float32)


def fit_thresholds(
    loo: dict[str, np.ndarray],
    *,
    quantile: float,
    pooling: float,
    margin: float,
    floor: float,
    ceiling: float,
    default: float,
    min_examples: int,
) -> dict[str, float]:
    """Per-adapter OOD thresholds from leave-one-out example scores (see :func:`loo_scores`).

    An adapter's own quantile from twenty-odd examples is noisy, and how far its own
    examples spread says little about how far a new paraphrase lands. So each threshold
    blends the adapter's own quantile with the same quantile over every adapter's examples
    (``pooling`` is the pooled share), minus a margin, within [floor, ceiling]. Adapters with
    fewer than ``min_examples`` examples take the pooled value alone (``default`` when no
    adapter has enough).
    """
    usable = [scores for scores in loo.values() if len(scores) >= min_examples]
    pooled = float(np.quantile(np.concatenate(usable), quantile)) if usable else None
    out: dict[str, float] = {}
    for name, scores in loo.items():
        if pooled is None:
            out[name] = default
            continue
        if len(scores) >= min_examples:
            own = float(np.quantile(scores, quantile))
            value = pooling * pooled + (1 - pooling) * own - margin
        else:
            value = pooled - margin
        out[name] = float(min(max(value, floor), ceiling))
    return out


def saturate(bm25: np.ndarray, half: float) -> np.ndarray:
    """Map BM25 scores to [0, 1): ``half`` is the score that maps to 0.5."""
    return bm25 / (bm25 + np.float32(half))


def refine_request(
    text: str, candidates: Sequence[tuple[str, str]], *, timeout_s: float
) -> LLMRequest:
    """The base-model request that picks one of the candidate adapters (name, description)."""
    names = [name for name, _ in candidates]
    options = "\n".join(f"- {name}: {description}" for name, description in candidates)
    prompt = (
        "Choose the specialist that should handle this step.\n"
        f"Step: {text}\n"
        f"Specialists:\n{options}\n"
        'Answer with JSON: {"adapter": "<name>"}\n'
    )
    schema = {
        "type": "object",
        "properties": {"adapter": {"type": "string", "enum": names}},
        "required": ["adapter"],
        "additionalProperties": False,
    }
    return LLMRequest(
        prompt=prompt,
        json_schema=schema,
        sampling=SamplingParams(max_tokens=32, temperature=0.0),
        timeout_s=timeout_s,
    )
