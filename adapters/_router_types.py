"""The router's vocabulary: the step it routes, its decision and its configuration."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from trellis.adapters._router_policies import (
    AdapterLike,
    RouteRule,
)

__all__ = ["AdapterSource", "Policy", "RouteDecision", "RouterConfig", "StepContext", "scores_text"]

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


def scores_text(pairs: Iterable[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {score:.3f}" for name, score in pairs)
