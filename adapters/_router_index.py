"""The router's adapter set: profiles, their embeddings and indexes, fitted thresholds."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine, inspect

from trellis.adapters._backend import LLMBackend
from trellis.adapters._embeddings import Embedder, SentenceEmbedder
from trellis.adapters._router_background import Background
from trellis.adapters._router_policies import (
    AdapterLike,
    AdapterProfile,
    Bm25Index,
    EmbeddingIndex,
    fit_thresholds,
    loo_scores,
    profile_terms,
)
from trellis.adapters._router_probe import RidgeProbe
from trellis.adapters._router_store import RouterStore, StoredThreshold
from trellis.adapters._router_types import (
    AdapterSource,
    RouterConfig,
)
from trellis.adapters.errors import DuplicateAdapterError, UnknownAdapterError
from trellis.memory.errors import SchemaMismatchError, UsageError

__all__ = ["RouterIndex"]

log = logging.getLogger("trellis.router")


class RouterIndex:
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
