"""The shipped adapters against the base model: twc success and reminder-to-cue accuracy.

    python bench/bench_adapters.py --part twc-base      # 50 dev games, base model only
    python bench/bench_adapters.py --part twc-adapters  # the same games, shipped adapters
    python bench/bench_adapters.py --part cues          # 100 held-back reminders

``--first-seed S`` plays dev seeds S..S+49 instead, ``--max-steps N`` changes the budget and
``--all-actions`` turns the runtime's offer rules off; each stores its results under its own
key beside the main ones.

twc: dev-fold games with 1-3 rooms and 1-3 objects (seed s has 1 + s % 3 rooms and
1 + (s // 3) % 3 objects), each run through the full agent (``Agent.arun``) with the
embedded backend; several games run at once so the backend batches their model calls.
The baseline is the same agent with ``shipped_adapters=False`` (the base model serves).

cues: 100 reminders whose objects and places never occur in the training rows, extracted by
the rule extractor, by the base model and by the ``reminder`` adapter (model-only mode, so
the adapter is measured alone); a cue counts as right when kind, polarity, action and
subject all match.

Each part updates ``bench/results/bench_adapters.json`` after every game, so parts can run
separately and a stopped run still reports what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trellis_twc._datasets import twc_configs  # noqa: E402

from trellis.adapters import EmbeddedBackend, EmbeddedConfig, ReminderAdapter, ReminderConfig  # noqa: E402
from trellis.adapters._shipped import shipped_adapters  # noqa: E402
from trellis.agent import (  # noqa: E402
    Agent,
    AgentConfig,
    reminder_cue_examples,
)
from trellis.agent.runtime._defaults import default_registry  # noqa: E402
from trellis.memory import TaskStore  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "bench_adapters.json"


def _save(key: str, value: Any) -> None:
    """Update one key; a lock file keeps two bench processes from losing each other's keys."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        report[key] = value
        report["shipped_adapters"] = [a.name for a in shipped_adapters()]
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")


def _twc_summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    wins = sum(r["success"] for r in rows)
    return {
        "games": len(rows),
        "solved": wins,
        "success_rate": round(wins / max(1, len(rows)), 3),
        "mean_steps": round(statistics.mean(r["steps"] for r in rows), 2) if rows else 0,
        "mean_steps_solved": round(statistics.mean(r["steps"] for r in rows if r["success"]), 2)
        if wins
        else None,
        "max_steps": args.max_steps,
        "concurrency": args.concurrency,
        "threads": args.threads,
        "fold": "dev",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "detail": sorted(rows, key=lambda r: r["seed"]),
    }


_ALL_ACTIONS = {
    "avoid_regressions": False,
    "avoid_idle": False,
    "place_shortlist": 0,
    "idle_containers": False,
    "place_homes": False,
}


async def _twc(args: argparse.Namespace, *, shipped: bool) -> dict[str, Any]:
    key = "twc_adapters" if shipped else "twc_base"
    if args.max_steps != 12:  # the main comparison is at 12 actions; others sit beside it
        key += f"_{args.max_steps}_actions"
    if args.first_seed:  # a fresh set of dev games, to check choices made on the first 50
        key += f"_seeds_{args.first_seed}_{args.first_seed + args.games - 1}"
    configs = twc_configs(range(args.first_seed, args.first_seed + args.games), fold="dev")
    if args.all_actions:  # the runtime's offer rules off: the model chooses among every move
        key += "_all_actions_offered"
        configs = [c.model_copy(update=_ALL_ACTIONS) for c in configs]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/twc.db"
        store = TaskStore.open(url)
        registry = default_registry(store.engine, shipped=shipped)
        backend = EmbeddedBackend(
            EmbeddedConfig(threads=args.threads), resolve_adapter_path=registry.path_of
        )
        # A long model-call limit: on a busy CPU a batch of concurrent games can queue a while.
        config = AgentConfig(
            database_url=url,
            max_steps=args.max_steps,
            shipped_adapters=shipped,
            llm_timeout_s=3600,
            wall_time_s=7200,
        )
        agent = Agent(config=config, backend=backend, store=store)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for item in configs:
            queue.put_nowait(item)

        async def worker() -> None:
            while not queue.empty():
                game = queue.get_nowait()
                started = time.perf_counter()
                try:
                    result = await agent.arun(env=game)
                except Exception as exc:  # counted as unsolved, the run goes on
                    print(f"seed {game.seed}: {type(exc).__name__}: {exc}", flush=True)
                    rows.append(
                        {"seed": game.seed, "success": False, "steps": 0, "error": str(exc)}
                    )
                    continue
                row = {
                    "seed": game.seed,
                    "rooms": game.num_locations,
                    "objects": game.num_items,
                    "success": result.success,
                    "steps": result.steps,
                    "outcome": result.outcome,
                    "reason": result.reason,  # the game's own verdict, with its score
                    "completion_tokens": result.completion_tokens,
                    "adapters": sorted(result.adapters),
                    "seconds": round(time.perf_counter() - started, 1),
                    "actions": agent.tree(result.task_id).env_actions(),  # to study the failures
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
                _save(key, _twc_summary(rows, args))

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        agent.close()
        await backend.aclose()
    summary = _twc_summary(rows, args)
    print(f"{key}: {summary['solved']}/{summary['games']} solved")
    return summary


def _cue_key(cue: Any) -> tuple[str, str, str, str]:
    return (cue.kind, cue.polarity, (cue.action or "").lower(), cue.subject.lower())


async def _extract_all(
    extractor: ReminderAdapter, rows: list[dict[str, Any]], width: int
) -> list[Any]:
    # Concurrent requests share the backend's batches: far faster than one at a time.
    results: list[Any] = []
    for start in range(0, len(rows), width):
        chunk = rows[start : start + width]
        results += await asyncio.gather(*(extractor.extract(r["reminder"]) for r in chunk))
    return results


async def _cues(args: argparse.Namespace) -> dict[str, Any]:
    rows = reminder_cue_examples(args.reminders, seed=1, vocabulary="held-out")
    previous = json.loads(RESULTS.read_text()).get("cues", {}) if RESULTS.exists() else {}
    report: dict[str, Any] = {**previous, "reminders": len(rows), "vocabulary": "held-out"}
    with tempfile.TemporaryDirectory() as folder:
        store = TaskStore.open(f"sqlite:///{folder}/cues.db")
        registry = default_registry(store.engine, shipped=True)
        backend = EmbeddedBackend(resolve_adapter_path=registry.path_of)
        name = ReminderAdapter.ADAPTER_NAME
        methods: dict[str, ReminderAdapter] = {
            "rules": ReminderAdapter(None, config=ReminderConfig(mode="rules")),
            "base model": ReminderAdapter(backend, config=ReminderConfig(mode="model")),
            "reminder adapter": ReminderAdapter(
                backend, adapter=name, config=ReminderConfig(mode="model")
            ),
        }
        for label, extractor in methods.items():
            if label not in args.methods:
                continue
            started = time.perf_counter()
            right, misses = 0, list[dict[str, Any]]()
            results = await _extract_all(extractor, rows, args.concurrency * 4)
            for row, result in zip(rows, results, strict=True):
                truth = row["truth"]
                expected = (truth["kind"], truth["polarity"], truth["action"], truth["subject"])
                got = _cue_key(result.cues[0]) if result.cues else None
                if got == expected and result.method != "fallback":
                    right += 1
                elif len(misses) < 5:
                    misses.append({"reminder": row["reminder"], "got": got})
            report[label] = {
                "accuracy": right / len(rows),
                "seconds": round(time.perf_counter() - started, 1),
                "first_misses": misses,
            }
            print(f"{label:>17}: {right}/{len(rows)} right")
        store.close()
        await backend.aclose()
    report["target"] = 0.9
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("twc-base", "twc-adapters", "cues"), required=True)
    parser.add_argument("--games", type=int, default=50, help="twc dev games.")
    parser.add_argument("--first-seed", type=int, default=0, help="First dev seed.")
    parser.add_argument("--max-steps", type=int, default=12, help="Action budget per game.")
    parser.add_argument("--concurrency", type=int, default=4, help="Games run at once.")
    parser.add_argument(
        "--all-actions",
        action="store_true",
        help="Offer every valid action (the runtime's offer rules off).",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="Torch threads (1 when sharing the CPU)."
    )
    parser.add_argument("--reminders", type=int, default=100, help="Held-back reminders.")
    parser.add_argument(
        "--methods",
        default="rules,base model,reminder adapter",
        help="Comma-separated cue extractors to measure (others keep their last results).",
    )
    args = parser.parse_args()
    args.methods = {m.strip() for m in args.methods.split(",")}
    if args.part == "cues":
        _save("cues", asyncio.run(_cues(args)))
    else:
        shipped = args.part == "twc-adapters"
        asyncio.run(_twc(args, shipped=shipped))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
