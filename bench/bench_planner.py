"""Planner benchmark: validation, repair and cue enforcement on generated household goals.

    python bench/bench_planner.py [--goals 60] [--seed 0] [--real-plans 0] [--real-reminders 0]

Goals and reminders are generated from templates (objects, colours, containers, rooms;
forbid, require, prefer and context reminders), each with its ground truth. Reminders become
cues through the rule extractor (its accuracy against the ground truth is reported).

Plans come from a scripted model (``FunctionBackend``) that writes the correct plan and then
injects one fault drawn per goal: not JSON, JSON that is not a plan, an unknown skill, bad
arguments, a cycle, a dangling dependency, a forbidden object, a missing required step, a
required step in the wrong place (or no fault). Asked to repair, it fixes the fault with
probability 0.85, else makes another. Every plan the planner accepts is re-checked by an
independent oracle (a tiny household simulator written against the ground truth, not the
validator): invalid plans that would reach execution must be zero.

Baseline, same run: the same model answers executed without validation (what reaches
execution when cues are only in the prompt). ``--real-plans N`` / ``--real-reminders N``
also run N goals / reminders through the real embedded model (slow on a CPU).
Writes ``bench/results/bench_planner.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trellis.adapters import Cue, FunctionBackend, LLMRequest, rule_extract  # noqa: E402
from trellis.planners import (  # noqa: E402
    LLMPlanner,
    PlannerConfig,
    PlanRequest,
    SkillSpec,
)

RESULTS = ROOT / "bench" / "results" / "bench_planner.json"

OBJECTS = [
    ("plate", "plates"),
    ("cup", "cups"),
    ("mug", "mugs"),
    ("bowl", "bowls"),
    ("glass", "glasses"),
    ("fork", "forks"),
]
COLORS = ["blue", "red", "green", "white", "yellow"]
CONTAINERS = ["fridge", "cupboard", "dishwasher", "drawer", "cabinet"]
FOODS = ["milk", "apple", "cheese", "butter", "juice", "bread"]
ROOMS = ["kitchen", "dining room", "pantry", "living room"]


class Obj(BaseModel):
    obj: str


class Put(BaseModel):
    obj: str
    container: str


class Room(BaseModel):
    room: str


SKILLS = (
    SkillSpec("go_to", "Walk to a room.", Room, side_effects=False),
    SkillSpec("open", "Open a container.", Obj),
    SkillSpec("close", "Close a container.", Obj),
    SkillSpec("pick_up", "Pick up an object.", Obj),
    SkillSpec("put", "Put an object into a container or onto a surface.", Put),
)
ARG_NAMES = {s.name: set(s.args_model.model_fields) for s in SKILLS}


@dataclass
class Truth:
    """Ground truth of one reminder."""

    text: str
    polarity: str
    subject: str
    # forbid: words that must not appear in one step's args; require: the container to close
    forbidden: tuple[str, ...] = ()
    close: str | None = None


@dataclass
class Task:
    goal: str
    room: str
    container: str
    item: str  # what is moved, e.g. "milk" or "red cup"
    target: str  # where it goes
    reminders: list[Truth] = field(default_factory=list)
    options: list[str] = field(default_factory=list)  # colours of the object available


def generate(n: int, seed: int) -> list[Task]:
    rng = random.Random(seed)
    tasks: list[Task] = []
    for i in range(n):
        room = rng.choice(ROOMS)
        container = rng.choice(CONTAINERS)
        if i % 2 == 0:
            food = rng.choice(FOODS)
            task = Task(f"put the {food} in the {container}", room, container, food, container)
        else:
            obj, plural = rng.choice(OBJECTS)
            target = rng.choice(["table", "sink", "counter"])
            colors = rng.sample(COLORS, 2)
            task = Task(
                f"bring a {obj} from the {container} to the {target}",
                room,
                container,
                f"{colors[0]} {obj}",
                target,
                options=[f"{c} {obj}" for c in colors],
            )
            bad = colors[0]
            task.reminders.append(
                Truth(
                    rng.choice(
                        [
                            f"Never use the {bad} {plural}.",
                            f"Don't use the {bad} {plural}",
                            f"do not take the {bad} {plural}",
                        ]
                    ),
                    "forbid",
                    f"{bad} {plural}",
                    forbidden=(bad, obj),
                )
            )
        if rng.random() < 0.7:
            task.reminders.append(
                Truth(
                    rng.choice(
                        [
                            f"Close the {container} afterwards.",
                            f"always close the {container} afterwards",
                            f"close the {container} when you are done",
                        ]
                    ),
                    "require",
                    container,
                    close=container,
                )
            )
        extra = rng.random()
        if extra < 0.3:
            other = rng.choice([c for c in CONTAINERS if c != container])
            task.reminders.append(
                Truth(f"don't open the {other}", "forbid", other, forbidden=("open", other))
            )
        elif extra < 0.55:
            task.reminders.append(
                Truth(f"I prefer the {rng.choice(COLORS)} mugs", "prefer", "mugs")
            )
        elif extra < 0.75:
            task.reminders.append(
                Truth(f"Remember that the {rng.choice(FOODS)} is in the {container}", "inform", "x")
            )
        tasks.append(task)
    return tasks


def correct_plan(task: Task) -> list[dict[str, Any]]:
    item = task.item
    if task.options:  # pick an allowed colour
        banned = {t.forbidden[0] for t in task.reminders if t.polarity == "forbid" and t.forbidden}
        item = next(o for o in task.options if o.split()[0] not in banned)
    steps = [
        {
            "id": "s1",
            "title": f"go to the {task.room}",
            "skill": "go_to",
            "args": {"room": task.room},
            "depends_on": [],
        },
        {
            "id": "s2",
            "title": f"open the {task.container}",
            "skill": "open",
            "args": {"obj": task.container},
            "depends_on": ["s1"],
        },
    ]
    if task.options:
        steps += [
            {
                "id": "s3",
                "title": f"take the {item}",
                "skill": "pick_up",
                "args": {"obj": item},
                "depends_on": ["s2"],
            },
            {
                "id": "s4",
                "title": f"close the {task.container}",
                "skill": "close",
                "args": {"obj": task.container},
                "depends_on": ["s3"],
            },
            {
                "id": "s5",
                "title": f"put it on the {task.target}",
                "skill": "put",
                "args": {"obj": item, "container": task.target},
                "depends_on": ["s4"],
            },
        ]
    else:
        steps += [
            {
                "id": "s3",
                "title": f"take the {item}",
                "skill": "pick_up",
                "args": {"obj": item},
                "depends_on": ["s1"],
            },
            {
                "id": "s4",
                "title": f"put the {item} in",
                "skill": "put",
                "args": {"obj": item, "container": task.container},
                "depends_on": ["s2", "s3"],
            },
            {
                "id": "s5",
                "title": f"close the {task.container}",
                "skill": "close",
                "args": {"obj": task.container},
                "depends_on": ["s4"],
            },
        ]
    return steps


STRUCTURAL = ["not_json", "not_plan", "unknown_skill", "bad_args", "cycle", "dangling"]
CUE_FAULTS = ["ignore_forbid", "forget_close", "close_too_early"]


def applicable_faults(task: Task) -> list[str]:
    faults = list(STRUCTURAL)
    if task.options and any(
        t.polarity == "forbid" and t.forbidden[0] in COLORS for t in task.reminders
    ):
        faults.append("ignore_forbid")
    if any(t.close for t in task.reminders):
        faults += ["forget_close", "close_too_early"]
    return faults


def inject(task: Task, fault: str) -> str:
    steps = [dict(s) for s in correct_plan(task)]
    close_index = next(i for i, s in enumerate(steps) if s["skill"] == "close")
    if fault == "not_json":
        return "First I go to the " + task.room + ", then I open the " + task.container
    if fault == "not_plan":
        return json.dumps({"plan": [s["title"] for s in steps]})
    if fault == "unknown_skill":
        steps[2]["skill"] = "grab"
    elif fault == "bad_args":
        steps[2]["args"] = {"item": steps[2]["args"]["obj"]}
    elif fault == "cycle":
        steps[0]["depends_on"] = [steps[-1]["id"]]
    elif fault == "dangling":
        steps[1]["depends_on"] = ["s9"]
    elif fault == "ignore_forbid":
        steps[2]["args"] = {"obj": task.item}
        steps[2]["title"] = f"pick up the {task.item}"
        if steps[-1]["skill"] == "put":
            steps[-1]["args"] = {"obj": task.item, "container": task.target}
    elif fault == "forget_close":
        removed = steps.pop(close_index)["id"]
        for s in steps:
            s["depends_on"] = [d for d in s["depends_on"] if d != removed] or (
                ["s2"] if s["id"] != "s1" and s["id"] != "s2" else s["depends_on"]
            )
    elif fault == "close_too_early":
        close = steps.pop(close_index)
        close["depends_on"] = ["s1"]
        for s in steps:
            s["depends_on"] = [d for d in s["depends_on"] if d != close["id"]] or (
                ["s2"] if s["id"] not in ("s1", "s2") else []
            )
        steps.insert(1, close)
        steps[2]["depends_on"] = ["s1"]
    return json.dumps({"steps": steps})


# --- the oracle: an independent simulator over the ground truth -------------------------


def oracle(raw: Any, task: Task) -> tuple[bool, bool]:
    """(structurally executable, obeys every forbid/require reminder) for a raw plan value."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return False, True
    if hasattr(raw, "model_dump"):
        raw = raw.model_dump()
    steps = raw.get("steps") if isinstance(raw, dict) else None
    if not isinstance(steps, list) or not steps:
        return False, True
    ids = [s.get("id") for s in steps if isinstance(s, dict)]
    if len(ids) != len(steps) or len(set(ids)) != len(ids):
        return False, True
    for s in steps:
        if s.get("skill") not in ARG_NAMES or set(s.get("args") or {}) != ARG_NAMES[s["skill"]]:
            return False, True
        if any(d not in ids or d == s["id"] for d in s.get("depends_on", [])):
            return False, True
    # Execute in list order honouring dependencies; a cycle never finishes.
    done: list[str] = []
    pending = list(steps)
    while pending:
        ready = [s for s in pending if all(d in done for d in s.get("depends_on", []))]
        if not ready:
            return False, True
        done.append(ready[0]["id"])
        pending.remove(ready[0])
    order = {sid: i for i, sid in enumerate(done)}
    by_id = {s["id"]: s for s in steps}
    obeys = True
    for truth in task.reminders:
        if truth.polarity == "forbid" and truth.forbidden:
            a, b = truth.forbidden
            for s in steps:
                text = " ".join([s["skill"], *[str(v) for v in s["args"].values()]]).lower()
                if a in text and b in text:
                    obeys = False
        if truth.polarity == "require" and truth.close:
            uses = [
                s["id"]
                for s in steps
                if truth.close in json.dumps(s["args"]) and s["skill"] != "close"
            ]
            closes = [
                s["id"]
                for s in steps
                if s["skill"] == "close" and by_id[s["id"]]["args"].get("obj") == truth.close
            ]
            if uses and not any(all(order[c] > order[u] for u in uses) for c in closes):
                obeys = False
    return True, obeys


def truth_matches(cue: Cue, truth: Truth) -> bool:
    return cue.polarity == truth.polarity and (
        truth.polarity == "inform" or truth.subject in cue.subject or cue.subject in truth.subject
    )


async def run_scripted(tasks: list[Task], seed: int, config: PlannerConfig) -> dict[str, Any]:
    rng = random.Random(seed + 1)
    by_goal = {t.goal: t for t in tasks}
    faults_for: dict[str, str] = {}
    for t in tasks:
        options = applicable_faults(t)
        # About one goal in four is answered right first time.
        faults_for[t.goal] = "none" if rng.random() < 0.25 else rng.choice(options)

    def model(request: LLMRequest) -> str:
        prompt = request.prompt or ""
        goal_line = [line for line in prompt.splitlines() if line.startswith("Goal: ")][-1]
        task = by_goal[goal_line[len("Goal: ") :]]
        fault = faults_for[task.goal]
        if "\nError: " in prompt:
            if rng.random() < 0.85:
                return json.dumps({"steps": correct_plan(task)})
            return inject(task, rng.choice(applicable_faults(task)))
        return json.dumps({"steps": correct_plan(task)}) if fault == "none" else inject(task, fault)

    planner = LLMPlanner(FunctionBackend(model, name="scripted-model"), config=config)
    rows: list[dict[str, Any]] = []
    extraction_ok = extraction_total = 0
    for task in tasks:
        cues: list[Cue] = []
        for truth in task.reminders:
            found = rule_extract(truth.text)
            extraction_total += 1
            extraction_ok += int(len(found) == 1 and truth_matches(found[0], truth))
            cues += found
        started = time.perf_counter()
        outcome = await planner.plan(PlanRequest(goal=task.goal, skills=SKILLS, cues=tuple(cues)))
        elapsed = time.perf_counter() - started
        first_raw = outcome.raw_outputs[0]
        first_struct, first_obeys = oracle(first_raw, task)
        first_flagged_cue = bool(outcome.errors) and "breaks the rule" in outcome.errors[0]
        accepted_struct, accepted_obeys = (
            oracle(outcome.plan, task) if outcome.plan else (True, True)
        )
        rows.append(
            {
                "goal": task.goal,
                "fault": faults_for[task.goal],
                "ok": outcome.ok,
                "attempts": outcome.attempts,
                "first_valid": outcome.first_attempt_valid,
                "first_structural": first_struct,
                "first_obeys": first_obeys,
                "first_flagged_cue": first_flagged_cue,
                "accepted_invalid": bool(outcome.plan) and not (accepted_struct and accepted_obeys),
                "error": outcome.error,
                "seconds": elapsed,
            }
        )
    n = len(rows)
    violating = [r for r in rows if r["first_structural"] and not r["first_obeys"]]
    # A violation counts as caught when the validator's feedback names a broken rule.
    caught = [r for r in violating if r["first_flagged_cue"]]
    false_alarms = [
        r for r in rows if r["first_structural"] and r["first_obeys"] and r["first_flagged_cue"]
    ]
    baseline_invalid = [r for r in rows if not (r["first_structural"] and r["first_obeys"])]
    return {
        "goals": n,
        "first_attempt_valid": sum(r["first_valid"] for r in rows) / n,
        "valid_after_repair": sum(r["ok"] for r in rows) / n,
        "mean_attempts": sum(r["attempts"] for r in rows) / n,
        "cue_violations": len(violating),
        "cue_violations_caught": len(caught),
        "cue_violation_catch_rate": len(caught) / len(violating) if violating else 1.0,
        "cue_false_alarms": len(false_alarms),
        # Validator verdict on first answers == the independent oracle's verdict.
        "validator_oracle_agreement": sum(
            r["first_valid"] == (r["first_structural"] and r["first_obeys"]) for r in rows
        )
        / n,
        "invalid_plans_reaching_execution": sum(r["accepted_invalid"] for r in rows),
        "baseline_invalid_reaching_execution": len(baseline_invalid),
        "baseline_cue_violations_reaching_execution": len(violating),
        "rule_extraction_accuracy": extraction_ok / extraction_total if extraction_total else 1.0,
        "reminders": extraction_total,
        "planning_ms_mean": 1000 * sum(r["seconds"] for r in rows) / n,
        "rows": rows,
    }


async def run_real(
    tasks: list[Task], n_plans: int, n_reminders: int, *, max_tokens: int, timeout_s: float
) -> dict[str, Any]:
    from trellis.adapters import EmbeddedBackend, ReminderAdapter, ReminderConfig

    backend = EmbeddedBackend()
    await backend.start()
    out: dict[str, Any] = {"backend": backend.name}
    if n_reminders:
        adapter = ReminderAdapter(backend, config=ReminderConfig(mode="model", max_attempts=1))
        truths = [t for task in tasks for t in task.reminders][:n_reminders]
        model_ok = rules_ok = agree = 0
        rows: list[dict[str, Any]] = []
        for truth in truths:
            result = await adapter.extract(truth.text)
            print(f"  real reminder {truth.text!r}: {result.raw_outputs}", flush=True)
            m = bool(result.model_cues) and truth_matches(result.model_cues[0], truth)
            r = len(result.rule_cues) == 1 and truth_matches(result.rule_cues[0], truth)
            model_ok += m
            rules_ok += r
            agree += bool(result.agreement)
            rows.append(
                {
                    "reminder": truth.text,
                    "model": [c.model_dump(mode="json") for c in result.model_cues],
                    "raw": result.raw_outputs,
                    "model_correct": m,
                    "rules_correct": r,
                }
            )
        out["reminders"] = {
            "reminders": len(truths),
            "model_accuracy": model_ok / len(truths),
            "rules_accuracy": rules_ok / len(truths),
            "model_rules_agreement": agree / len(truths),
            "rows": rows,
        }
    if n_plans:
        planner = LLMPlanner(
            backend,
            config=PlannerConfig(
                max_attempts=2, max_tokens=max_tokens, max_steps=6, timeout_s=timeout_s
            ),
        )
        rows = []
        for task in tasks[:n_plans]:
            cues = [c for t in task.reminders for c in rule_extract(t.text)]
            outcome = await planner.plan(
                PlanRequest(goal=task.goal, skills=SKILLS, cues=tuple(cues))
            )
            print(
                f"  real plan {task.goal!r}: ok={outcome.ok} attempts={outcome.attempts} "
                f"{outcome.duration_s:.0f}s",
                flush=True,
            )
            accepted_ok = oracle(outcome.plan, task) if outcome.plan else (True, True)
            rows.append(
                {
                    "goal": task.goal,
                    "ok": outcome.ok,
                    "first_valid": outcome.first_attempt_valid,
                    "attempts": outcome.attempts,
                    "errors": outcome.errors,
                    "accepted_invalid": bool(outcome.plan) and not all(accepted_ok),
                    "tokens": sum(r.completion_tokens for r in outcome.llm_results),
                    "seconds": outcome.duration_s,
                    "raw": outcome.raw_outputs,
                }
            )
        out["plans"] = {
            "goals": len(rows),
            "first_attempt_valid": sum(r["first_valid"] for r in rows) / len(rows),
            "valid_after_repair": sum(r["ok"] for r in rows) / len(rows),
            "invalid_plans_reaching_execution": sum(r["accepted_invalid"] for r in rows),
            "rows": rows,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--goals", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-plans", type=int, default=0)
    parser.add_argument("--real-reminders", type=int, default=0)
    parser.add_argument("--real-max-tokens", type=int, default=160)
    parser.add_argument("--real-timeout", type=float, default=900.0)
    args = parser.parse_args()
    tasks = generate(args.goals, args.seed)
    config = PlannerConfig(max_attempts=3)
    scripted = asyncio.run(run_scripted(tasks, args.seed, config))
    real = (
        asyncio.run(
            run_real(
                tasks,
                args.real_plans,
                args.real_reminders,
                max_tokens=args.real_max_tokens,
                timeout_s=args.real_timeout,
            )
        )
        if (args.real_plans or args.real_reminders)
        else None
    )
    s = scripted
    print(
        f"Planner benchmark: {s['goals']} generated household goals, {s['reminders']} reminders, scripted faulty model, max {config.max_attempts} attempts"
    )
    print(f"{'measure':<48}{'validated planner':>20}{'baseline (no validator)':>26}")
    print(
        f"{'plans valid at first attempt':<48}{s['first_attempt_valid']:>20.1%}{s['first_attempt_valid']:>26.1%}"
    )
    print(f"{'plans valid after repair':<48}{s['valid_after_repair']:>20.1%}{'n/a':>26}")
    print(f"{'mean model calls per goal':<48}{s['mean_attempts']:>20.2f}{1:>26}")
    print(
        f"{'cue violations (first answers)':<48}{s['cue_violations']:>20}{s['cue_violations']:>26}"
    )
    print(f"{'  caught by the validator':<48}{s['cue_violation_catch_rate']:>20.1%}{'0.0%':>26}")
    print(
        f"{'validator agrees with the oracle (first answers)':<48}"
        f"{s['validator_oracle_agreement']:>20.1%}{'n/a':>26}"
    )
    print(f"{'  false alarms':<48}{s['cue_false_alarms']:>20}{'n/a':>26}")
    print(
        f"{'invalid plans reaching execution':<48}{s['invalid_plans_reaching_execution']:>20}{s['baseline_invalid_reaching_execution']:>26}"
    )
    print(
        f"{'rule extractor accuracy (polarity+subject)':<48}{s['rule_extraction_accuracy']:>20.1%}{'':>26}"
    )
    print(
        f"{'planning time per goal (ms, scripted model)':<48}{s['planning_ms_mean']:>20.2f}{'':>26}"
    )
    if real:
        if "plans" in real:
            p = real["plans"]
            print(
                f"real model ({real['backend']}), {p['goals']} goals: first-attempt valid {p['first_attempt_valid']:.0%}, "
                f"after repair {p['valid_after_repair']:.0%}, invalid reaching execution {p['invalid_plans_reaching_execution']}"
            )
        if "reminders" in real:
            r = real["reminders"]
            print(
                f"real model, {r['reminders']} reminders: model extraction {r['model_accuracy']:.0%}, "
                f"rules {r['rules_accuracy']:.0%}, agreement {r['model_rules_agreement']:.0%}"
            )
    targets = {
        "all_cue_violations_caught": s["cue_violation_catch_rate"] == 1.0,
        "zero_invalid_plans_reach_execution": s["invalid_plans_reaching_execution"] == 0
        and (real is None or real.get("plans", {}).get("invalid_plans_reaching_execution", 0) == 0),
    }
    print("targets:", ", ".join(f"{k}={'met' if v else 'MISSED'}" for k, v in targets.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "bench_planner",
                "command": " ".join(["python", "bench/bench_planner.py", *sys.argv[1:]]),
                "machine": platform.platform(),
                "python": platform.python_version(),
                "config": config.model_dump(),
                "scripted": s,
                "real": real,
                "targets": targets,
            },
            indent=2,
            default=str,
        )
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
