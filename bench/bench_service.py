"""Service throughput: tasks/s and p95 step latency by task loops and processes, on PostgreSQL.

Every configuration runs real ``trellis worker`` processes (``python -m trellis.agent.service._cli
worker``) against one scratch PostgreSQL database. Tasks use the ``demo`` profile: a
scripted planner and a scripted model that answers after 50 ms, and every step asks the
model for its call (2 steps a task: ``demo_wait``, then the side-effecting ``demo_record``).
The workers are warmed up first (every process has finished a task, so its agent is built),
then N tasks are queued in one transaction and timed until the last one is done.

- throughput: N / (last finish - queueing time);
- step latency: route decision -> skill finished, from the service event log (p50, p95).

The baseline, in the same run, is 1 process with 1 loop. Target: 4 loops >= 3x its
throughput.

    .venv/bin/python bench/bench_service.py                 # loops 1, 2, 4 x processes 1, 2
    .venv/bin/python bench/bench_service.py --quick         # fewer tasks per configuration
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = Path(__file__).parent / "results" / "bench_service.json"
ADMIN_URL = os.environ.get(
    "TRELLIS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TOKEN = "bench-token-0123456789abcdef"


def _scratch_database() -> tuple[str, Any]:
    admin_url = make_url(ADMIN_URL)
    name = f"trellis_service_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()

    return url, drop


def _reset(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _enqueue(url: str, goals: list[str]) -> list[str]:
    from trellis.agent.service._queue import TaskQueue
    from trellis.memory import TaskStore, make_engine

    engine = make_engine(url)
    store, queue = TaskStore(engine), TaskQueue(engine)
    ids = []
    for goal in goals:
        record = store.create_task(goal, user_id="bench", metadata={"reminders": []})
        queue.enqueue(record.id, user_id="bench", goal=goal, profile="demo")
        ids.append(record.id)
    engine.dispose()
    return ids


def _migrate(url: str) -> None:
    from trellis.agent.service._runtime import migrate_locked
    from trellis.memory import make_engine

    engine = make_engine(url)
    migrate_locked(engine)
    engine.dispose()


def _wait_done(url: str, ids: list[str], timeout: float) -> float:
    engine = create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                left = connection.execute(
                    text(
                        "SELECT count(*) FROM service_tasks WHERE id = ANY(:ids) "
                        "AND state NOT IN ('done', 'failed', 'cancelled')"
                    ),
                    {"ids": ids},
                ).scalar_one()
            if left == 0:
                return time.monotonic()
            time.sleep(0.02)
    finally:
        engine.dispose()
    raise RuntimeError(f"{len(ids)} tasks did not finish within {timeout} s")


def _step_latencies(url: str, ids: list[str]) -> list[float]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT type, payload FROM service_events WHERE task_id = ANY(:ids) "
                "AND type IN ('route', 'skill_finished') ORDER BY id"
            ),
            {"ids": ids},
        ).all()
        failed = connection.execute(
            text("SELECT count(*) FROM service_tasks WHERE id = ANY(:ids) AND state <> 'done'"),
            {"ids": ids},
        ).scalar_one()
    engine.dispose()
    if failed:
        raise RuntimeError(f"{failed} benchmark tasks did not succeed")
    started: dict[tuple[str, int], float] = {}
    latencies = []
    for kind, payload in rows:
        data = payload if isinstance(payload, dict) else json.loads(payload)
        key = (data["task_id"], data["node_id"])
        if kind == "route":
            started[key] = data["at"]
        elif key in started:
            latencies.append(data["at"] - started.pop(key))
    return latencies


def _pids(effects: Path) -> set[int]:
    if not effects.exists():
        return set()
    return {json.loads(line)["pid"] for line in effects.read_text().splitlines()}


def run_config(url: str, processes: int, loops: int, tasks: int, delay: float) -> dict[str, Any]:
    _reset(url)
    _migrate(url)
    home = Path(tempfile.mkdtemp(prefix="trellis-bench-"))
    effects = home / "effects" / "effects.jsonl"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TRELLIS_HOME": str(home),
        "TRELLIS_TOKENS": json.dumps({TOKEN: "bench"}),
        "TRELLIS_POLL_S": "0.05",
        "TRELLIS_LOG_LEVEL": "WARNING",
        "TRELLIS_DEMO__STEPS": "2",
        "TRELLIS_DEMO__LLM_DELAY_S": str(delay),
        "TRELLIS_DEMO__EFFECTS_DIR": str(effects.parent),
    }
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trellis.agent.service._cli",
                "worker",
                "-w",
                str(loops),
                "--db",
                url,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(home / f"worker{i}.log", "ab"),  # noqa: SIM115
        )
        for i in range(processes)
    ]
    try:
        # Warm up until every process has finished a task (imports done, agent built).
        deadline = time.monotonic() + 300
        while len(_pids(effects)) < processes:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not warm up; see " + str(home))
            warm = _enqueue(url, [f"warm-up {i}" for i in range(processes * loops)])
            _wait_done(url, warm, 300)
        ids = _enqueue(url, [f"bench chore {i}" for i in range(tasks)])
        queued = time.monotonic()
        finished = _wait_done(url, ids, 900)
        latencies = _step_latencies(url, ids)
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
        for process in workers:
            process.wait(timeout=60)
    elapsed = finished - queued
    quantiles = statistics.quantiles(latencies, n=20)
    return {
        "processes": processes,
        "loops_per_process": loops,
        "tasks": tasks,
        "seconds": round(elapsed, 3),
        "tasks_per_s": round(tasks / elapsed, 3),
        "step_latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "step_latency_p95_ms": round(quantiles[18] * 1000, 1),
        "steps": len(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks per configuration")
    parser.add_argument("--loops", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--delay", type=float, default=0.05, help="scripted model latency (s)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the scratch database and the workers are cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    per_loop = 6 if args.quick else 12
    url, drop = _scratch_database()
    rows = []
    try:
        for processes in args.processes:
            for loops in args.loops:
                tasks = per_loop * max(2, processes * loops)
                row = run_config(url, processes, loops, tasks, args.delay)
                rows.append(row)
                print(
                    f"processes={processes} loops={loops}: {row['tasks_per_s']:.2f} tasks/s, "
                    f"p95 step {row['step_latency_p95_ms']:.0f} ms",
                    flush=True,
                )
    finally:
        drop()
    baseline = next(
        (r for r in rows if r["processes"] == 1 and r["loops_per_process"] == 1), rows[0]
    )
    for row in rows:
        row["speedup_vs_1x1"] = round(row["tasks_per_s"] / baseline["tasks_per_s"], 2)
    four = next((r for r in rows if r["processes"] == 1 and r["loops_per_process"] == 4), None)
    target_met = four is not None and four["speedup_vs_1x1"] >= 3.0
    print()
    print(
        f"{'procs':>5} {'loops':>5} {'tasks':>5} {'tasks/s':>8} {'speedup':>8} "
        f"{'p50 ms':>7} {'p95 ms':>7}"
    )
    for r in rows:
        print(
            f"{r['processes']:>5} {r['loops_per_process']:>5} {r['tasks']:>5} "
            f"{r['tasks_per_s']:>8.2f} {r['speedup_vs_1x1']:>7.2f}x "
            f"{r['step_latency_p50_ms']:>7.0f} {r['step_latency_p95_ms']:>7.0f}"
        )
    print(f"target (1 process, 4 loops >= 3x of 1 loop): {'met' if target_met else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "service",
                "model_delay_s": args.delay,
                "steps_per_task": 2,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "load_average": os.getloadavg(),
                "rows": rows,
                "target_4_loops_3x": target_met,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
