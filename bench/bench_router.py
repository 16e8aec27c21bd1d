"""Router benchmark: decision latency at 10 to 10,000 adapters, and accuracy with OOD detection.

    python bench/bench_router.py [--sizes 10,100,1000,10000] [--decisions 500]

Accuracy: the adapters in ``bench/data/router_adapters.json`` (10 domains, 20 examples each)
and the held-out labelled rows in ``bench/data/router_eval.jsonl`` (250 rows, 20% out of
distribution), routed by the default Router with the real all-MiniLM-L6-v2 embedder.
Baseline, same run: plain nearest neighbour (the single best example wins) with one fixed
global threshold; it is shown at every threshold of a sweep, and the comparison uses the
sweep's best accuracy (a baseline tuned on the evaluation set itself).

Latency: the 10 real adapters plus synthetic ones made by mixing and perturbing the real
adapters' example vectors (and recombining their words for the keyword index). "excl" times
``Router.decide`` on a precomputed query vector (the router's own work); "incl" times
``await Router.route`` with the real embedding of the query. "NN" times the baseline's
nearest-neighbour product over every example row. "=exact" is the share of decisions that
match exact scoring of every adapter (the shortlist must not change decisions). Writes ``bench/results/bench_router.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters._embeddings import SentenceEmbedder, normalize_rows  # noqa: E402
from adapters._router import Router, RouterConfig, StepContext  # noqa: E402
from adapters._router_eval import (  # noqa: E402
    evaluate_predictions,
    evaluate_router,
    load_eval_rows,
    load_profiles_file,
)
from adapters._router_policies import AdapterProfile  # noqa: E402

DATA = ROOT / "bench" / "data"
RESULTS = ROOT / "bench" / "results" / "bench_router.json"
BASELINE_THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


class TableEmbedder:
    """Known texts come from a table of vectors; any other text goes to the real model."""

    def __init__(self, model: SentenceEmbedder) -> None:
        self.model = model
        self.name = model.name
        self.dim = model.dim
        self.table: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.table]
        if missing:
            for text, vector in zip(missing, self.model.embed(missing), strict=True):
                self.table[text] = vector
        return (
            np.stack([self.table[t] for t in texts])
            if texts
            else np.zeros((0, self.dim), np.float32)
        )


def synthetic_adapters(
    real: list[AdapterProfile], embedder: TableEmbedder, count: int, seed: int = 0
) -> list[AdapterProfile]:
    """Adapters that mix two real adapters' examples and perturb their vectors."""
    rng = np.random.default_rng(seed)
    out: list[AdapterProfile] = []
    blocks = {p.name: embedder.embed(p.texts) for p in real}
    for i in range(count):
        first, second = rng.choice(len(real), size=2, replace=False)
        a, b = real[int(first)], real[int(second)]
        picks = [a.examples[int(j)] for j in rng.choice(len(a.examples), 5, replace=False)]
        picks += [b.examples[int(j)] for j in rng.choice(len(b.examples), 3, replace=False)]
        name = f"syn-{i:05d}"
        texts = [f"{name}: {a.description}", *(f"{name} {t}" for t in picks)]
        # Each synthetic row is a real row of its source adapter, pushed well off it.
        sources = [blocks[a.name][0]]
        sources += [blocks[a.name][1 + a.examples.index(t)] for t in picks[:5]]
        sources += [blocks[b.name][1 + b.examples.index(t)] for t in picks[5:]]
        base = np.stack(sources)
        noisy = normalize_rows(base + rng.normal(0, 0.06, base.shape).astype(np.float32))
        for text, vector in zip(texts, noisy, strict=True):
            embedder.table[text] = vector
        out.append(
            AdapterProfile(name=name, description=texts[0], examples=tuple(texts[1:]), tags=a.tags)
        )
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    values = np.array(samples) * 1000.0
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def latency(
    real: list[AdapterProfile],
    embedder: TableEmbedder,
    sizes: list[int],
    decisions: int,
    queries: list[str],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    query_vectors = embedder.model.embed(queries)
    contexts = [StepContext(text=q) for q in queries]
    synthetic_all = synthetic_adapters(real, embedder, max(sizes) - len(real))
    for size in sizes:
        profiles = real + synthetic_all[: size - len(real)]
        started = time.perf_counter()
        router = Router(profiles, embedder=embedder)
        router.decide(query_vectors[0], contexts[0])  # builds the index
        build_s = time.perf_counter() - started
        excl: list[float] = []
        for i in range(decisions):
            j = i % len(queries)
            t0 = time.perf_counter()
            router.decide(query_vectors[j], contexts[j])
            excl.append(time.perf_counter() - t0)
        # Fresh texts so the embedding is really computed for every timed call.
        incl: list[float] = []

        async def timed_routes(
            router: Router = router, incl: list[float] = incl, size: int = size
        ) -> None:
            for i in range(min(decisions, 100)):
                context = StepContext(text=f"{queries[i % len(queries)]} (case {size}-{i})")
                t0 = time.perf_counter()
                await router.route(context)
                incl.append(time.perf_counter() - t0)

        asyncio.run(timed_routes())
        # Baseline: nearest neighbour over every example row (one product, no shortlist).
        matrix = np.concatenate([embedder.embed(list(p.examples)) for p in profiles])
        base: list[float] = []
        for i in range(min(decisions, 200)):
            vector = query_vectors[i % len(queries)]
            t0 = time.perf_counter()
            sims = matrix @ vector
            int(np.argmax(sims))
            base.append(time.perf_counter() - t0)
        # The shortlist must not change decisions: compare with exact scoring of every adapter.
        agreement = 1.0
        if size > router.config.shortlist:
            exact = Router(profiles, embedder=embedder, config=RouterConfig(shortlist=size))
            same = [
                router.decide(v, c).adapter == exact.decide(v, c).adapter
                for v, c in zip(query_vectors, contexts, strict=True)
            ]
            agreement = sum(same) / len(same)
            del exact
        row = {
            "adapters": size,
            "agreement_with_exact": agreement,
            "example_rows": int(matrix.shape[0]),
            "build_s": round(build_s, 2),
            "excl_p50_ms": percentiles(excl)[0],
            "excl_p99_ms": percentiles(excl)[1],
            "incl_p50_ms": percentiles(incl)[0],
            "incl_p99_ms": percentiles(incl)[1],
            "baseline_nn_p50_ms": percentiles(base)[0],
            "baseline_nn_p99_ms": percentiles(base)[1],
        }
        rows.append(row)
        print(
            f"{size:>7} {row['example_rows']:>8} {row['excl_p50_ms']:>9.3f} {row['excl_p99_ms']:>9.3f} "
            f"{row['incl_p50_ms']:>9.2f} {row['incl_p99_ms']:>9.2f} "
            f"{row['baseline_nn_p50_ms']:>9.3f} {row['baseline_nn_p99_ms']:>9.3f} {agreement:>7.3f}",
            flush=True,
        )
        del router, matrix
    return rows


def baseline_predictions(
    profiles: list[AdapterProfile], embedder: TableEmbedder, vectors: np.ndarray, threshold: float
) -> list[str | None]:
    owners = [p.name for p in profiles for _ in p.examples]
    matrix = np.concatenate([embedder.embed(list(p.examples)) for p in profiles])
    sims = vectors @ matrix.T
    best, score = sims.argmax(axis=1), sims.max(axis=1)
    return [owners[int(b)] if s >= threshold else None for b, s in zip(best, score, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--decisions", type=int, default=500)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    profiles = load_profiles_file(DATA / "router_adapters.json")
    rows = load_eval_rows(DATA / "router_eval.jsonl")
    model = SentenceEmbedder()
    started = time.perf_counter()
    model.load()
    load_s = time.perf_counter() - started
    embedder = TableEmbedder(model)

    router = Router(profiles, embedder=embedder, config=RouterConfig())
    ours = evaluate_router(router, rows)
    vectors = embedder.embed([r.text for r in rows])
    expected = [r.expected for r in rows]
    sweep = []
    for threshold in BASELINE_THRESHOLDS:
        result = evaluate_predictions(
            expected, baseline_predictions(profiles, embedder, vectors, threshold)
        )
        sweep.append(
            {
                "threshold": threshold,
                **result.model_dump(exclude={"confusion", "mistakes", "labels"}),
            }
        )
    best = max(sweep, key=lambda item: float(item["accuracy"]))

    print(
        f"\naccuracy: {len(profiles)} adapters, {len(rows)} rows, "
        f"{sum(e is None for e in expected)} out of distribution (model load {load_s:.1f} s)"
    )
    print(f"{'method':<44} {'acc':>6} {'in-dist':>7} {'oodP':>6} {'oodR':>6}")
    print(
        f"{'router (defaults)':<44} {ours.accuracy:>6.3f} {ours.in_distribution_accuracy:>7.3f} "
        f"{ours.ood_precision:>6.3f} {ours.ood_recall:>6.3f}"
    )
    for item in sweep:
        mark = " *" if item is best else ""
        label = f"baseline NN, global threshold {item['threshold']}{mark}"
        print(
            f"{label:<44} {item['accuracy']:>6.3f} {item['in_distribution_accuracy']:>7.3f} "
            f"{item['ood_precision']:>6.3f} {item['ood_recall']:>6.3f}"
        )

    print("\nlatency (ms): excl = router work on a given query vector; incl = with the embedding")
    print(
        f"{'adapters':>7} {'rows':>8} {'excl p50':>9} {'excl p99':>9} {'incl p50':>9} {'incl p99':>9} "
        f"{'NN p50':>9} {'NN p99':>9} {'=exact':>7}"
    )
    queries = [r.text for r in rows]
    timing = latency(profiles, embedder, sizes, args.decisions, queries)

    largest = max(timing, key=lambda row: int(row["adapters"]))
    targets = {
        "p50_excl_at_largest_le_1ms": float(largest["excl_p50_ms"]) <= 1.0,
        "accuracy_ge_0.90": ours.accuracy >= 0.90,
        "ood_recall_ge_0.80": ours.ood_recall >= 0.80,
        "accuracy_beats_baseline": ours.accuracy > float(best["accuracy"]),
        "ood_recall_beats_baseline": ours.ood_recall > float(best["ood_recall"]),
    }
    print("\ntargets:", ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in targets.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "router",
                "command": "python bench/bench_router.py " + " ".join(sys.argv[1:]),
                "machine": {"python": platform.python_version(), "processor": platform.processor()},
                "embedder": model.name,
                "config": RouterConfig().model_dump(mode="json"),
                "accuracy": {
                    "router": ours.model_dump(),
                    "baseline_sweep": sweep,
                    "baseline_best": best,
                },
                "latency_ms": timing,
                "targets": targets,
            },
            indent=1,
        )
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
