"""App worlds through the full agent, judged by each world's own state.

    python bench/bench_apps.py --split dev --models base,adapters
    python bench/bench_apps.py --split dev --models adapters --cases on --repeat 2
    python bench/bench_apps.py --split dev --models adapters --reminders-only

Every goal of every world in the split (``bench/apps``: train worlds kitchen, laundry,
warehouse, lab; dev worlds table, assistant, never used to train or tune anything) runs on a
fresh world through ``Agent.arun`` with the embedded model: the app's own skills, the goal
and its reminders, the generic planner, routing, cues. Afterwards only the world speaks:
``goal.check(world)`` says whether the goal was achieved and ``goal.forbidden(world)`` lists
the reminders it broke. The runtime's own outcome is recorded beside it, never used.

Reported per world and model: goals achieved, plans valid at the first attempt (the task's
first plan came from the first model answer), forbidden calls that ran, mean seconds.
``--cases on`` keeps successful plans as cases and retrieves them while planning;
``--repeat N`` runs the goal list N times in a row on one database (repeated goals).
Results go to ``bench/results/bench_apps.json`` under ``<split>/<model>[_cases]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: bench.apps lives beside it
    sys.path.insert(0, str(ROOT))

from bench.apps import AppWorld, Goal, worlds  # noqa: E402
from trellis import Agent, AgentConfig, AgentEvent  # noqa: E402
from trellis.adapters import EmbeddedBackend, EmbeddedConfig, LLMBackend  # noqa: E402
from trellis.agent import (  # noqa: E402
    LLMCall,
    PlanMade,
    SkillFinished,
    TaskFinished,
    default_registry,
)
from trellis.memory import TaskStore  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_apps.json"


async def run_goal(
    world_cls: type[AppWorld],
    goal: Goal,
    backend: LLMBackend,
    store: TaskStore,
    config: AgentConfig,
) -> dict[str, Any]:
    """One goal on a fresh world; the world's verdict and what the run did."""
    world = world_cls.fresh()
    agent = Agent(
        config=config,
        skills=world_cls.skills(),
        skill_context=world.context(),
        backend=backend,
        store=store,
    )
    plan_calls_before_first_plan = 0
    first_plan: bool | None = None
    finished: TaskFinished | None = None
    calls = 0
    started = time.perf_counter()
    error = None
    try:
        events: Any = agent.stream(goal.text, reminders=goal.reminders)
        async for event in events:
            event: AgentEvent  # type: ignore[no-redef]
            if isinstance(event, LLMCall) and event.stage == "plan" and first_plan is None:
                plan_calls_before_first_plan += 1
            elif isinstance(event, PlanMade) and first_plan is None:
                first_plan = plan_calls_before_first_plan <= 1
            elif isinstance(event, SkillFinished) and not event.reused:
                calls += 1
            elif isinstance(event, TaskFinished):
                finished = event
    except Exception as exc:  # a crash is a failed goal, and is reported
        error = f"{type(exc).__name__}: {exc}"
    finally:
        agent.loop_graph.close()
    achieved, broken = goal.judge(world)
    return {
        "goal": goal.id,
        "achieved": achieved,
        "forbidden": broken,
        "first_plan_valid": bool(first_plan),
        "runtime_outcome": finished.outcome if finished else "crashed",
        "reason": finished.reason if finished else error,
        "skill_calls": calls,
        "reference_steps": goal.steps,
        "seconds": round(time.perf_counter() - started, 1),
        "log": [list(entry) for entry in world.log],
    }


async def run_round(
    world_cls: type[AppWorld],
    goals: list[Goal],
    round_number: int,
    concurrency: int,
    run: Any,
) -> list[dict[str, Any]]:
    """Every goal once, ``concurrency`` at a time (the model batches their calls)."""
    queue = list(goals)
    rows: list[dict[str, Any]] = []

    async def worker() -> None:
        while queue:
            row = await run(world_cls, queue.pop(0))
            row["round"] = round_number
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "log"}), flush=True)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    achieved = sum(r["achieved"] for r in rows)
    return {
        "goals": len(rows),
        "achieved": achieved,
        "success_rate": round(achieved / max(1, len(rows)), 3),
        "first_plan_valid": round(sum(r["first_plan_valid"] for r in rows) / max(1, len(rows)), 3),
        "forbidden_calls_run": sum(len(r["forbidden"]) for r in rows),
        "mean_seconds": round(statistics.mean(r["seconds"] for r in rows), 1) if rows else 0,
    }


def save(split: str, key: str, value: Any) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    report.setdefault(split, {})[key] = value
    RESULTS.write_text(json.dumps(report, indent=1) + "\n")


async def bench(args: argparse.Namespace, model: str) -> dict[str, Any]:
    shipped = model == "adapters"
    chosen = [w for w in worlds(None if args.split == "all" else args.split)]
    if args.worlds:
        chosen = [w for w in chosen if w.name in args.worlds]
    key = (
        model
        + ("_cases" if args.cases == "on" else "")
        + ("_reminded" if args.reminders_only else "")
    )
    report: dict[str, Any] = {"worlds": {}}
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/apps.db"
        store = TaskStore.open(url)
        registry = default_registry(store.engine, shipped=shipped)
        backend = EmbeddedBackend(
            EmbeddedConfig(threads=args.threads), resolve_adapter_path=registry.path_of
        )
        options: dict[str, Any] = {
            "database_url": url,
            "shipped_adapters": shipped,
            "llm_timeout_s": 3600,
            "wall_time_s": 3600,
        }
        if args.max_steps is not None:
            options["max_steps"] = args.max_steps
        options["past_cases"] = args.cases == "on"
        config = AgentConfig(**options)

        async def run(world_cls: type[AppWorld], goal: Goal) -> dict[str, Any]:
            return await run_goal(world_cls, goal, backend, store, config)

        for world_cls in chosen:
            goals = [g for g in world_cls.goals() if g.reminders or not args.reminders_only]
            goals = goals[: args.goals or None]
            rows: list[dict[str, Any]] = []
            for round_number in range(1, args.repeat + 1):
                rows += await run_round(world_cls, goals, round_number, args.concurrency, run)
            report["worlds"][world_cls.name] = {
                "split": world_cls.split,
                **summarize(rows),
                "by_round": {
                    str(r): summarize([row for row in rows if row["round"] == r])
                    for r in range(1, args.repeat + 1)
                },
                "detail": sorted(rows, key=lambda r: (r["round"], r["goal"])),
            }
            everything = [row for w in report["worlds"].values() for row in w["detail"]]
            report.update(summarize(everything))
            report["load_average_1m"] = round(os.getloadavg()[0], 2)
            save(args.split, key, report)
        store.close()
        await backend.aclose()
    print(f"{args.split} {key}: {report['achieved']}/{report['goals']} achieved")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("dev", "train", "all"), default="dev")
    parser.add_argument("--models", default="base,adapters", help="base and/or adapters.")
    parser.add_argument("--worlds", nargs="*", default=None, help="Only these worlds.")
    parser.add_argument("--goals", type=int, default=0, help="First N goals per world (0: all).")
    parser.add_argument("--cases", choices=("on", "off"), default="off")
    parser.add_argument(
        "--reminders-only",
        action="store_true",
        help="Only the goals that come with reminders (results under <model>_reminded).",
    )
    parser.add_argument("--repeat", type=int, default=1, help="Rounds over the goal list.")
    parser.add_argument("--concurrency", type=int, default=4, help="Goals at once.")
    parser.add_argument("--threads", type=int, default=None, help="Torch threads.")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="Skill calls per goal (default: AgentConfig)."
    )
    args = parser.parse_args()
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        asyncio.run(bench(args, model))


if __name__ == "__main__":
    main()
