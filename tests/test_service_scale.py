"""Scale-out on PostgreSQL: 3 worker processes, 100 tasks, one process SIGKILLed mid-run."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from test_service_http import ANN, ROOT, _reset, client, start_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TASKS = 100


def _worker(url: str, home: Path, index: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TRELLIS_HOME": str(home),
        "TRELLIS_TOKENS": json.dumps({ANN: "ann"}),
        "TRELLIS_LEASE_S": "2",
        "TRELLIS_POLL_S": "0.1",
        "TRELLIS_DEMO__STEPS": "2",
        "TRELLIS_DEMO__LLM_DELAY_S": "0.02",
        "TRELLIS_DEMO__EFFECTS_DIR": str(home / "effects"),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trellis.agent.service._cli",
            "worker",
            "--workers",
            "2",
            "--db",
            url,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / f"worker{index}.log", "ab"),
    )


def _states(url: str) -> collections.Counter[str]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT state FROM service_tasks")).all()
    engine.dispose()
    return collections.Counter(r[0] for r in rows)


def _held_by(url: str, pid: int) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        n = connection.execute(
            text(
                "SELECT count(*) FROM service_tasks WHERE state = 'claimed' AND lease_owner LIKE :p"
            ),
            {"p": f"%:{pid}:%"},
        ).scalar_one()
    engine.dispose()
    return int(n)


def test_three_workers_one_killed_every_task_once(postgres_url: str, tmp_path: Path) -> None:
    _reset(postgres_url)
    # Workers start alongside the server (they wait for its migrations), so that their
    # start-up overlaps the submissions.
    workers = [_worker(postgres_url, tmp_path, i) for i in range(3)]
    server, base = start_server(postgres_url, tmp_path, workers=0)
    try:

        def submit(i: int) -> str:
            with client(base) as http:
                response = http.post(
                    "/v1/tasks",
                    json={"goal": f"chore {i}"},
                    headers={"Idempotency-Key": f"chore-{i}"},
                )
                assert response.status_code == 201, response.text
                return str(response.json()["id"])

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(submit, range(TASKS)))
        with client(base) as ann:
            # A retried submission returns the first task, not a 101st.
            again = ann.post(
                "/v1/tasks", json={"goal": "chore 0"}, headers={"Idempotency-Key": "chore-0"}
            )
            assert again.status_code == 200 and again.json()["id"] == ids[0]
        victim = workers[0]
        deadline = time.monotonic() + 120
        # Kill the first worker while it holds tasks, after some work is done.
        while time.monotonic() < deadline:
            done = _states(postgres_url)["done"]
            if done >= 20 and _held_by(postgres_url, victim.pid) > 0:
                break
            time.sleep(0.05)
        held = _held_by(postgres_url, victim.pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert held > 0

        while time.monotonic() < deadline:
            states = _states(postgres_url)
            if states["done"] + states["failed"] + states["cancelled"] == TASKS:
                break
            time.sleep(0.25)
        assert _states(postgres_url) == {"done": TASKS}

        engine = create_engine(postgres_url)
        with engine.connect() as connection:
            attempts = dict(
                connection.execute(text("SELECT id, attempts FROM service_tasks")).all()
            )
            tree_status = collections.Counter(
                r[0]
                for r in connection.execute(
                    text("SELECT status FROM tmt_tasks WHERE id = ANY(:ids)"), {"ids": ids}
                )
            )
            unknown = {
                r[0]
                for r in connection.execute(
                    text(
                        "SELECT task_id FROM agent_skill_calls WHERE skill = 'demo_record' AND status = 'unknown'"
                    )
                )
            }
        engine.dispose()
        assert tree_status == {"done": TASKS}
        # The killed worker's tasks were taken over (a second claim) and finished.
        assert sum(1 for n in attempts.values() if n >= 2) >= 1

        effects = collections.Counter(
            json.loads(line)["task_id"]
            for line in (tmp_path / "effects" / "effects.jsonl").read_text().splitlines()
        )
        assert max(effects.values()) == 1, "a side-effecting skill ran twice"
        for task_id in ids:
            # Exactly once, unless the worker died inside the call: then it is never repeated.
            assert effects[task_id] == 1 or task_id in unknown, task_id
        assert set(effects) <= set(ids)
        with client(base) as ann:
            metrics = ann.get("/metrics").text
        assert 'trellis_tasks{state="done"} 100.0' in metrics
    finally:
        for process in workers[1:]:
            process.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=40) for p in workers[1:]]
        stop_server(server)
    assert codes == [0, 0]
    for index in (1, 2):
        log = (tmp_path / f"worker{index}.log").read_text()
        assert '"worker stopped"' in log
