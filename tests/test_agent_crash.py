"""Crash safety: a process running a task is killed (SIGKILL) at random moments and resumed.

A side-effecting skill appends a line to a file; however the kills fall, no line may be
written twice, and the task must finish once it is allowed to run to the end.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    '''
    import asyncio, os, sys, time
    from trellis.adapters import FunctionBackend
    from trellis.agent import Agent, AgentConfig, TaskFinished, skill
    from trellis.planners import PlannerConfig, ScriptedPlanner

    url, out, task_id = sys.argv[1], sys.argv[2], sys.argv[3]

    @skill
    def append(line: str) -> str:
        """Append one line to the output file."""
        time.sleep(0.03)
        with open(out, "a") as handle:
            handle.write(line + "\\n")
            handle.flush()
            os.fsync(handle.fileno())
        time.sleep(0.03)
        return line

    def plans(request):
        if request.failure is not None:
            line = f"retry-{request.node_id}"
            return {"steps": [{"id": "r", "title": f"retry {request.node_id}",
                               "skill": "append", "args": {"line": line}, "depends_on": []}]}
        return {"steps": [{"id": f"s{i}", "title": f"append s{i}", "skill": "append",
                           "args": {"line": f"s{i}"},
                           "depends_on": [f"s{i - 1}"] if i else []} for i in range(8)]}

    # Every kill inside a call costs a replan: both budgets allow one per kill.
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


def _start(script: Path, url: str, out: Path, task_id: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(script), url, str(out), task_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO),
    )


def _lines(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def _wait_for_task(proc: subprocess.Popen[str], task_id: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.startswith("RESULT ") and task_id != "-":
        return task_id  # already finished in an earlier round: nothing left to run
    if not line.startswith("TASK "):
        _out, err = proc.communicate(timeout=30)
        raise AssertionError(f"worker did not start: {line!r} {err[-2000:]}")
    return line.split()[1]


@pytest.mark.parametrize(
    ("database", "seed"), [("sqlite", 7), ("sqlite", 19), ("postgres", 11), ("postgres", 29)]
)
def test_kill_and_resume_never_repeats_a_side_effect(
    tmp_path: Path, database: str, seed: int, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path}/crash.db"
        if database == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "lines.txt"
    rng = random.Random(seed)
    task_id = "-"
    kills = 0
    for _round in range(4):
        proc = _start(script, url, out, task_id)
        task_id = _wait_for_task(proc, task_id)
        # Kill by progress, not by wall time, so the kill points do not depend on machine
        # speed: after 0-2 more lines (often right after a write, before the call's result
        # is recorded: the dangerous window), plus a little jitter.
        target = _lines(out) + rng.randint(0, 2)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _lines(out) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    proc = _start(script, url, out, task_id)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr[-3000:]
    assert "RESULT success" in stdout, stdout + stderr[-2000:]
    lines = out.read_text().split()
    assert kills >= 1
    assert len(lines) == len(set(lines)), f"a side effect ran twice: {lines}"
    # Every planned line was written, or its call was cut by a kill and then retried.
    for i in range(8):
        assert f"s{i}" in lines or any(line.startswith("retry-") for line in lines)
