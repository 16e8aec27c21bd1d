"""Fault drill: a worker is paused (SIGSTOP) past its lease, another worker takes the task
over and finishes it, then the first wakes up (SIGCONT). It must stop before its next step
and write nothing more: one ``task_finished`` event, every side effect once (before: the
woken worker finished the task a second time)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from trellis.agent.service import QueueState, TaskQueue
from trellis.agent.service._queue_log import EventLog
from trellis.memory import TaskStore, make_engine, upgrade

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tok-0123456789abcdef"


def _worker(url: str, home: Path, name: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TRELLIS_HOME": str(home),
        "TRELLIS_TOKENS": json.dumps({TOKEN: "ann"}),
        "TRELLIS_LEASE_S": "2",
        "TRELLIS_POLL_S": "0.05",
        "TRELLIS_DEMO__STEPS": "6",
        "TRELLIS_DEMO__STEP_S": "0.4",
        "TRELLIS_DEMO__EFFECTS_DIR": str(home / "effects"),
    }
    command = [sys.executable, "-m", "trellis.agent.service._cli", "worker", "-w", "1"]
    return subprocess.Popen(
        [*command, "--db", url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / f"{name}.log", "ab"),
    )


def _owner_pid(url: str, task_id: str) -> int | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            owner = connection.execute(
                text("SELECT lease_owner FROM service_tasks WHERE id = :id"), {"id": task_id}
            ).scalar_one_or_none()
    finally:
        engine.dispose()
    return int(owner.split(":")[1]) if owner else None


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_paused_worker_stops_after_a_takeover(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path}/lease.db"
        if kind == "sqlite"
        else str(request.getfixturevalue("postgres_url"))
    )
    engine = make_engine(url)
    upgrade(engine)
    store, queue, events = TaskStore(engine), TaskQueue(engine), EventLog(engine)
    task = store.create_task("record the goal", user_id="ann", metadata={"reminders": []})
    queue.enqueue(task.id, user_id="ann", goal="record the goal", profile="demo")

    first = _worker(url, tmp_path, "first")
    second: subprocess.Popen[bytes] | None = None
    try:
        # The first worker claims the task and runs a step or two; then it is frozen.
        _wait(lambda: _owner_pid(url, task.id) == first.pid, 60, "the first claim")
        _wait(
            lambda: any(e.type == "skill_finished" for e in events.read(task.id, limit=500)),
            60,
            "a first step",
        )
        if kind == "sqlite":
            # SQLite has one write lock for the whole file: a worker frozen inside a write
            # transaction would hold it, and no one could take over. Holding the lock while
            # freezing it means it is frozen between its writes, as a paused process usually is.
            with engine.begin():
                os.kill(first.pid, signal.SIGSTOP)
        else:
            os.kill(first.pid, signal.SIGSTOP)
        time.sleep(3.0)  # its 2 s lease runs out
        second = _worker(url, tmp_path, "second")
        _wait(lambda: queue.get(task.id).state is QueueState.DONE, 120, "the takeover")
        assert _owner_pid(url, task.id) is None and queue.get(task.id).attempts == 2
        finished_at = len(events.read(task.id, limit=1000))
        os.kill(first.pid, signal.SIGCONT)  # wakes up in the middle of its old run
        time.sleep(4.0)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
                process.wait(timeout=60)
    kinds = [e.type for e in events.read(task.id, limit=1000)]
    assert kinds.count("task_finished") == 1, kinds
    assert len(kinds) == finished_at, "the woken worker wrote events after the takeover"
    effects = (tmp_path / "effects" / "effects.jsonl").read_text().splitlines()
    assert [json.loads(line)["task_id"] for line in effects] == [task.id]
    assert queue.get(task.id).state is QueueState.DONE
    log = (tmp_path / "first.log").read_text()
    assert "lease lost" in log or "another worker owns the task" in log, log[-3000:]
    engine.dispose()
