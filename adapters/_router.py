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

import numpy as np

from trellis.adapters._router_index import RouterIndex
from trellis.adapters._router_policies import (
    Scores,
    refine_request,
    saturate,
    tokenize,
)
from trellis.adapters._router_store import UncoveredRequest
from trellis.adapters._router_types import (
    AdapterSource,
    Policy,
    RouteDecision,
    RouterConfig,
    StepContext,
    scores_text,
)
from trellis.adapters.errors import UnknownAdapterError
from trellis.memory import run_sync
from trellis.memory.errors import UsageError

__all__ = ["AdapterSource", "RouteDecision", "Router", "RouterConfig", "StepContext"]

log = logging.getLogger("trellis.router")


class Router(RouterIndex):
    """Routes steps to adapters. Build it on a registry (re-read incrementally) or on profiles.

    ``engine`` (migrated with ``memory.upgrade``) holds the embedding cache, the fitted
    thresholds and the uncovered-request log; without it everything stays in memory.
    """

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
                    f"scores were close ({scores_text(scored.items())}); "
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
