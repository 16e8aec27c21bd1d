"""Any environment pack through the full agent, judged by the world: base model against the
shipped adapters, with the pack's offer rules on or off.

    python bench/bench_envs.py --env twc --seeds 50:100 --set num_locations=3 \
        --set num_items=3 --set include_doors=true --models base,adapters
    python bench/bench_envs.py --env cookingworld --seeds 0:50 --models base

Each game runs through ``Agent.arun(env=spec)`` with the embedded backend (several at once,
so the backend batches their model calls), with the action budget the world states (its
own move limit) unless ``--max-steps`` is given. Success is judged by the world, not by the
runtime's report: the moves the tree recorded are replayed in a fresh environment and its
state must say ``success``. ``--all-actions`` turns the pack's offer rules off (every valid
action is offered; ``AgentConfig.offer_filter``). ``--no-memory`` leaves the world memory out
of the prompts. Results go to ``bench/results/bench_envs.json`` under
``<env>/<label>/<model>``, updated after every game.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from trellis.adapters import EmbeddedBackend, EmbeddedConfig
from trellis.agent import Agent, AgentConfig, EnvironmentRegistry, default_registry, seed_range
from trellis.memory import TaskStore

RESULTS = Path(__file__).resolve().parent / "results" / "bench_envs.json"


def save(path: list[str], value: Any) -> None:
    """Update one entry; a lock keeps parallel runs from losing each other's entries."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        node = report
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        RESULTS.write_text(json.dumps(report, indent=1) + "\n")


def judged_by_the_world(
    registry: EnvironmentRegistry, record: dict[str, Any], moves: list[str]
) -> bool:
    """Replay the recorded moves in a fresh environment: does the world say success?"""
    pack, spec = registry.for_spec(record)
    environment = pack.create(spec)
    try:
        state = environment.reset()
        for move in moves:
            state = environment.step(move)
        return bool(state.success)
    finally:
        environment.close()


def summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    solved = [r for r in rows if r["success"]]
    return {
        "games": len(rows),
        "solved": len(solved),
        "success_rate": round(len(solved) / max(1, len(rows)), 3),
        "mean_moves_solved": round(statistics.mean(r["moves"] for r in solved), 2)
        if solved
        else None,
        "budget": args.max_steps or "the world's move limit",
        "offer_rules": not args.all_actions,
        "world_memory": not args.no_memory,
        "concurrency": args.concurrency,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "detail": sorted(rows, key=lambda r: r["seed"]),
    }


async def play(args: argparse.Namespace, model: str, label: str) -> dict[str, Any]:
    shipped = model == "adapters"
    registry = EnvironmentRegistry()
    specs = [
        registry.spec_from_options(args.env, seed=seed, fields=args.set)
        for seed in seed_range(args.seeds)
    ]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/envs.db"
        store = TaskStore.open(url)
        adapters = default_registry(store.engine, shipped=shipped)
        backend = EmbeddedBackend(
            EmbeddedConfig(threads=args.threads), resolve_adapter_path=adapters.path_of
        )
        options: dict[str, Any] = {
            "database_url": url,
            "shipped_adapters": shipped,
            "offer_filter": not args.all_actions,
            "world_memory_chars": 0 if args.no_memory else AgentConfig().world_memory_chars,
            # A long model-call limit: on a busy CPU concurrent games queue for the model.
            "llm_timeout_s": 3600,
            "wall_time_s": 7200,
        }
        if args.max_steps:
            options["max_steps"] = args.max_steps
        agent = Agent(config=AgentConfig(**options), backend=backend, store=store)
        pending = list(specs)

        async def worker() -> None:
            while pending:
                spec = pending.pop(0)
                seed = getattr(spec, "seed", len(rows))
                started = time.perf_counter()
                try:
                    result = await agent.arun(env=spec)
                except Exception as exc:  # counted as unsolved, the run goes on
                    print(f"seed {seed}: {type(exc).__name__}: {exc}", flush=True)
                    rows.append({"seed": seed, "success": False, "moves": 0, "error": str(exc)})
                    continue
                moves = agent.tree(result.task_id).env_actions()
                row = {
                    "seed": seed,
                    "success": judged_by_the_world(registry, spec.record(), moves),
                    "runtime_outcome": result.outcome,
                    "moves": len(moves),
                    "reason": result.reason,
                    "adapters": sorted(result.adapters),
                    "seconds": round(time.perf_counter() - started, 1),
                    "actions": moves,
                }
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "actions"}), flush=True)
                save([args.env, label, model], summary(rows, args))

        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        agent.close()
        await backend.aclose()
    result = summary(rows, args)
    save([args.env, label, model], result)
    print(f"{args.env} {label} {model}: {result['solved']}/{result['games']} solved")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", required=True, help="Environment kind (trellis envs list).")
    parser.add_argument("--seeds", default="0:50", help="Seeds START:STOP.")
    parser.add_argument("--set", action="append", default=[], help="Spec field KEY=VALUE.")
    parser.add_argument("--models", default="base,adapters", help="base and/or adapters.")
    parser.add_argument("--max-steps", type=int, default=None, help="Budget (default: world).")
    parser.add_argument("--concurrency", type=int, default=4, help="Games at once.")
    parser.add_argument("--threads", type=int, default=None, help="Torch threads.")
    parser.add_argument("--all-actions", action="store_true", help="Offer rules off.")
    parser.add_argument("--no-memory", action="store_true", help="World memory off.")
    parser.add_argument("--label", default=None, help="Result label (default from options).")
    args = parser.parse_args()
    label = args.label or "_".join(
        [f"seeds_{args.seeds.replace(':', '_')}", *args.set]
        + (["all_actions"] if args.all_actions else [])
        + (["no_memory"] if args.no_memory else [])
        + ([f"max_steps_{args.max_steps}"] if args.max_steps else [])
    )
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        asyncio.run(play(args, model, label))


if __name__ == "__main__":
    main()
