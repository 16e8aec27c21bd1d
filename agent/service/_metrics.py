"""Prometheus metrics of the service.

Tasks by state and queue depth are read from the database at scrape time, so every process
reports the same, shared truth; a user who is not an administrator sees only the counts of
their own tasks. Step latency, LLM latency by adapter and router decisions are observed by
this process's workers from the events of the runs they drive (no label names a user, a
task or anything a user wrote).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from trellis.agent.runtime import (
    EventBase,
    LLMCall,
    RouteDecided,
    SkillFinished,
    TaskFinished,
)

__all__ = ["CONTENT_TYPE", "ServiceMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


Counts = Callable[..., dict[str, int]]
"""``counts(user_id=None)``: tasks by state, everyone's or one user's (``TaskQueue.counts``)."""


class _QueueCollector(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self._counts()
        except Exception:  # a scrape must not fail because the database blinked
            return
        tasks = GaugeMetricFamily("trellis_tasks", "Service tasks by state", labels=["state"])
        for state, n in sorted(counts.items()):
            tasks.add_metric([state], n)
        yield tasks
        yield GaugeMetricFamily(
            "trellis_queue_depth", "Tasks waiting for a worker", value=counts.get("queued", 0)
        )


class ServiceMetrics:
    """The service's metrics on their own registry (one per process)."""

    def __init__(self, counts: Counts | None = None) -> None:
        self._counts = counts
        self.registry = CollectorRegistry(auto_describe=True)
        """Everything (administrators, ``trellis worker --metrics-port``)."""
        self.process_registry = CollectorRegistry(auto_describe=True)
        """What this process observed (no per-user data)."""
        if counts is not None:
            self.registry.register(_QueueCollector(counts))
        self.step_latency = Histogram(
            "trellis_step_latency_seconds",
            "Seconds from one act step's start to its skill result, per task step",
            buckets=_LATENCY_BUCKETS,
            registry=None,
        )
        self.llm_latency = Histogram(
            "trellis_llm_latency_seconds",
            "Seconds per model call, by adapter (base: the base model)",
            ["adapter", "stage"],
            buckets=_LATENCY_BUCKETS,
            registry=None,
        )
        self.route_decisions = Counter(
            "trellis_router_decisions",
            "Router decisions by adapter and whether the step was out of distribution",
            ["adapter", "out_of_distribution"],
            registry=None,
        )
        self.tasks_finished = Counter(
            "trellis_tasks_finished",
            "Runs finished by this process, by outcome",
            ["outcome"],
            registry=None,
        )
        self.claims = Counter("trellis_task_claims", "Tasks claimed by this process", registry=None)
        self.leases_lost = Counter(
            "trellis_leases_lost",
            "Runs abandoned because another worker took over their lease",
            registry=None,
        )
        for metric in (
            self.step_latency,
            self.llm_latency,
            self.route_decisions,
            self.tasks_finished,
            self.claims,
            self.leases_lost,
        ):
            self.registry.register(metric)
            self.process_registry.register(metric)

    def observe(self, event: EventBase, step_started: dict[Any, float]) -> None:
        """Update metrics from one run event (``step_started``: node -> start time)."""
        if isinstance(event, LLMCall):
            self.llm_latency.labels(event.adapter or "base", event.stage).observe(event.latency_s)
        elif isinstance(event, RouteDecided):
            step_started[(event.task_id, event.node_id)] = event.at
            ood = getattr(event, "out_of_distribution", None)
            if ood is None:
                ood = "out of distribution" in event.reason.lower() or (
                    "out-of-distribution" in event.reason.lower()
                )
            self.route_decisions.labels(event.adapter or "base", str(bool(ood)).lower()).inc()
        elif isinstance(event, SkillFinished):
            started = step_started.pop((event.task_id, event.node_id), None)
            if started is not None and not event.reused:
                self.step_latency.observe(max(0.0, event.at - started))
        elif isinstance(event, TaskFinished):
            self.tasks_finished.labels(event.outcome).inc()

    def render(self, user_id: str | None = None) -> bytes:
        """The text exposition format: everything, or with ``user_id`` the task counts of
        that user's own tasks (and this process's observations, which name no user)."""
        if user_id is None or self._counts is None:
            return generate_latest(self.registry)
        counts = self._counts
        mine = CollectorRegistry(auto_describe=True)
        mine.register(_QueueCollector(lambda: counts(user_id=user_id)))
        return generate_latest(mine) + generate_latest(self.process_registry)
