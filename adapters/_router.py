"""The adapter router: which registered adapter serves a step, or the base model.

Policies compose in a fixed order, and the decision names the one that decided:

1. ``rule``: a node kind or skill pinned to an adapter (or to the base model) always wins;
2. ``embedding``: sentence similarity of the step to each adapter's description and examples;
3. ``keyword``: BM25 over each adapter's words, blended into the embedding score (the policy
   is ``keyword`` when the blend changed the winner);
   ``probe``: a ridge classifier fitted on every adapter's texts at once (and the background
   as one more class, see ``adapters._router_probe``), also blended in; it separates
   neighbouring domains that similarity alone confuses (the policy is ``probe`` when it
   changed the winner);
4. ``refine``: when the two best scores are closer than ``refine_margin``, the base model
   picks among the top candidates (training-free re-ranking; failures keep the score winner);
5. ``ood``: the winner scored below its fitted threshold (and was not clearly ahead of the
   runner-up), or no better than the step's similarity to general requests (the background,
   see ``adapters._router_background``), or the probe scores the background above it, so
   the base model serves and the request is logged for the coverage report. ``empty``: no adapter is registered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, inspect

from trellis.adapters._backend import LLMBackend
from trellis.adapters._embeddings import Embedder, SentenceEmbedder
from trellis.adapters._router_background import Background
from trellis.adapters._router_policies import (
    AdapterLike,
    AdapterProfile,
    Bm25Index,
    EmbeddingIndex,
    RouteRule,
    Scores,
    fit_thresholds,
    loo_scores,
    profile_terms,
    refine_request,
    saturate,
    tokenize,
)
from trellis.adapters._router_probe import RidgeProbe
from trellis.adapters._router_store import RouterStore, StoredThreshold, UncoveredRequest
from trellis.adapters.errors import DuplicateAdapterError, UnknownAdapterError
from trellis.memory import run_sync
from trellis.memory.errors import SchemaMismatchError, UsageError

__all__ = ["AdapterSource", "RouteDecision", "Router", "RouterConfig", "StepContext"]

log = logging.getLogger("trellis.router")

Policy = Literal["rule", "embedding", "keyword", "probe", "refine", "ood", "empty"]


class AdapterSource(Protocol):
    """Where adapters come from (``AdapterRegistry`` satisfies it)."""

    def list(self) -> Sequence[AdapterLike]: ...


class StepContext(BaseModel):
    """What the router knows about the step being routed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    """The step as the model will see it (title and input, in words)."""
    node_kind: str | None = None
    """Kind of the Task Memory Tree node (matched by rules)."""
    skill: str | None = None
    """Skill the step calls, when known (matched by rules)."""
    task_id: str | None = None
    """Task the step belongs to (recorded with uncovered requests)."""
    node_id: int | None = None
    """Node id of the step (recorded with uncovered requests)."""
    user_id: str | None = None
    """User the task runs for (recorded with uncovered requests)."""


class RouteDecision(BaseModel):
    """Which adapter serves a step and why; ``model_dump()`` is JSON-ready for nodes and traces."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    adapter: str | None
    """Adapter that serves the step; None means the base model."""
    score: float
    """Score of the winning (or, out of distribution, the nearest) adapter."""
    runner_up: list[tuple[str, float]] = Field(default_factory=list)
    """The next best adapters and their scores, best first."""
    policy: Policy
    """The policy that decided."""
    reason: str
    """One line a person can read."""
    out_of_distribution: bool = False
    """True when no adapter covers the step (the base model serves it)."""
    threshold: float | None = None
    """The threshold the score was compared with, when one applied."""


class RouterConfig(BaseModel):
    """How the router scores adapters, detects uncovered steps and asks the model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[RouteRule, ...] = ()
    """Pinned routes, checked in order before anything else; the first match wins."""
    top_k: int = Field(default=3, ge=1, le=16)
    """Nearest-example part of an adapter's score: mean of its top-k similarities (1: the best)."""
    centroid_weight: float = Field(default=0.3, ge=0.0, le=1.0)
    """Share of an adapter's embedding score taken from the similarity to its centroid (the
    mean of all its texts); the rest is the top-k mean. The centroid steadies adapters whose
    examples are spread out."""
    shortlist: int = Field(default=64, ge=1)
    """Above this many adapters, exact scores are computed only for the nearest centroids."""
    shortlist_pool: int = Field(default=3, ge=1)
    """With projected centroids, the cheap pass keeps ``shortlist_pool`` times ``shortlist``
    adapters and their exact centroid similarity picks the shortlist (1: the cheap pass
    picks it alone)."""
    coarse_dim: int = Field(default=48, ge=0)
    """Above ``shortlist`` adapters (and from 256), centroids are projected to this many
    dimensions to pick the shortlist fast (0: full dimension)."""
    keyword_weight: float = Field(default=0.25, ge=0.0, le=1.0)
    """Weight of the saturated BM25 score added to the embedding score (0 disables it)."""
    keyword_half: float = Field(default=4.0, gt=0.0)
    """BM25 score that counts as a half-strength keyword match."""
    threshold_quantile: float = Field(default=0.1, ge=0.0, le=0.5)
    """Fitting: quantile of leave-one-out example scores the threshold starts from."""
    threshold_pooling: float = Field(default=0.5, ge=0.0, le=1.0)
    """Fitting: share of that quantile taken over all adapters' examples together (the rest
    from the adapter's own examples); pooling steadies thresholds fitted on few examples."""
    threshold_margin: float = Field(default=0.02, ge=0.0, le=0.5)
    """Fitting: subtracted from that quantile, to admit paraphrases a bit further out."""
    threshold_floor: float = Field(default=0.1, ge=-1.0, le=1.0)
    """Fitting: no threshold goes below this (unrelated text must stay uncovered)."""
    threshold_ceiling: float = Field(default=0.6, ge=-1.0, le=1.0)
    """Fitting: no threshold goes above this (tight adapters must stay reachable)."""
    default_threshold: float = Field(default=0.4, ge=-1.0, le=1.0)
    """Threshold of adapters with fewer than ``min_fit_examples`` examples."""
    min_fit_examples: int = Field(default=3, ge=2)
    """Fewest examples from which an adapter's own quantile is used (fewer: the pooled one)."""
    clear_margin: float = Field(default=0.15, ge=0.0, le=1.0)
    """A winner ahead of the runner-up by at least this much is kept although it scored up
    to ``clear_slack`` below its threshold (unrelated text is rarely close to one adapter
    only; 1 disables this)."""
    clear_slack: float = Field(default=0.05, ge=0.0, le=0.5)
    """How far below its threshold a clear winner may score."""
    background: bool = True
    """Compare each step with general requests (the shipped set, or ``background_examples``):
    the winner's embedding score must beat the step's top-k similarity to them by
    ``background_margin``, else no adapter covers the step."""
    background_examples: tuple[str, ...] = ()
    """Your own background requests, used instead of the shipped general set."""
    background_margin: float = Field(default=-0.02, ge=-1.0, le=1.0)
    """How far the winner must score above the background (negative: it may score below)."""
    background_prune: float = Field(default=0.7, ge=-1.0, le=1.0)
    """Background requests at least this similar to any adapter text are dropped, so an
    adapter whose domain the background touches keeps its requests."""
    probe_weight: float = Field(default=0.5, ge=0.0, le=4.0)
    """Weight of the ridge probe's score added to the ranking (0 turns the probe off). With
    the background on, a step the probe scores as a general request above the winner is
    out of distribution."""
    probe_ridge: float = Field(default=0.1, gt=0.0)
    """The probe's ridge penalty (lambda): larger is smoother and closer to the centroids."""
    probe_background_weight: float = Field(default=0.1, ge=0.0)
    """Weight of each background request in the probe's fit (an adapter's texts weigh 40
    together)."""
    refine_margin: float = Field(default=0.03, ge=0.0, le=1.0)
    """Ask the base model when the top-2 margin is below this (0: never; needs a backend)."""
    refine_top_k: int = Field(default=3, ge=2, le=10)
    """How many candidates the base model chooses among."""
    refine_timeout_s: float = Field(default=30.0, gt=0)
    """Time limit of the re-ranking request; on timeout the score winner stands."""
    runner_up_count: int = Field(default=3, ge=0, le=20)
    """How many runner-up scores a decision carries."""
    log_uncovered: bool = True
    """Record uncovered requests in the database (needs an engine) for the coverage report."""
    coverage_keep: int = Field(default=10_000, ge=1)
    """How many uncovered requests are kept (oldest are pruned)."""
    refresh_interval_s: float = Field(default=5.0, ge=0.0)
    """How often ``route`` re-reads the registry for added or removed adapters (0: every call)."""

    def fit_method(self) -> str:
        """Identifies the fitting settings; thresholds fitted otherwise are refitted."""
        return (
            f"loo-top{self.top_k}-c{self.centroid_weight:g}-q{self.threshold_quantile:g}"
            f"-p{self.threshold_pooling:g}-m{self.threshold_margin:g}"
            f"-[{self.threshold_floor:g},{self.threshold_ceiling:g}]"
        )


def _scores_text(pairs: Iterable[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {score:.3f}" for name, score in pairs)


class Router:
    """Routes steps to adapters. Build it on a registry (re-read incrementally) or on profiles.

    ``engine`` (migrated with ``memory.upgrade``) holds the embedding cache, the fitted
    thresholds and the uncovered-request log; without it everything stays in memory.
    """

    def __init__(
        self,
        adapters: Iterable[AdapterLike | AdapterProfile | dict[str, Any]] = (),
        *,
        registry: AdapterSource | None = None,
        embedder: Embedder | None = None,
        config: RouterConfig | None = None,
        engine: Engine | None = None,
        backend: LLMBackend | None = None,
    ) -> None:
        self.config = config or RouterConfig()
        self.embedder: Embedder = embedder if embedder is not None else SentenceEmbedder()
        self.registry = registry
        self.backend = backend
        if engine is None and registry is not None:
            engine = getattr(registry, "engine", None)
        self.store: RouterStore | None = None
        if engine is not None:
            if not inspect(engine).has_table("router_thresholds"):
                raise SchemaMismatchError(
                    f"the database at {engine.url.render_as_string(hide_password=True)} has no "
                    "router tables; run `trellis db upgrade` (or memory.upgrade(engine))"
                )
            self.store = RouterStore(engine)
        self._profiles: dict[str, AdapterProfile] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._terms: dict[str, Counter[str]] = {}
        self._loo: dict[str, np.ndarray] = {}
        self._fitted: dict[str, float] = {}
        self._fit_dirty = True
        self._stored: dict[str, StoredThreshold] = {}
        self._names: list[str] = []
        self._index: EmbeddingIndex | None = None
        self._bm25: Bm25Index | None = None
        self._probe: RidgeProbe | None = None
        self._thresholds = np.zeros(0, dtype=np.float32)
        self._dirty = True
        self._empty_logged = False
        self._last_refresh = 0.0
        self._background = (
            Background(self.config.background_examples or None, top_k=self.config.top_k)
            if self.config.background
            else None
        )
        if self.store is not None:
            self._stored = self.store.load_thresholds(self.embedder.name)
        initial = [AdapterProfile.of(item) for item in adapters]
        if registry is not None:
            initial.extend(AdapterProfile.of(item) for item in registry.list())
            self._last_refresh = time.monotonic()
        self.add_many(initial)

    # --- the adapter set ----------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Routable adapter names, in index order."""
        return list(self._profiles)

    def profile(self, name: str) -> AdapterProfile:
        try:
            return self._profiles[name]
        except KeyError:
            raise UnknownAdapterError(name, list(self._profiles)) from None

    def add(self, adapter: AdapterLike | AdapterProfile | dict[str, Any]) -> None:
        """Make one more adapter routable (only its own texts are embedded)."""
        self.add_many([adapter])

    def add_many(self, adapters: Iterable[AdapterLike | AdapterProfile | dict[str, Any]]) -> None:
        """Add several adapters at once; a duplicate name fails before anything changes."""
        profiles = [AdapterProfile.of(item) for item in adapters]
        seen: set[str] = set()
        for profile in profiles:
            if profile.name in self._profiles or profile.name in seen:
                raise DuplicateAdapterError(profile.name)
            seen.add(profile.name)
        self._embed(profiles)

    def remove(self, name: str) -> None:
        """Stop routing to an adapter."""
        if name not in self._profiles:
            raise UnknownAdapterError(name, list(self._profiles))
        self._drop([name])

    def refresh(self) -> tuple[list[str], list[str]]:
        """Re-read the registry: embed added or changed adapters, drop removed ones.

        Returns (added or changed names, removed names).
        """
        self._last_refresh = time.monotonic()
        if self.registry is None:
            return [], []
        current = {p.name: p for p in (AdapterProfile.of(item) for item in self.registry.list())}
        removed = [name for name in self._profiles if name not in current]
        changed = [
            profile
            for name, profile in current.items()
            if name not in self._profiles
            or self._profiles[name].content_hash != profile.content_hash
        ]
        if removed:
            self._drop(removed)
        if changed:
            self._drop([p.name for p in changed if p.name in self._profiles], forget=False)
            self._embed(changed)
        return [p.name for p in changed], removed

    def _drop(self, names: Sequence[str], *, forget: bool = True) -> None:
        for name in names:
            self._profiles.pop(name, None)
            self._vectors.pop(name, None)
            self._terms.pop(name, None)
            self._loo.pop(name, None)
        if forget and self.store is not None:
            self.store.forget_embeddings(self.embedder.name, names)
        self._dirty = self._fit_dirty = True

    def _embed(self, profiles: Sequence[AdapterProfile]) -> None:
        if not profiles:
            return
        keys = [(p.name, p.content_hash) for p in profiles]
        cached = self.store.load_embeddings(self.embedder.name, keys) if self.store else {}
        missing = [p for p, key in zip(profiles, keys, strict=True) if key not in cached]
        if missing:
            texts = [text for p in missing for text in p.texts]
            vectors = self.embedder.embed(texts)
            fresh: dict[tuple[str, str], np.ndarray] = {}
            offset = 0
            for p in missing:
                fresh[(p.name, p.content_hash)] = vectors[offset : offset + len(p.texts)]
                offset += len(p.texts)
            if self.store is not None:
                self.store.save_embeddings(self.embedder.name, fresh)
            cached.update(fresh)
        config = self.config
        for p, key in zip(profiles, keys, strict=True):
            block = cached[key]
            self._profiles[p.name] = p
            self._vectors[p.name] = block
            self._terms[p.name] = profile_terms(p)
            self._loo[p.name] = loo_scores(
                block, top_k=config.top_k, centroid_weight=config.centroid_weight
            )
        self._dirty = self._fit_dirty = True

    def _ensure_fitted(self) -> None:
        # Pooled thresholds depend on every adapter, so they are refitted when the set changes.
        if not self._fit_dirty:
            return
        config = self.config
        self._fitted = fit_thresholds(
            self._loo,
            quantile=config.threshold_quantile,
            pooling=config.threshold_pooling,
            margin=config.threshold_margin,
            floor=config.threshold_floor,
            ceiling=config.threshold_ceiling,
            default=config.default_threshold,
            min_examples=config.min_fit_examples,
        )
        self._fit_dirty = False

    def _ensure_index(self) -> None:
        if not self._dirty:
            return
        self._names = list(self._profiles)
        self._index = EmbeddingIndex(
            [self._vectors[n] for n in self._names],
            top_k=self.config.top_k,
            centroid_weight=self.config.centroid_weight,
            coarse_dim=self.config.coarse_dim,
        )
        self._bm25 = Bm25Index([self._terms[n] for n in self._names])
        self._thresholds = np.array([self.threshold(n) for n in self._names], dtype=np.float32)
        if self._background is not None and self._names:
            vectors = self._background.vectors(self.embedder, self.store)
            self._background.prune(vectors, self._index.rows, self.config.background_prune)
        self._probe = None
        if self.config.probe_weight > 0 and self._names:
            kept = self._background.kept if self._background is not None else None
            self._probe = RidgeProbe(
                self._index.rows,
                self._index.starts,
                kept if kept is not None and kept.size else self._index.rows[:0],
                ridge=self.config.probe_ridge,
                background_weight=self.config.probe_background_weight,
            )
        self._dirty = False

    # --- thresholds ---------------------------------------------------------------------

    def threshold(self, name: str) -> float:
        """The threshold in force: persisted (if it matches the adapter's content), else fitted."""
        profile = self.profile(name)
        stored = self._stored.get(name)
        if (
            stored is not None
            and stored.content_hash == profile.content_hash
            and stored.method in ("manual", self.config.fit_method())
        ):
            return stored.threshold
        self._ensure_fitted()
        return self._fitted[name]

    def fit(self) -> dict[str, float]:
        """Fit every adapter's threshold from its examples and persist them (when stored).

        Manual thresholds of unchanged adapters are kept. Returns the thresholds in force.
        """
        now = dt.datetime.now(dt.UTC)
        self._ensure_fitted()
        result: dict[str, StoredThreshold] = {}
        for name, profile in self._profiles.items():
            stored = self._stored.get(name)
            if (
                stored is not None
                and stored.method == "manual"
                and stored.content_hash == profile.content_hash
            ):
                result[name] = stored
                continue
            result[name] = StoredThreshold(
                adapter=name,
                threshold=self._fitted[name],
                content_hash=profile.content_hash,
                examples=len(profile.examples),
                method=self.config.fit_method(),
                fitted_at=now,
            )
        if self.store is not None:
            self.store.save_thresholds(self.embedder.name, result.values())
        self._stored = result
        self._dirty = True
        return {name: item.threshold for name, item in result.items()}

    def set_threshold(self, name: str, value: float) -> None:
        """Override one adapter's threshold by hand (kept by ``fit`` until the adapter changes)."""
        if not -1.0 <= value <= 1.0:
            raise UsageError(f"threshold {value} is outside [-1, 1]; similarities are cosines")
        profile = self.profile(name)
        self._stored[name] = StoredThreshold(
            adapter=name,
            threshold=float(value),
            content_hash=profile.content_hash,
            examples=len(profile.examples),
            method="manual",
            fitted_at=dt.datetime.now(dt.UTC),
        )
        if self.store is not None:
            self.store.save_thresholds(self.embedder.name, self._stored.values())
        self._dirty = True

    # --- routing ------------------------------------------------------------------------

    def _known(self, name: str) -> bool:
        # A rule may pin a registered adapter that is not an embedding candidate (an adapter
        # source can hold some back, as the shipped adapters are): the source decides.
        if name in self._profiles:
            return True
        contains = getattr(self.registry, "__contains__", None)
        return bool(contains is not None and contains(name))

    def _rule(self, context: StepContext) -> RouteDecision | None:
        for rule in self.config.rules:
            if rule.matches(context.node_kind, context.skill):
                if rule.adapter is not None and not self._known(rule.adapter):
                    raise UnknownAdapterError(rule.adapter, list(self._profiles))
                target = rule.adapter or "the base model"
                return RouteDecision(
                    adapter=rule.adapter,
                    score=1.0,
                    policy="rule",
                    reason=f"rule {rule.describe()} pins this step to {target}",
                )
        return None

    def _empty(self) -> RouteDecision:
        if not self._empty_logged:
            log.info("no adapters are registered: every step is served by the base model")
            self._empty_logged = True
        return RouteDecision(
            adapter=None,
            score=0.0,
            policy="empty",
            reason="no adapters are registered: base model serves",
        )

    def scores(self, vector: np.ndarray, text: str) -> Scores:
        """Embedding, keyword and combined scores of the candidate adapters (no rules, no OOD)."""
        self._ensure_index()
        index, bm25, config = self._index, self._bm25, self.config
        if index is None or bm25 is None or index.size == 0:
            empty = np.zeros(0, dtype=np.float32)
            return Scores(np.zeros(0, dtype=np.int64), empty, empty, empty, empty)
        tokens = tokenize(text)
        keyword_all = bm25.scores(tokens) if config.keyword_weight > 0 and tokens else None
        if index.size <= config.shortlist:
            candidates = np.arange(index.size)
            embedding = index.score(vector)
        else:
            candidates = index.shortlist(
                vector, config.shortlist, pool=config.shortlist * config.shortlist_pool
            )
            if keyword_all is not None:
                # Exact domain words can rescue an adapter whose centroid is not nearby: the
                # 8 best keyword matches join the shortlist (one partition, no full sort).
                best = np.argpartition(keyword_all, index.size - 8)[index.size - 8 :]
                hits = best[keyword_all[best] > 0]
                listed = np.zeros(index.size, dtype=bool)
                listed[candidates] = True
                extra = hits[~listed[hits]]
                if len(extra):
                    candidates = np.concatenate([candidates, extra])
            candidates = np.sort(candidates)  # ties go to the earlier adapter, as in full scoring
            embedding = index.score(vector, candidates)
        if keyword_all is not None:
            keyword = saturate(keyword_all[candidates], config.keyword_half)
        else:
            keyword = np.zeros(len(candidates), dtype=np.float32)
        combined = embedding + np.float32(config.keyword_weight) * keyword
        probe_background: float | None = None
        if self._probe is not None:
            transformed = self._probe.transform(vector)
            probe = self._probe.scores(transformed, candidates)
            probe_background = self._probe.background(transformed)
            combined += np.float32(config.probe_weight) * probe
        else:
            probe = np.zeros(len(candidates), dtype=np.float32)
        return Scores(candidates, embedding, keyword, probe, combined, probe_background)

    def decide(self, vector: np.ndarray, context: StepContext) -> RouteDecision:
        """Route with an already computed query vector (rules, scores, OOD; no model call)."""
        decision, _ = self._decide(vector, context)
        return decision

    def _decide(self, vector: np.ndarray, context: StepContext) -> tuple[RouteDecision, list[int]]:
        ruled = self._rule(context)
        if ruled is not None:
            return ruled, []
        if not self._profiles:
            return self._empty(), []
        if not context.text.strip():
            return RouteDecision(
                adapter=None,
                score=0.0,
                policy="ood",
                reason="the step has no text: base model serves",
                out_of_distribution=True,
            ), []
        scores = self.scores(vector, context.text)
        order = np.argsort(-scores.combined, kind="stable")
        best = int(order[0])
        position = int(scores.candidates[best])
        name = self._names[position]
        score = float(scores.combined[best])
        shown = order[: self.config.runner_up_count + 1]
        ranked = [
            (self._names[int(scores.candidates[i])], round(float(scores.combined[i]), 4))
            for i in shown
        ]
        threshold = float(self._thresholds[position])
        embedding_score = float(scores.embedding[best])
        lead = score - float(scores.combined[int(order[1])]) if len(order) > 1 else 0.0
        uncovered: str | None = None  # why no adapter covers the step
        if self._background is not None:
            background = self._background.score(vector)
            if embedding_score < background + self.config.background_margin:
                uncovered = f"no more than general requests ({background:.3f})"
        clear = (
            lead >= self.config.clear_margin
            and embedding_score >= threshold - self.config.clear_slack
        )
        probe_score = float(scores.probe[best])
        if (
            uncovered is None
            and scores.probe_background is not None
            and scores.probe_background > probe_score
        ):
            uncovered = (
                f"but the probe scores the step as a general request "
                f"({scores.probe_background:.3f} against {probe_score:.3f})"
            )
        if uncovered is None and embedding_score < threshold and not clear:
            uncovered = f"below its threshold {threshold:.3f}"
        if uncovered is not None:
            return RouteDecision(
                adapter=None,
                score=round(score, 4),
                runner_up=ranked,
                policy="ood",
                reason=(
                    f"nearest adapter {name} has similarity {embedding_score:.3f}, {uncovered}: "
                    "no adapter covers this step, base model serves"
                ),
                out_of_distribution=True,
                threshold=round(threshold, 4),
            ), []
        embedding_best = int(scores.candidates[int(np.argmax(scores.embedding))])
        runner_up = ranked[1:]
        # Which blended score moved the winner: keywords when they alone would have, else the probe.
        with_keywords = scores.embedding + np.float32(self.config.keyword_weight) * scores.keyword
        keyword_best = int(scores.candidates[int(np.argmax(with_keywords))])
        policy: Policy
        if embedding_best != position and keyword_best == position and self._bm25 is not None:
            words = self._bm25.matched_terms(tokenize(context.text), position)
            policy = "keyword"
            reason = (
                f"keywords {', '.join(words[:5])} moved {name} ({score:.3f}) above "
                f"{self._names[embedding_best]}"
            )
        elif keyword_best != position:
            policy = "probe"
            reason = (
                f"the probe ({probe_score:.3f}) moved {name} ({score:.3f}) above "
                f"{self._names[keyword_best]}"
            )
        else:
            policy = "embedding"
            margin_text = (
                f", margin {score - runner_up[0][1]:.3f} over {runner_up[0][0]}"
                if runner_up
                else ""
            )
            comparison = (
                f"{embedding_score:.3f} >= threshold {threshold:.3f}"
                if embedding_score >= threshold
                else f"{embedding_score:.3f}, below threshold {threshold:.3f} but well ahead"
            )
            reason = f"{name} is the closest adapter (similarity {comparison}{margin_text})"
        decision = RouteDecision(
            adapter=name,
            score=round(score, 4),
            runner_up=runner_up,
            policy=policy,
            reason=reason,
            threshold=round(threshold, 4),
        )
        top = [int(scores.candidates[i]) for i in order[: self.config.refine_top_k]]
        close = len(order) > 1 and lead < self.config.refine_margin
        return decision, top if close else []

    async def route(self, context: StepContext | str) -> RouteDecision:
        """Decide which adapter serves this step."""
        if isinstance(context, str):
            context = StepContext(text=context)
        self._maybe_refresh()
        ruled = self._rule(context)
        if ruled is not None:
            return ruled
        if not self._profiles:
            return self._empty()
        vector = (await asyncio.to_thread(self.embedder.embed, [context.text]))[0]
        decision, close = self._decide(vector, context)
        if close and self.backend is not None:
            decision = await self._refine(context, decision, close)
        if decision.out_of_distribution:
            await self._log_uncovered(context, decision)
        return decision

    def route_sync(self, context: StepContext | str) -> RouteDecision:
        """Blocking :meth:`route`."""
        return run_sync(self.route(context))

    def _maybe_refresh(self) -> None:
        if (
            self.registry is not None
            and time.monotonic() - self._last_refresh >= self.config.refresh_interval_s
        ):
            self.refresh()

    async def _refine(
        self, context: StepContext, decision: RouteDecision, positions: list[int]
    ) -> RouteDecision:
        """Ask the base model to choose among close candidates; any failure keeps ``decision``."""
        backend = self.backend
        if backend is None:
            return decision
        names = [self._names[p] for p in positions]
        request = refine_request(
            context.text,
            [(n, self._profiles[n].description) for n in names],
            timeout_s=self.config.refine_timeout_s,
        )
        try:
            result = await asyncio.wait_for(backend.generate(request), self.config.refine_timeout_s)
        except Exception as exc:  # a failed re-rank must never fail the step
            log.warning("router re-ranking failed (%s); keeping the score winner", exc)
            return decision.model_copy(
                update={"reason": f"{decision.reason}; re-ranking failed: {exc}"}
            )
        choice = result.parsed.get("adapter") if isinstance(result.parsed, dict) else None
        if choice not in names:
            detail = result.json_error or f"answer {result.text[:60]!r} names no candidate"
            return decision.model_copy(
                update={"reason": f"{decision.reason}; re-ranking unusable: {detail}"}
            )
        scored: dict[str, float] = {
            str(decision.adapter): decision.score,
            **dict(decision.runner_up),
        }
        chosen_score = float(scored.get(choice, decision.score))
        others = sorted(
            ((n, s) for n, s in scored.items() if n != choice and n is not None),
            key=lambda x: -x[1],
        )
        return decision.model_copy(
            update={
                "adapter": choice,
                "score": chosen_score,
                "runner_up": others,
                "policy": "refine",
                "reason": (
                    f"scores were close ({_scores_text(scored.items())}); "
                    f"the base model chose {choice}"
                ),
                "threshold": round(self.threshold(choice), 4),
            }
        )

    async def _log_uncovered(self, context: StepContext, decision: RouteDecision) -> None:
        if self.store is None or not self.config.log_uncovered:
            return
        record = {
            "text": context.text,
            "nearest": decision.runner_up[0][0] if decision.runner_up else None,
            "score": decision.score,
            "threshold": decision.threshold,
            "task_id": context.task_id,
            "node_id": context.node_id,
            "user_id": context.user_id,
        }
        try:
            await asyncio.to_thread(
                self.store.log_uncovered, record, keep=self.config.coverage_keep
            )
        except Exception as exc:  # the coverage log is advisory; routing goes on
            log.warning("could not record an uncovered request: %s", exc)

    def coverage(
        self, *, limit: int = 50, since: dt.datetime | None = None
    ) -> list[UncoveredRequest]:
        """Recent requests no adapter covered, newest first (needs an engine)."""
        if self.store is None:
            raise UsageError("the coverage report needs a database: build the Router with engine=")
        return self.store.uncovered(limit=limit, since=since)
