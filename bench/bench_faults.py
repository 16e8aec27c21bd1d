"""Fault drills at scale: process kills, garbage model output, a database blip under the
service, timed-out payments and paused workers; each prints runs, finished, stuck, lost and
duplicated, and the JSON goes to ``bench/results/bench_faults.json``.

- kills: a task of eight side-effecting appends runs in a subprocess that is SIGKILLed at
  progress points (right after a write, the dangerous window) and resumed, on SQLite and
  PostgreSQL; lost = a planned line neither written nor retried, duplicated = a line twice.
- garbage: tasks whose scripted model answers one stage (remind, plan or act) with generated
  garbage (random text, JSON nested thousands deep, 5,000-digit integers, NaN, NUL and
  surrogate escapes, megabyte names); uncaught = anything but a Trellis error escaped,
  stuck = the task was left running.
- blip: 100 ``demo`` tasks through a worker pool on PostgreSQL while every connection is cut
  several times and the database refuses connections for longer than runs wait; every task
  must finish once the database is back, without restarting the pool.
- timeouts: a payment skill (timeout 0.3 s, sleeps 0.6 s, then pays) under a planner that
  retries definite failures; duplicated = a task that paid twice.
- lease: a worker paused (SIGSTOP) past its lease, another takes over and finishes, the first
  wakes; duplicated = a second ``task_finished`` or side effect.

    .venv/bin/python bench/bench_faults.py           # >=100 kills, 300 garbage tasks, 100 blip tasks
    .venv/bin/python bench/bench_faults.py --quick   # a smoke run of every drill
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trellis.adapters import (  # noqa: E402
    FunctionBackend,
    LLMRequest,
    ReminderAdapter,
    ReminderConfig,
)
from trellis.agent import Agent, AgentConfig, SkillContext, skill  # noqa: E402
from trellis.agent.service import QueueState, ServiceSettings, TaskQueue  # noqa: E402
from trellis.agent.service._queue_log import EventLog  # noqa: E402
from trellis.agent.service._runtime import open_database  # noqa: E402
from trellis.agent.service._worker import WorkerPool  # noqa: E402
from trellis.memory import TaskStatus, TaskStore, TrellisError, make_engine, upgrade  # noqa: E402
from trellis.planners import LLMPlanner, PlannerConfig, ScriptedPlanner  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "bench_faults.json"
ADMIN_URL = os.environ.get(
    "TRELLIS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TOKEN = "bench-token-0123456789abcdef"
Row = dict[str, Any]


class Scratch:
    """A scratch PostgreSQL database, its connections cut and restored on demand."""

    def __init__(self) -> None:
        admin_url = make_url(ADMIN_URL)
        self.name = f"trellis_faults_bench_{uuid.uuid4().hex[:8]}"
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = admin_url.set(database=self.name).render_as_string(hide_password=False)

    def _run(self, sql: str) -> int:
        with self.admin.connect() as connection:
            return len(connection.execute(text(sql), {"name": self.name}).all())

    def terminate(self) -> int:
        return self._run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :name AND pid <> pg_backend_pid()"
        )

    def down(self) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false'))
        self.terminate()

    def up(self) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))

    def drop(self) -> None:
        self.up()
        self.terminate()
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}"'))
        self.admin.dispose()


# --- kills -----------------------------------------------------------------------------------

KILL_WORKER = textwrap.dedent(
    '''
    import asyncio, os, sys, time
    from trellis.adapters import FunctionBackend
    from trellis.agent import Agent, AgentConfig, TaskFinished, skill
    from trellis.planners import PlannerConfig, ScriptedPlanner

    url, out, task_id = sys.argv[1], sys.argv[2], sys.argv[3]

    @skill
    def append(line: str) -> str:
        """Append one line to the output file."""
        time.sleep(0.02)
        with open(out, "a") as handle:
            handle.write(line + "\\n")
            handle.flush()
            os.fsync(handle.fileno())
        time.sleep(0.02)
        return line

    def plans(request):
        if request.failure is not None:
            line = f"retry-{request.node_id}"
            return {"steps": [{"id": "r", "title": f"retry {request.node_id}",
                               "skill": "append", "args": {"line": line}, "depends_on": []}]}
        return {"steps": [{"id": f"s{i}", "title": f"append s{i}", "skill": "append",
                           "args": {"line": f"s{i}"},
                           "depends_on": [f"s{i - 1}"] if i else []} for i in range(8)]}

    agent = Agent(config=AgentConfig(database_url=url, max_replans=50), skills=[append],
                  backend=FunctionBackend(lambda request: "{}"),
                  planner=ScriptedPlanner(plans, config=PlannerConfig(max_replans_per_task=50)))

    async def main():
        events = agent.stream("write eight lines") if task_id == "-" else agent.stream_resume(task_id)
        async for event in events:
            if event.type == "task_started":
                print("TASK", event.task_id, flush=True)
            if isinstance(event, TaskFinished):
                print("RESULT", event.outcome, flush=True)

    asyncio.run(main())
    '''
)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _start(script: Path, url: str, out: Path, task_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), url, str(out), task_id],
        stdout=subprocess.PIPE,
        stderr=open(out.with_suffix(".log"), "a"),
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=str(ROOT),
    )


def drill_kills(kind: str, url: str, runs: int, kills_per_run: int, seed: int) -> Row:
    rng = random.Random(seed)
    folder = Path(tempfile.mkdtemp(prefix="trellis-kills-"))
    script = folder / "worker.py"
    script.write_text(KILL_WORKER)
    row: Row = {"drill": "kills", "database": kind, "runs": 0, "kills": 0, "finished": 0}
    row.update(stuck=0, lost=0, duplicated=0)
    for run in range(runs):
        out = folder / f"lines-{run}.txt"
        run_url = url if kind == "postgres" else f"sqlite:///{folder}/run{run}.db"
        task_id = "-"
        for _ in range(kills_per_run):
            proc = _start(script, run_url, out, task_id)
            assert proc.stdout is not None
            first = proc.stdout.readline()
            if first.startswith("TASK "):
                task_id = first.split()[1]
            target = len(_lines(out)) + rng.randint(0, 2)
            deadline = time.monotonic() + 60
            while proc.poll() is None and len(_lines(out)) < target and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                row["kills"] += 1
            proc.wait(timeout=60)
        final = _start(script, run_url, out, task_id)
        stdout, _ = final.communicate(timeout=300)
        row["runs"] += 1
        lines = _lines(out)
        finished = "RESULT success" in stdout
        if not finished:
            log = out.with_suffix(".log")
            print(
                f"  {kind} run {run} did not finish: {stdout[-300:]!r}; see {log}", file=sys.stderr
            )
        row["finished"] += finished
        row["stuck"] += not finished
        row["duplicated"] += len(lines) != len(set(lines))
        retried = any(line.startswith("retry-") for line in lines)
        row["lost"] += any(f"s{i}" not in lines for i in range(8)) and not retried
    return row


# --- garbage ---------------------------------------------------------------------------------


def garbage_text(rng: random.Random) -> str:
    """One garbage answer (the generator of tests/test_faults_garbage.py, seeded)."""
    choice = rng.randrange(10)
    if choice == 0:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(200)))
    if choice == 1:
        n = rng.randrange(50, 20_000)
        return "[" * n + "]" * n
    if choice == 2:
        n = rng.randrange(50, 5_000)
        return '{"a":' * n + "1" + "}" * n
    if choice == 3:
        return "9" * rng.randrange(41, 9_000)
    if choice == 4:
        return rng.choice(
            [
                '{"steps": [{"id": "1", "title": "x", "skill": "note", "args": {"text": NaN}}]}',
                '{"skill": "note", "args": {"text": "a\\u0000b"}}',
                '{"skill": "note", "args": {"text": "\\ud800"}}',
                '{"skill": "note", "args": {"text": 1e999}}',
                '{"kind": "preference", "polarity": "forbid", "subject": "\\u0000"}',
            ]
        )
    if choice == 5:
        return json.dumps({"skill": "s" * rng.randrange(100, 2_000_000), "args": {}})
    if choice == 6:
        title = "t" * rng.randrange(300, 50_000)
        step = {"id": "1", "title": title, "skill": "note", "args": {}, "depends_on": []}
        return json.dumps({"steps": [step]})
    if choice == 7:
        return '{"action": "' + "a" * 3_000_000 + '"}'
    if choice == 8:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200))).decode("latin-1")
    value: Any = rng.choice([None, True, 1.5, "x", [], {}])
    for _ in range(rng.randrange(6)):
        value = rng.choice([[value], {"k": value}, {"skill": value, "args": value}])
    return json.dumps(value)


GOOD = {
    "plan": json.dumps({"steps": [{"id": "1", "title": "write a note", "skill": "note",
                                   "args": {"text": "hi"}}]}),
    "act": json.dumps({"skill": "note", "args": {"text": "hi"}}),
    "remind": json.dumps({"kind": "preference", "polarity": "forbid", "action": "use",
                          "subject": "blue cup"}),
}  # fmt: skip


def drill_garbage(kind: str, url: str, tasks: int, seed: int) -> Row:
    rng = random.Random(seed)
    state = {"stage": "plan", "garbage": ""}

    def answer(request: LLMRequest) -> str:
        properties = (request.json_schema or {}).get("properties", {})
        if "steps" in properties:
            stage = "plan"
        elif "polarity" in properties or "kind" in properties:
            stage = "remind"
        else:
            stage = "act"
        return state["garbage"] if stage == state["stage"] else GOOD[stage]

    @skill(side_effects=False, timeout_s=5)
    def note(text: str) -> str:
        """Write a note."""
        return text[:20]

    backend = FunctionBackend(answer)
    agent = Agent(
        config=AgentConfig(
            database_url=url, use_plan_args=False, max_replans=1, max_steps=6, act_attempts=2
        ),
        skills=[note],
        backend=backend,
        planner=LLMPlanner(backend, config=PlannerConfig(max_attempts=2, max_replans_per_task=1)),
        reminder_adapter=ReminderAdapter(
            backend, config=ReminderConfig(mode="model", max_attempts=2)
        ),
    )
    row: Row = {"drill": "garbage", "database": kind, "runs": 0, "finished": 0, "stuck": 0}
    row.update(uncaught=0, trellis_errors=0, lost=0, duplicated=0, by_stage={})
    try:
        for index in range(tasks):
            stage = ("remind", "plan", "act")[index % 3]
            state["stage"], state["garbage"] = stage, garbage_text(rng)
            row["runs"] += 1
            task_id: str | None = None
            try:
                result = agent.run("write a note", reminders=["never use the blue cup"])
                task_id = result.task_id
            except TrellisError:
                row["trellis_errors"] += 1
            except Exception as exc:
                row["uncaught"] += 1
                print(f"  uncaught {type(exc).__name__} at {stage}", file=sys.stderr)
            if task_id is None:
                task_id = agent.tasks(limit=1)[0].id
            status = agent.store.get_task(task_id).status
            if status in (TaskStatus.DONE, TaskStatus.FAILED):
                row["finished"] += 1
            else:
                row["stuck"] += 1
            row["by_stage"][stage] = row["by_stage"].get(stage, 0) + 1
    finally:
        agent.close()
    return row


# --- the service across a database blip ------------------------------------------------------


def drill_blip(scratch: Scratch, tasks: int) -> Row:
    home = Path(tempfile.mkdtemp(prefix="trellis-blip-"))
    settings = ServiceSettings(
        database_url=scratch.url,
        tokens={TOKEN: "bench"},
        workers=4,
        poll_s=0.05,
        lease_s=5.0,
        max_attempts=3,
        db_retry_s=2.0,
        demo={"steps": 3, "step_s": 0.05, "effects_dir": home / "effects"},
    )
    engine = open_database(settings)
    store, queue = TaskStore(engine), TaskQueue(engine)
    ids = []
    for i in range(tasks):
        task = store.create_task(f"chore {i}", user_id="bench", metadata={"reminders": []})
        queue.enqueue(task.id, user_id="bench", goal=f"chore {i}", profile="demo")
        ids.append(task.id)
    events: list[str] = []

    def faults() -> None:
        # Cuts every connection three times, then refuses connections for 6 s (longer than
        # runs wait), then cuts once more.
        for at, action in [(1.0, "cut"), (2.5, "cut"), (4.0, "down"), (10.0, "up"), (12.0, "cut")]:
            time.sleep(max(0.0, at - (time.monotonic() - started)))
            if action == "cut":
                scratch.terminate()
            elif action == "down":
                scratch.down()
            else:
                scratch.up()
            events.append(f"{time.monotonic() - started:.1f}s {action}")

    async def run() -> float:
        pool = WorkerPool(settings, engine)
        runner = asyncio.create_task(pool.run())
        done_at = 0.0
        try:
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                try:
                    states = await asyncio.to_thread(lambda: [queue.get(t).state for t in ids])
                except Exception:
                    continue  # the database is away
                if all(s in (QueueState.DONE, QueueState.FAILED) for s in states):
                    done_at = time.monotonic() - started
                    break
        finally:
            pool.stop()
            await runner
            await pool.close()
        return done_at

    started = time.monotonic()
    thread = threading.Thread(target=faults, daemon=True)
    thread.start()
    seconds = asyncio.run(run())
    thread.join()
    log = EventLog(engine)
    effects = [
        json.loads(line)["task_id"]
        for line in (home / "effects" / "effects.jsonl").read_text().splitlines()
    ]
    row: Row = {"drill": "blip", "database": "postgres", "runs": tasks, "faults": events}
    finished = stuck = lost = duplicated = resumed = 0
    for task_id in ids:
        queued = queue.get(task_id)
        finished += queued.state is QueueState.DONE
        stuck += queued.state not in (QueueState.DONE, QueueState.FAILED)
        kinds = [e.type for e in log.read(task_id, limit=2000)]
        resumed += kinds.count("task_started") > 1  # handed back or retried in place
        once = effects.count(task_id)
        lost += queued.state is QueueState.DONE and once == 0
        duplicated += once > 1 or kinds.count("task_finished") > 1
    row.update(finished=finished, stuck=stuck, lost=lost, duplicated=duplicated)
    row.update(resumed=resumed, seconds=round(seconds, 1))
    engine.dispose()
    return row


# --- timeouts --------------------------------------------------------------------------------


def drill_timeouts(tasks: int, *, with_check: bool) -> Row:
    paid: list[str] = []
    lock = threading.Lock()

    @skill(timeout_s=0.3)
    def pay(context: SkillContext) -> str:
        """Pay the bill (acts after its timeout)."""
        time.sleep(0.6)
        with lock:
            paid.append(context.task_id)
        return "paid"

    @skill(side_effects=False)
    def look() -> str:
        """Check the world."""
        return "ok"

    def plan(request: Any) -> Any:
        retry = request.failure is not None and "SkillOutcomeUnknown" not in request.failure
        if request.failure is None or retry:
            return {"steps": [{"id": "pay", "title": "pay", "skill": "pay", "args": {}}]}
        return {"steps": [{"id": "look", "title": "check", "skill": "look", "args": {}}]}

    def check(key: str, skill_name: str, args: dict[str, Any]) -> bool:
        with lock:
            return key.split(":")[0] in paid

    folder = Path(tempfile.mkdtemp(prefix="trellis-timeouts-"))
    agent = Agent(
        config=AgentConfig(database_url=f"sqlite:///{folder}/t.db", max_replans=3),
        skills=[pay, look],
        backend=FunctionBackend(lambda request: "{}"),
        planner=ScriptedPlanner(plan, config=PlannerConfig(max_replans_per_task=3)),
        effect_check=check if with_check else None,
    )
    ids: list[str] = []
    try:
        for _ in range(tasks):
            ids.append(agent.run("pay the bill").task_id)
        time.sleep(1.0)
        statuses = [agent.store.get_task(t).status for t in ids]
    finally:
        agent.close()
    row: Row = {"drill": "timeouts" + ("+check" if with_check else ""), "database": "sqlite"}
    row.update(
        runs=tasks, finished=sum(s in (TaskStatus.DONE, TaskStatus.FAILED) for s in statuses)
    )
    row.update(stuck=sum(s is TaskStatus.RUNNING for s in statuses))
    row.update(lost=sum(paid.count(t) == 0 for t in ids))
    row.update(duplicated=sum(paid.count(t) > 1 for t in ids), payments=len(paid))
    return row


# --- lease takeover --------------------------------------------------------------------------


def _worker(url: str, home: Path, name: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TRELLIS_HOME": str(home),
        "TRELLIS_TOKENS": json.dumps({TOKEN: "bench"}),
        "TRELLIS_LEASE_S": "2",
        "TRELLIS_POLL_S": "0.05",
        "TRELLIS_DEMO__STEPS": "6",
        "TRELLIS_DEMO__STEP_S": "0.4",
        "TRELLIS_DEMO__EFFECTS_DIR": str(home / "effects"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "trellis.agent.service._cli", "worker", "-w", "1", "--db", url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / f"{name}.log", "ab"),
    )


def _until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _lease_round(kind: str, url: str, index: int) -> tuple[bool, bool, bool]:
    """One paused-worker round: (finished, lost, duplicated)."""
    home = Path(tempfile.mkdtemp(prefix="trellis-lease-"))
    run_url = url if kind == "postgres" else f"sqlite:///{home}/lease.db"
    engine = make_engine(run_url)
    upgrade(engine)
    store, queue, log = TaskStore(engine), TaskQueue(engine), EventLog(engine)
    task = store.create_task(f"record {index}", user_id="bench", metadata={"reminders": []})
    queue.enqueue(task.id, user_id="bench", goal=f"record {index}", profile="demo")
    first = _worker(run_url, home, "first")
    second: subprocess.Popen[bytes] | None = None
    try:
        _until(lambda: any(e.type == "skill_finished" for e in log.read(task.id)), 90)
        os.kill(first.pid, signal.SIGSTOP)
        time.sleep(3.0)
        second = _worker(run_url, home, "second")
        _until(lambda: queue.get(task.id).state is QueueState.DONE, 120)
        os.kill(first.pid, signal.SIGCONT)
        time.sleep(4.0)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
                process.wait(timeout=60)
    kinds = [e.type for e in log.read(task.id, limit=2000)]
    effects_file = home / "effects" / "effects.jsonl"
    effects = effects_file.read_text().splitlines() if effects_file.exists() else []
    done = queue.get(task.id).state is QueueState.DONE
    engine.dispose()
    return done, done and not effects, kinds.count("task_finished") > 1 or len(effects) > 1


def drill_lease(kind: str, url: str, rounds: int) -> Row:
    row: Row = {"drill": "lease", "database": kind, "runs": 0, "finished": 0, "stuck": 0}
    row.update(lost=0, duplicated=0)
    for index in range(rounds):
        done, lost, duplicated = _lease_round(kind, url, index)
        row["runs"] += 1
        row["finished"] += done
        row["stuck"] += not done
        row["lost"] += lost
        row["duplicated"] += duplicated
    return row


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)  # the drills cause the warnings on purpose
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of every drill")
    parser.add_argument("--only", nargs="*", default=None, help="drills to run (default: all)")
    args = parser.parse_args()
    quick = args.quick
    wanted = set(args.only or ["kills", "garbage", "blip", "timeouts", "lease"])
    scratch = Scratch()
    rows: list[Row] = []
    try:
        plans: list[tuple[str, Callable[[], Row]]] = []
        if "kills" in wanted:
            runs = 2 if quick else 13
            for kind in ("sqlite", "postgres"):
                kills = functools.partial(drill_kills, kind, scratch.url, runs, 4, 7)
                plans.append((f"kills/{kind}", kills))
        if "garbage" in wanted:
            tasks = 30 if quick else 150
            sqlite_url = f"sqlite:///{tempfile.mkdtemp(prefix='trellis-garbage-')}/g.db"
            plans.append(("garbage/sqlite", lambda: drill_garbage("sqlite", sqlite_url, tasks, 1)))
            plans.append(
                ("garbage/postgres", lambda: drill_garbage("postgres", scratch.url, tasks, 2))
            )
        if "blip" in wanted:
            plans.append(("blip", lambda: drill_blip(scratch, 30 if quick else 100)))
        if "timeouts" in wanted:
            n = 5 if quick else 20
            plans.append(("timeouts", lambda: drill_timeouts(n, with_check=False)))
            plans.append(("timeouts+check", lambda: drill_timeouts(n, with_check=True)))
        if "lease" in wanted:
            for kind in ("sqlite", "postgres"):
                lease = functools.partial(drill_lease, kind, scratch.url, 1 if quick else 2)
                plans.append((f"lease/{kind}", lease))
        for name, drill in plans:
            began = time.monotonic()
            row = drill()
            row["seconds"] = row.get("seconds") or round(time.monotonic() - began, 1)
            rows.append(row)
            print(
                f"{name:18} runs {row.get('runs', 0):4}  finished {row.get('finished', 0):4}  "
                f"stuck {row.get('stuck', 0):3}  lost {row.get('lost', 0):3}  "
                f"duplicated {row.get('duplicated', 0):3}  uncaught {row.get('uncaught', 0):3}"
                + (f"  kills {row['kills']}" if "kills" in row else "")
                + f"  ({row['seconds']} s)",
                flush=True,
            )
    finally:
        scratch.drop()
    totals = {
        key: sum(int(r.get(key, 0)) for r in rows)
        for key in ("runs", "finished", "stuck", "lost", "duplicated", "uncaught", "kills")
    }
    if quick:
        print("total", totals)
        return
    if args.only and RESULTS.exists():
        # Keep the other drills' rows of the last full run; replace the ones run now.
        ran = {(r["drill"], r["database"]) for r in rows}
        kept = [
            r
            for r in json.loads(RESULTS.read_text())["rows"]
            if (r["drill"], r["database"]) not in ran
        ]
        rows = kept + rows
        totals = {
            key: sum(int(r.get(key, 0)) for r in rows)
            for key in ("runs", "finished", "stuck", "lost", "duplicated", "uncaught", "kills")
        }
    print("total", totals)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "faults",
                "command": ".venv/bin/python bench/bench_faults.py",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "load_average": list(os.getloadavg()),
                "seconds": round(sum(float(r.get("seconds", 0)) for r in rows), 1),
                "totals": totals,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
