"""Open-loop plans on the app worlds: the real embedded model plans, the world judges.

    python bench/bench_plans.py [--split dev|train|all] [--models base,plan] [--concurrency 8]

For each goal of the chosen worlds (``bench/apps``; dev worlds are reported apart from the
train worlds, whose goals the ``plan`` adapter was trained on), the planner the runtime
uses (``default_planner``'s configuration, ``LLMPlanner`` with validation and repair) plans
the goal from the world's full skill catalogue and the cues the runtime derives from the
goal's reminders. The plan's calls then run in dependency order (among ready steps, in list
order, as the runtime picks them) on a fresh world with ``bench.apps.reference.call_skill``,
stopping at the first call that fails; a ``decompose`` step cannot run open-loop and stops
the plan too. The world's own judge says whether the goal was achieved and which reminders
were broken.

Reported per model and world: plans valid at the first attempt, valid after repair,
goals achieved, goals with a broken reminder (``forbidden``), mean planning seconds and
completion tokens. ``base`` is the base model alone; ``plan`` is the same planner with the
shipped ``plan`` adapter (``adapters/shipped/plan``, or ``--adapter-dir``). Both run in the
same process, so the comparison holds on a loaded machine. Several goals plan at once
(``--concurrency``) so that the embedded backend batches them; the seconds are wall time
under that batching.

This is an open-loop estimate: the plan never sees a skill's result (``look``,
``find_free_slot``), so goals that need the world's state to be read first are hard by
construction. The full loop is ``Agent.run``.

Cues: ``--cues rules`` (default) uses the rule extractor, as the runtime does without a
reminder adapter; ``--cues adapter`` uses the shipped ``reminder`` adapter in model mode, as
the runtime does by default. Writes ``bench/results/bench_plans.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.apps import AppWorld, Goal, worlds  # noqa: E402
from bench.apps.reference import call_skill  # noqa: E402
from trellis.adapters import (  # noqa: E402
    Cue,
    EmbeddedBackend,
    EmbeddedConfig,
    LLMBackend,
    ReminderAdapter,
    ReminderConfig,
)
from trellis.adapters._shipped import SHIPPED_ADAPTERS_DIR  # noqa: E402
from trellis.planners import (  # noqa: E402
    DECOMPOSE,
    LLMPlanner,
    Plan,
    PlanRequest,
)

RESULTS = ROOT / "bench" / "results" / "bench_plans.json"
PLAN_ADAPTER = "plan"


def execution_order(plan: Plan) -> list[int]:
    """Step indices in the order the runtime runs them: ready steps first, list order among them."""
    done: set[str] = set()
    left = list(range(len(plan.steps)))
    order: list[int] = []
    while left:
        ready = [i for i in left if set(plan.steps[i].depends_on) <= done]
        if not ready:  # a cycle: validation prevents it, but never loop forever
            break
        first = ready[0]
        order.append(first)
        done.add(plan.steps[first].id)
        left.remove(first)
    return order


def execute(world_cls: type[AppWorld], goal: Goal, plan: Plan | None) -> dict[str, Any]:
    """Run the plan's calls on a fresh world (stop at the first failure) and judge the world."""
    world = world_cls.fresh()
    skills = {s.name: s for s in world_cls.skills()}
    ran = 0
    failure: str | None = None
    if plan is not None:
        for index in execution_order(plan):
            step = plan.steps[index]
            if step.skill == DECOMPOSE:
                failure = f"step {step.id} is a decompose step ({step.title!r})"
                break
            try:
                call_skill(skills[step.skill], world, step.args)
            except Exception as exc:  # a failing call ends the plan, like a failed node
                failure = f"{step.skill}({step.args}): {type(exc).__name__}: {exc}"
                break
            ran += 1
    achieved, forbidden = goal.judge(world)
    return {
        "achieved": plan is not None and achieved,
        "forbidden": forbidden if plan is not None else [],
        "calls_run": ran,
        "failure": failure,
    }


def reference_plan(goal: Goal) -> Plan:
    """The goal's reference calls as a chained plan (checks the executor itself)."""
    return Plan.model_validate(
        {
            "steps": [
                {
                    "id": str(i + 1),
                    "title": name,
                    "skill": name,
                    "args": args,
                    "depends_on": [str(i)] if i else [],
                }
                for i, (name, args) in enumerate(goal.reference)
            ]
        }
    )


class Cues:
    """Reminder -> cues, as the runtime derives them, cached per reminder text."""

    def __init__(self, adapter: ReminderAdapter) -> None:
        self.adapter = adapter
        self.cache: dict[str, list[Cue]] = {}

    async def of(self, reminders: Sequence[str]) -> tuple[Cue, ...]:
        found: list[Cue] = []
        for text in reminders:
            if text not in self.cache:
                result = await self.adapter.extract(text, scope="task")
                self.cache[text] = list(result.cues)
            found.extend(self.cache[text])
        return tuple(found)


async def plan_goal(
    planner: LLMPlanner,
    world_cls: type[AppWorld],
    goal: Goal,
    cues: Cues,
    gate: asyncio.Semaphore,
) -> dict[str, Any]:
    request = PlanRequest(
        goal=goal.text,
        skills=tuple(s.spec for s in world_cls.skills()),
        cues=await cues.of(goal.reminders),
        task_id=goal.id,
    )
    async with gate:
        outcome = await planner.plan(request)
    run = execute(world_cls, goal, outcome.plan)
    row = {
        "goal": goal.id,
        "world": world_cls.name,
        "split": world_cls.split,
        "first_valid": outcome.first_attempt_valid,
        "valid": outcome.ok,
        "attempts": outcome.attempts,
        "seconds": outcome.duration_s,
        "tokens": sum(r.completion_tokens for r in outcome.llm_results),
        "cues": [c.render() for c in request.cues],
        "errors": outcome.errors,
        "raw": outcome.raw_outputs,
        "plan": (
            [[s.skill, s.args, s.depends_on] for s in outcome.plan.steps] if outcome.plan else None
        ),
        "reference_steps": goal.steps,
        **run,
    }
    mark = "ok" if row["achieved"] else ("valid" if row["valid"] else "INVALID")
    print(
        f"  [{planner.adapter or 'base'}] {goal.id}: {mark} attempts={outcome.attempts} "
        f"{outcome.duration_s:.0f}s {row['failure'] or ''}",
        flush=True,
    )
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    if not n:
        return {"goals": 0}
    return {
        "goals": n,
        "first_attempt_valid": sum(r["first_valid"] for r in rows) / n,
        "valid_after_repair": sum(r["valid"] for r in rows) / n,
        "achieved": sum(r["achieved"] for r in rows) / n,
        "achieved_count": sum(r["achieved"] for r in rows),
        "with_forbidden": sum(bool(r["forbidden"]) for r in rows),
        "achieved_clean": sum(r["achieved"] and not r["forbidden"] for r in rows),
        "mean_seconds": statistics.fmean(r["seconds"] for r in rows),
        "mean_tokens": statistics.fmean(r["tokens"] for r in rows),
    }


def report(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_world: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_world.setdefault(row["world"], []).append(row)
    return {
        "dev": summarize([r for r in rows if r["split"] == "dev"]),
        "train": summarize([r for r in rows if r["split"] == "train"]),
        "worlds": {name: summarize(group) for name, group in by_world.items()},
        "rows": rows,
    }


def print_table(results: dict[str, dict[str, Any]]) -> None:
    header = (
        f"{'model':<8}{'world':<12}{'split':<7}{'goals':>6}{'valid@1':>9}{'valid':>7}"
        f"{'achieved':>10}{'forbid':>8}{'sec':>7}{'tokens':>8}"
    )
    print(header)
    print("-" * len(header))
    for model, result in results.items():
        lines = [(w, s) for w, s in result["worlds"].items()]
        lines += [("ALL dev", result["dev"]), ("ALL train", result["train"])]
        for name, s in lines:
            if not s.get("goals"):
                continue
            split = (
                ""
                if name.startswith("ALL")
                else next(r["split"] for r in result["rows"] if r["world"] == name)
            )
            print(
                f"{model:<8}{name:<12}{split:<7}{s['goals']:>6}{s['first_attempt_valid']:>9.0%}"
                f"{s['valid_after_repair']:>7.0%}{s['achieved']:>10.0%}{s['with_forbidden']:>8}"
                f"{s['mean_seconds']:>7.1f}{s['mean_tokens']:>8.0f}"
            )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from trellis.agent.runtime._defaults import default_planner

    chosen = [w for w in worlds() if args.split in ("all", w.split)]
    if args.worlds:
        names = set(args.worlds.split(","))
        chosen = [w for w in chosen if w.name in names]
    models = args.models.split(",")
    adapter_dir = Path(args.adapter_dir) if args.adapter_dir else SHIPPED_ADAPTERS_DIR / "plan"
    adapters: dict[str, Path] = {}
    if PLAN_ADAPTER in models:
        adapters[PLAN_ADAPTER] = adapter_dir
    if args.cues == "adapter":
        adapters["reminder"] = SHIPPED_ADAPTERS_DIR / "reminder"
    backend = EmbeddedBackend(
        EmbeddedConfig(threads=args.threads, adapters=adapters, max_batch_size=args.concurrency)
    )
    await backend.start()
    llm: LLMBackend = backend
    config = default_planner(llm).config
    overrides = {
        k: v
        for k, v in {
            "max_steps": args.max_steps,
            "max_tokens": args.max_tokens,
            "max_attempts": args.max_attempts,
            "allow_decompose": args.allow_decompose,
            "max_title_chars": args.max_title_chars,
            "timeout_s": args.timeout,
        }.items()
        if v is not None
    }
    config = config.model_copy(update=overrides)
    if args.cues == "adapter":
        reminder = ReminderAdapter(backend, adapter="reminder", config=ReminderConfig(mode="model"))
    else:
        reminder = ReminderAdapter(None, config=ReminderConfig(mode="rules"))
    cues = Cues(reminder)
    for world_cls in chosen:  # the executor and the judges must accept every reference plan
        for goal in world_cls.goals():
            check = execute(world_cls, goal, reference_plan(goal))
            if not check["achieved"] or check["forbidden"]:
                raise RuntimeError(f"{goal.id}: the reference plan fails the executor: {check}")
    gate = asyncio.Semaphore(args.concurrency)
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    jobs: dict[str, list[Any]] = {}
    for model in models:
        planner = LLMPlanner(llm, adapter=None if model == "base" else PLAN_ADAPTER, config=config)
        goals = [(w, g) for w in chosen for g in w.goals()[: args.max_goals or None]]
        jobs[model] = [plan_goal(planner, w, g, cues, gate) for w, g in goals]
    # Every model's goals at once: the backend batches rows of different adapters together.
    flat = [(model, job) for model, group in jobs.items() for job in group]
    done = await asyncio.gather(*(job for _, job in flat))
    for (model, _), row in zip(flat, done, strict=True):
        results.setdefault(model, {"rows": []})["rows"].append(row)
    results = {model: report(value["rows"]) for model, value in results.items()}
    await backend.aclose()
    out: dict[str, Any] = {
        "benchmark": "bench_plans",
        "command": " ".join(["python", "bench/bench_plans.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
        },
        "backend": backend.name,
        "planner_config": config.model_dump(),
        "cues": args.cues,
        "concurrency": args.concurrency,
        "adapter_dir": str(adapter_dir) if PLAN_ADAPTER in models else None,
        "seconds": time.perf_counter() - started,
        "models": results,
    }
    if "base" in results and PLAN_ADAPTER in results:
        comparison: dict[str, Any] = {}
        for split in ("dev", "train"):
            base, tuned = results["base"][split], results[PLAN_ADAPTER][split]
            if not base.get("goals"):
                continue
            comparison[split] = {
                "first_attempt_valid": [base["first_attempt_valid"], tuned["first_attempt_valid"]],
                "achieved": [base["achieved"], tuned["achieved"]],
                "achieved_ratio": (
                    tuned["achieved"] / base["achieved"] if base["achieved"] else None
                ),
            }
        out["comparison"] = comparison
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--split", choices=["dev", "train", "all"], default="all")
    parser.add_argument("--worlds", default="", help="Comma-separated world names (default all).")
    parser.add_argument("--models", default="base,plan", help="base and/or plan, comma-separated.")
    parser.add_argument("--adapter-dir", default="", help="Plan adapter folder (default shipped).")
    parser.add_argument("--cues", choices=["rules", "adapter"], default="rules")
    parser.add_argument("--concurrency", type=int, default=8, help="Goals planned at once.")
    parser.add_argument("--threads", type=int, default=2, help="Torch threads.")
    parser.add_argument("--max-goals", type=int, default=0, help="First N goals per world.")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--max-attempts", type=int, default=None)
    parser.add_argument("--max-title-chars", type=int, default=None)
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="Seconds per model call (a shared CPU is slow).",
    )
    parser.add_argument(
        "--allow-decompose",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Override the planner's allow_decompose.",
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    out = asyncio.run(run(args))
    print(
        f"Open-loop plans, {out['planner_config']['max_steps']} steps max, "
        f"{out['planner_config']['max_attempts']} attempts, cues: {args.cues}, "
        f"{out['seconds']:.0f}s"
    )
    print_table(out["models"])
    for split, c in out.get("comparison", {}).items():
        ratio = "n/a" if c["achieved_ratio"] is None else f"{c['achieved_ratio']:.1f}x"
        print(
            f"{split}: achieved base {c['achieved'][0]:.0%} -> plan {c['achieved'][1]:.0%} "
            f"({ratio}); valid@1 {c['first_attempt_valid'][0]:.0%} -> "
            f"{c['first_attempt_valid'][1]:.0%}"
        )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
