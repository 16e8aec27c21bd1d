"""Fault drill: the database connection is lost mid-run, on the real PostgreSQL server.

Connections are cut with ``pg_terminate_backend`` from an admin connection; an outage is
``ALTER DATABASE ... ALLOW_CONNECTIONS false`` plus terminating every backend (only this
test's scratch database is touched). SQLite files cannot lose a connection; its runs are
covered by the crash tests and the other fault suites.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from test_service_http import start_server, stop_server

from trellis.adapters import FunctionBackend
from trellis.agent import Agent, AgentConfig, skill
from trellis.agent.service import QueueState, ServiceSettings, TaskQueue
from trellis.agent.service._queue_log import EventLog
from trellis.agent.service._runtime import open_database
from trellis.agent.service._worker import WorkerPool
from trellis.memory import (
    DatabaseConfig,
    DatabaseUnavailable,
    TaskStatus,
    TaskStore,
    is_transient,
)
from trellis.planners import PlannerConfig, ScriptedPlanner

pytestmark = [pytest.mark.postgres]

TOKEN = "tok-0123456789abcdef"


class Admin:
    """Cuts and restores the connections of one scratch database."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.name = parsed.database
        self.engine = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")

    def terminate(self) -> int:
        with self.engine.connect() as connection:
            return len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": self.name},
                ).all()
            )

    def down(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false'))
        self.terminate()

    def up(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true'))

    def close(self) -> None:
        self.up()
        self.engine.dispose()


@pytest.fixture
def admin(postgres_url: str) -> Iterator[Admin]:
    cutter = Admin(postgres_url)
    try:
        yield cutter
    finally:
        cutter.close()


def _plans(steps: int) -> ScriptedPlanner:
    def plan(request: Any) -> Any:
        if request.failure is not None:  # a cut-off call is unknown: look, never repeat
            return {"steps": [{"id": "c", "title": "look", "skill": "look", "args": {}}]}
        return {
            "steps": [
                {
                    "id": f"s{i}",
                    "title": f"write line {i}",
                    "skill": "write",
                    "args": {"line": f"s{i}"},
                    "depends_on": [f"s{i - 1}"] if i else [],
                }
                for i in range(steps)
            ]
        }

    return ScriptedPlanner(plan, config=PlannerConfig(max_replans_per_task=20, max_steps=12))


def _agent(url: str, out: Path, *, retry_s: float = 30.0, on_write: Any = None) -> Agent:
    @skill(timeout_s=10)
    def write(line: str) -> str:
        """Append a line to the ledger."""
        with open(out, "a") as handle:
            handle.write(line + "\n")
        if on_write is not None:
            on_write(line)
        return line

    @skill(side_effects=False)
    def look() -> str:
        """Look at the world."""
        return "ok"

    store = TaskStore.open(database=DatabaseConfig(url=url, retry_s=retry_s))
    return Agent(
        config=AgentConfig(max_replans=20),
        skills=[write, look],
        backend=FunctionBackend(lambda request: "{}"),
        planner=_plans(12),
        store=store,
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_sdk_run_outlives_terminated_connections(
    postgres_url: str, admin: Admin, tmp_path: Path
) -> None:
    """Every connection is cut at several moments of a run (after some side effects, and
    at random times, mid-statement included): it finishes, and no side effect runs twice
    (before: a raw OperationalError on the first cut)."""
    out = tmp_path / "ledger.txt"
    cuts = 0

    def on_write(line: str) -> None:
        nonlocal cuts
        if line in ("s2", "s5", "s8"):
            cuts += admin.terminate() > 0
        time.sleep(0.15)

    agent = _agent(postgres_url, out, on_write=on_write)
    rng = random.Random(3)
    stop = threading.Event()

    def cutter() -> None:
        nonlocal cuts
        while not stop.wait(rng.uniform(0.5, 1.2)):
            cuts += admin.terminate() > 0

    thread = threading.Thread(target=cutter, daemon=True)
    try:
        thread.start()
        result = agent.run("write twelve lines")
    finally:
        stop.set()
        thread.join()
        agent.close()
    assert cuts >= 4
    assert result.success, result.reason
    lines = _lines(out)
    assert len(lines) == len(set(lines)), f"a side effect ran twice: {lines}"


def test_sdk_outage_past_the_budget_names_resume(
    postgres_url: str, admin: Admin, tmp_path: Path
) -> None:
    out = tmp_path / "ledger.txt"

    def on_write(line: str) -> None:
        if line == "s3":
            admin.down()
            threading.Timer(4.0, admin.up).start()

    agent = _agent(postgres_url, out, retry_s=1.0, on_write=on_write)
    try:
        with pytest.raises(DatabaseUnavailable, match="resume") as raised:
            agent.run("write twelve lines")
        task_id = raised.value.task_id
        assert task_id is not None and task_id in str(raised.value)
        time.sleep(4.5)  # the database is back
        resumed = agent.resume(task_id)
    finally:
        agent.close()
    assert resumed.success, resumed.reason
    lines = _lines(out)
    assert len(lines) == len(set(lines)) and "s11" in lines


def test_sdk_outage_within_the_budget_is_invisible(
    postgres_url: str, admin: Admin, tmp_path: Path
) -> None:
    out = tmp_path / "ledger.txt"

    def on_write(line: str) -> None:
        if line == "s5":
            admin.down()
            threading.Timer(1.5, admin.up).start()

    agent = _agent(postgres_url, out, retry_s=20.0, on_write=on_write)
    try:
        result = agent.run("write twelve lines")
    finally:
        agent.close()
    assert result.success, result.reason
    lines = _lines(out)
    assert len(lines) == len(set(lines)) and "s11" in lines


def test_store_calls_retry_and_then_raise_database_unavailable(
    postgres_url: str, admin: Admin
) -> None:
    store = TaskStore.open(database=DatabaseConfig(url=postgres_url, retry_s=0.5))
    try:
        task = store.create_task("g")
        admin.terminate()
        assert store.get_task(task.id).goal == "g"  # the pool replaces the dropped connection
        admin.down()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as raised:
            store.get_task(task.id)
        assert time.monotonic() - started < 20
        assert is_transient(raised.value)
        admin.up()
        assert store.get_task(task.id).goal == "g"
    finally:
        store.close()


# --- the service ---------------------------------------------------------------------------


def _settings(url: str, tmp_path: Path, **extra: Any) -> ServiceSettings:
    return ServiceSettings(
        database_url=url,
        tokens={TOKEN: "ann"},
        workers=3,
        poll_s=0.05,
        lease_s=3.0,
        demo={"steps": 4, "step_s": 0.05, "effects_dir": tmp_path / "effects"},
        **extra,
    )


async def _until(predicate: Any) -> None:
    async with asyncio.timeout(120):
        while not await asyncio.to_thread(predicate):  # noqa: ASYNC110 - polls the database
            await asyncio.sleep(0.1)


def _submit(engine: Any, n: int) -> list[str]:
    store, queue = TaskStore(engine), TaskQueue(engine)
    ids = []
    for i in range(n):
        task = store.create_task(f"chore {i}", user_id="ann", metadata={"reminders": []})
        queue.enqueue(task.id, user_id="ann", goal=f"chore {i}", profile="demo")
        ids.append(task.id)
    return ids


def _check_once(engine: Any, tmp_path: Path, ids: list[str]) -> None:
    queue, store, log = TaskQueue(engine), TaskStore(engine), EventLog(engine)
    for task_id in ids:
        queued = queue.get(task_id)
        why = (queued.state, queued.attempts, queued.error, queued.result)
        assert queued.state is QueueState.DONE, why
        assert store.get_task(task_id).status is TaskStatus.DONE
        kinds = [e.type for e in log.read(task_id, limit=1000)]
        assert kinds.count("task_finished") == 1, kinds
    effects = [
        json.loads(line)["task_id"]
        for line in (tmp_path / "effects" / "effects.jsonl").read_text().splitlines()
    ]
    assert sorted(effects) == sorted(ids), "a task's side effect ran twice or never"


async def test_service_survives_terminated_connections(
    postgres_url: str, admin: Admin, tmp_path: Path
) -> None:
    """The drill: cut every connection of the service while tasks run; every task finishes
    once, without restarting anything (before: every claim failed for good)."""
    settings = _settings(postgres_url, tmp_path, max_attempts=3)
    engine = open_database(settings)
    pool = WorkerPool(settings, engine)
    ids = _submit(engine, 15)
    runner = asyncio.create_task(pool.run())
    queue = TaskQueue(engine)
    try:
        for _ in range(4):
            await asyncio.sleep(0.8)
            await asyncio.to_thread(admin.terminate)
        more = await asyncio.to_thread(_submit, engine, 5)
        await _until(lambda: all(queue.get(t).state in TERMINAL_STATES for t in ids + more))
    finally:
        pool.stop()
        await runner
        await pool.close()
    await asyncio.to_thread(_check_once, engine, tmp_path, ids + more)
    engine.dispose()


TERMINAL_STATES = {QueueState.DONE, QueueState.FAILED, QueueState.CANCELLED}


async def test_service_outage_longer_than_a_run_waits(
    postgres_url: str, admin: Admin, tmp_path: Path
) -> None:
    """The database is away longer than runs wait (db_retry_s=1) and leases last: the tasks
    are handed back without using up their attempts, and all finish once it is back."""
    settings = _settings(postgres_url, tmp_path, max_attempts=2, db_retry_s=1.0)
    engine = open_database(settings)
    pool = WorkerPool(settings, engine)
    ids = _submit(engine, 10)
    runner = asyncio.create_task(pool.run())
    queue = TaskQueue(engine)
    try:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(admin.down)
        await asyncio.sleep(4.0)
        assert pool.database_down_since is not None
        await asyncio.to_thread(admin.up)
        await _until(lambda: all(queue.get(t).state in TERMINAL_STATES for t in ids))
    finally:
        pool.stop()
        await runner
        await pool.close()
    await asyncio.to_thread(_check_once, engine, tmp_path, ids)
    assert pool.database_down_since is None
    engine.dispose()


@pytest.mark.slow
def test_readyz_follows_the_database(postgres_url: str, admin: Admin, tmp_path: Path) -> None:
    process, base = start_server(postgres_url, tmp_path, workers=1)
    try:
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200
        admin.down()
        time.sleep(0.5)
        answer = httpx.get(f"{base}/readyz", timeout=30)
        assert answer.status_code == 503 and answer.json()["error"]["type"] == "not_ready"
        listed = httpx.get(
            f"{base}/v1/tasks", headers={"Authorization": "Bearer ann-token-0123456789abcdef"}
        )
        assert listed.status_code == 503 and listed.json()["error"]["type"] == "unavailable"
        admin.up()
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "readyz stayed 503 after the database came back"
            time.sleep(0.3)
    finally:
        admin.up()
        stop_server(process)
