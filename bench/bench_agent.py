"""Agent loop benchmark.

Overhead mode (default): per-step runtime overhead of the Trellis loop (everything except
model and skill time: a scripted model that answers instantly and no-op skills) on SQLite
and PostgreSQL, beside a bare LangGraph graph with the same checkpointer and durability,
measured in the same run. The bare graph walks the loop's stages per step (select, route,
act, approve, execute, observe) doing nothing, so the ratio is what the Task Memory Tree,
the exactly-once records and the events add. Trellis runs a step whose call comes from the
plan as one superstep (one checkpoint), so a second bare graph of one node per step is
reported too: the stricter comparison. Target: at most 1.5x.

``--twc N``: success rate and steps on N TextWorldExpress twc dev-fold games with the
embedded default model (the baseline later work raises).

    .venv/bin/python bench/bench_agent.py [--steps 40] [--repeats 3] [--no-postgres]
    .venv/bin/python bench/bench_agent.py --twc 20 --max-steps 12

Prints a table and writes ``bench/results/bench_agent.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

from langgraph.graph import END, START, StateGraph
from sqlalchemy import create_engine, text
from sqlalchemy import event as sa_event
from trellis_twc import TwcConfig

from trellis.adapters import FunctionBackend
from trellis.agent import Agent, AgentConfig, SkillFinished, TaskFinished, skill
from trellis.agent.runtime._checkpoint import open_checkpointer
from trellis.memory import make_engine, run_sync
from trellis.planners import PlannerConfig, ScriptedPlanner

RESULTS = Path(__file__).resolve().parent / "results" / "bench_agent.json"
POSTGRES_ADMIN = os.environ.get(
    "TRELLIS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SHORT = 5
STAGES = ("select", "route", "act", "approve", "execute", "observe")


@skill
def noop(i: int) -> int:
    """Does nothing (side effects declared, so the exactly-once record is written)."""
    return i


class BareState(TypedDict, total=False):
    i: int
    n: int


def bare_graph(checkpointer: Any, stages: tuple[str, ...] = STAGES) -> Any:
    graph = StateGraph(BareState)
    for name in stages:
        graph.add_node(name, lambda state: {})
    graph.add_node("count", lambda state: {"i": state.get("i", 0) + 1})
    graph.add_edge(START, "select")
    for a, b in itertools.pairwise(stages):
        graph.add_edge(a, b)
    graph.add_edge(stages[-1], "count")
    graph.add_conditional_edges(
        "count", lambda s: "select" if s["i"] < s["n"] else END, {"select": "select", END: END}
    )
    return graph.compile(checkpointer=checkpointer)


def run_bare(url: str, steps: int, stages: tuple[str, ...] = STAGES) -> tuple[float, float]:
    """Seconds per step of the bare graph (same checkpointer, sync durability): wall time
    and this process's CPU time."""
    engine = make_engine(url)
    handle = open_checkpointer(engine)
    graph = bare_graph(handle.saver, stages)
    config: Any = {"configurable": {"thread_id": uuid.uuid4().hex}, "recursion_limit": 10_000}
    started, cpu = time.perf_counter(), time.process_time()
    for _ in graph.stream({"i": 0, "n": steps}, config, durability="sync"):
        pass
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    handle.close()
    engine.dispose()
    return elapsed / steps, cpu / steps


def run_trellis(url: str, steps: int) -> tuple[float, dict[str, float]]:
    """Seconds per step of one Trellis task (setup included), minus skill and model time."""
    plan = {
        "steps": [
            {
                "id": f"s{i}",
                "title": f"step {i}",
                "skill": "noop",
                "args": {"i": i},
                "depends_on": [f"s{i - 1}"] if i else [],
            }
            for i in range(steps)
        ]
    }
    agent = Agent(
        config=AgentConfig(database_url=url, max_steps=steps + 5),
        skills=[noop],
        backend=FunctionBackend(lambda request: "{}"),
        planner=ScriptedPlanner({"bench": plan}, config=PlannerConfig(max_steps=steps)),
    )
    skill_s = 0.0
    finished: TaskFinished | None = None
    # The Task Memory Tree's SQL: statements and commits on the agent's engine (the
    # checkpointer adds one commit per superstep on its own connection).
    counts = {"statements": 0, "commits": 0}

    def on_statement(*_args: Any) -> None:
        counts["statements"] += 1

    def on_commit(*_args: Any) -> None:
        counts["commits"] += 1

    sa_event.listen(agent.store.engine, "before_cursor_execute", on_statement)
    sa_event.listen(agent.store.engine, "commit", on_commit)

    async def go() -> None:
        nonlocal skill_s, finished
        async for event in agent.stream("bench"):
            if isinstance(event, SkillFinished):
                skill_s += event.duration_s
            if isinstance(event, TaskFinished):
                finished = event

    started, cpu = time.perf_counter(), time.process_time()
    run_sync(go())
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    agent.close()
    if finished is None or not finished.success or finished.steps != steps:
        raise RuntimeError(f"benchmark run did not finish as expected: {finished}")
    # CPU time keeps the (tiny) skill time in: wall time on a shared machine is the noisy one.
    return (elapsed - skill_s) / steps, {
        "skill_s": skill_s,
        "total_s": elapsed,
        "cpu_s": cpu,
        "statements": counts["statements"],
        "commits": counts["commits"],
    }


def postgres_url() -> str | None:
    name = f"trellis_bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as exc:  # no server: report SQLite only
        print(f"PostgreSQL unavailable ({exc}); skipping it", file=sys.stderr)
        return None
    return POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name


def drop_postgres(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        targets = [("sqlite", f"sqlite:///{folder}/bench.db")]
        pg = None if args.no_postgres else postgres_url()
        if pg is not None:
            targets.append(("postgres", pg))
        try:
            for label, url in targets:
                run_trellis(url, 3)  # warm up: migrations, imports, first connections
                run_bare(url, 3)
                n, short = args.steps, SHORT
                trellis, bare, trellis_whole, bare_whole = [], [], [], []
                trellis_cpu, bare_cpu, one_node, one_node_cpu = [], [], [], []
                statements: list[float] = []
                commits: list[float] = []
                for _ in range(args.repeats):
                    # Marginal cost of a step: (T(n) - T(short)) / (n - short) removes the
                    # per-task work (task creation, planning, finishing) from both sides.
                    t_per, t_info = run_trellis(url, n)
                    t_long, tc_long = t_per * n, t_info["cpu_s"]
                    long_info = t_info
                    t_per, t_info = run_trellis(url, short)
                    t_short, tc_short = t_per * short, t_info["cpu_s"]
                    for key, into in (("statements", statements), ("commits", commits)):
                        into.append((long_info[key] - t_info[key]) / (n - short))
                    b_per, bc_per = run_bare(url, n)
                    b_long, bc_long = b_per * n, bc_per * n
                    b_per, bc_per = run_bare(url, short)
                    b_short, bc_short = b_per * short, bc_per * short
                    # A bare graph of one node per step: as few supersteps (checkpoints) as
                    # Trellis takes for a step whose call comes from the plan.
                    o_per, oc_per = run_bare(url, n, ("select",))
                    o_long, oc_long = o_per * n, oc_per * n
                    o_per, oc_per = run_bare(url, short, ("select",))
                    one_node.append((o_long - o_per * short) / (n - short))
                    one_node_cpu.append((oc_long - oc_per * short) / (n - short))
                    trellis.append((t_long - t_short) / (n - short))
                    bare.append((b_long - b_short) / (n - short))
                    trellis_cpu.append((tc_long - tc_short) / (n - short))
                    bare_cpu.append((bc_long - bc_short) / (n - short))
                    trellis_whole.append(t_long / n)
                    bare_whole.append(b_long / n)
                t, b = statistics.median(trellis), statistics.median(bare)
                tc, bc = statistics.median(trellis_cpu), statistics.median(bare_cpu)
                tw, bw = statistics.median(trellis_whole), statistics.median(bare_whole)
                rows[label] = {
                    "trellis_ms_per_step": round(t * 1000, 2),
                    "bare_langgraph_ms_per_step": round(b * 1000, 2),
                    "ratio": round(t / b, 2),
                    # This process's CPU time (the database server's own is not counted).
                    "trellis_cpu_ms_per_step": round(tc * 1000, 2),
                    "bare_cpu_ms_per_step": round(bc * 1000, 2),
                    "cpu_ratio": round(tc / bc, 2),
                    "bare_one_node_ms_per_step": round(statistics.median(one_node) * 1000, 2),
                    "ratio_vs_one_node": round(t / statistics.median(one_node), 2),
                    "cpu_ratio_vs_one_node": round(tc / statistics.median(one_node_cpu), 2),
                    "trellis_ms_per_step_with_task_setup": round(tw * 1000, 2),
                    "bare_ms_per_step_with_setup": round(bw * 1000, 2),
                    "tree_statements_per_step": round(statistics.median(statements), 2),
                    "tree_commits_per_step": round(statistics.median(commits), 2),
                    "checkpoint_commits_per_step": 1,
                    "steps": n,
                    "repeats": args.repeats,
                    "load_average_1m": round(os.getloadavg()[0], 1),
                }
        finally:
            if pg is not None:
                drop_postgres(pg)
    print(
        f"{'database':10} {'trellis ms/step':>16} {'bare ms/step':>13} {'ratio':>6} "
        f"{'trellis cpu ms':>15} {'bare cpu ms':>12} {'cpu ratio':>10} "
        f"{'1-node bare ms':>15} {'ratio':>6} {'SQL/step':>9} {'commits/step':>13}"
    )
    for label, row in rows.items():
        print(
            f"{label:10} {row['trellis_ms_per_step']:16.2f} "
            f"{row['bare_langgraph_ms_per_step']:13.2f} {row['ratio']:6.2f} "
            f"{row['trellis_cpu_ms_per_step']:15.2f} {row['bare_cpu_ms_per_step']:12.2f} "
            f"{row['cpu_ratio']:10.2f} {row['bare_one_node_ms_per_step']:15.2f} "
            f"{row['ratio_vs_one_node']:6.2f} {row['tree_statements_per_step']:9.1f} "
            f"{row['tree_commits_per_step']:13.1f}"
        )
    return {"overhead": rows, "target_ratio": 1.5, "durability": "sync"}


def _twc_summary(results: list[dict[str, Any]], max_steps: int) -> dict[str, Any]:
    wins = sum(r["success"] for r in results)
    return {
        "games": len(results),
        "fold": "dev",
        "success_rate": wins / max(1, len(results)),
        "mean_steps": statistics.mean(r["steps"] for r in results) if results else 0,
        "max_steps": max_steps,
        "model": "embedded default (gemma-3-270m base, no adapter)",
        "games_detail": results,
    }


def _save(update: dict[str, Any]) -> None:
    report = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    report.update(update)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


def twc(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        agent = Agent(
            config=AgentConfig(database_url=f"sqlite:///{folder}/twc.db", max_steps=args.max_steps)
        )
        for seed in range(1, args.twc + 1):
            started = time.perf_counter()
            result = agent.run(env=TwcConfig(seed=seed, fold="dev"))
            row = {
                "seed": seed,
                "success": result.success,
                "steps": result.steps,
                "outcome": result.outcome,
                "completion_tokens": result.completion_tokens,
                "seconds": round(time.perf_counter() - started, 1),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
            # Saved after every game: a long run that is stopped still reports what it did.
            _save({"twc": _twc_summary(results, args.max_steps)})
        agent.close()
    summary = _twc_summary(results, args.max_steps)
    wins = sum(r["success"] for r in results)
    print(f"twc dev: {wins}/{len(results)} solved, mean steps {summary['mean_steps']:.1f}")
    return {"twc": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="Steps per overhead run.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per measurement.")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only.")
    parser.add_argument("--twc", type=int, default=0, help="Also play N twc dev games.")
    parser.add_argument("--max-steps", type=int, default=12, help="Step budget per twc game.")
    parser.add_argument("--twc-only", action="store_true", help="Skip the overhead part.")
    args = parser.parse_args()
    if not args.twc_only:
        _save(overhead(args))
    if args.twc:
        _save(twc(args))
    _save({"python": sys.version.split()[0]})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
