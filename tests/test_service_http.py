"""The service over real HTTP: a uvicorn server in a subprocess on PostgreSQL, httpx clients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
ANN = "ann-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reset(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def start_server(
    url: str,
    home: Path,
    *,
    workers: int,
    extra: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[bytes], str]:
    """``trellis serve`` in a subprocess; returns the process and its base URL once ready."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TRELLIS_HOME": str(home),
        "TRELLIS_DATABASE_URL": url,
        "TRELLIS_TOKENS": json.dumps({ANN: "ann", BOB: "bob", ADMIN: "root"}),
        "TRELLIS_ADMIN_USERS": '["root"]',
        "TRELLIS_MAX_BODY_BYTES": "4096",
        "TRELLIS_ADAPTER_ROOTS": str(home / "adapters"),
        "TRELLIS_DEMO__EFFECTS_DIR": str(home / "effects"),
        "TRELLIS_SSE_POLL_S": "0.05",
        **(extra or {}),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "trellis.agent.service._cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            *args,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "server.log", "ab"),  # noqa: SIM115
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((home / "server.log").read_text()[-3000:])
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not become ready: " + (home / "server.log").read_text()[-3000:])


def stop_server(process: subprocess.Popen[bytes]) -> int:
    process.terminate()
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@pytest.fixture(scope="module")
def server(
    postgres_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    _reset(postgres_database_url)
    home = tmp_path_factory.mktemp("service-home")
    (home / "adapters").mkdir()
    process, base = start_server(postgres_database_url, home, workers=2)
    try:
        yield base, home
    finally:
        code = stop_server(process)
        logged = (home / "server.log").read_text()
        # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit too.
        assert code in (0, -15) and '"service stopped"' in logged, f"exit {code}: {logged[-3000:]}"


def client(base: str, token: str | None = ANN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def wait_state(
    http: httpx.Client, task_id: str, states: set[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = http.get(f"/v1/tasks/{task_id}").json()
        if body["state"] in states:
            return body
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} stayed {body['state']}")


def test_auth_is_required_and_users_are_isolated(server: tuple[str, Path]) -> None:
    base, _ = server
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    with client(base, None) as anonymous:
        response = anonymous.get("/v1/tasks")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/metrics").status_code == 401
    with client(base, "wrong-token-0123456789abcdef") as wrong:
        assert wrong.get("/v1/tasks").status_code == 401
    with client(base) as ann, client(base, BOB) as bob:
        created = ann.post("/v1/tasks", json={"goal": "water the secret orchid"})
        assert created.status_code == 201
        task_id = created.json()["id"]
        for method, path in [
            ("GET", f"/v1/tasks/{task_id}"),
            ("GET", f"/v1/tasks/{task_id}/tree"),
            ("GET", f"/v1/tasks/{task_id}/events"),
            ("POST", f"/v1/tasks/{task_id}/cancel"),
            ("POST", f"/v1/tasks/{task_id}/approve"),
        ]:
            response = bob.request(method, path)
            assert response.status_code == 404, (method, path)
            assert "orchid" not in response.text and "ann" not in response.text
        assert bob.get("/v1/tasks").json() == []
        assert [t["id"] for t in ann.get("/v1/tasks").json()] == [task_id]
        wait_state(ann, task_id, {"done"})


def test_submit_run_tree_events_and_idempotency(server: tuple[str, Path]) -> None:
    base, home = server
    with client(base) as ann:
        assert ann.post("/v1/reminders", json={"text": "be quiet"}).status_code == 201
        first = ann.post(
            "/v1/tasks",
            json={"goal": "tidy the desk", "reminders": ["no nuts"]},
            headers={"Idempotency-Key": "desk-1"},
        )
        assert first.status_code == 201
        again = ann.post(
            "/v1/tasks", json={"goal": "something else"}, headers={"Idempotency-Key": "desk-1"}
        )
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        task = first.json()
        assert task["reminders"] == ["be quiet", "no nuts"]
        done = wait_state(ann, task["id"], {"done", "failed"})
        assert done["state"] == "done" and done["result"]["outcome"] == "success"

        tree = ann.get(f"/v1/tasks/{task['id']}/tree").json()
        titles = [n["title"] for n in tree["nodes"]]
        assert titles[0] == "tidy the desk" and "record the goal" in titles
        assert all(n["status"] == "done" for n in tree["nodes"])

        with ann.stream("GET", f"/v1/tasks/{task['id']}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            kinds = [
                line.split(": ", 1)[1] for line in stream.iter_lines() if line.startswith("event: ")
            ]
        assert kinds[0] == "task_started" and "skill_finished" in kinds
        assert kinds[-2:] == ["task_finished", "end"]
        # Resuming after the last id sends only the end marker.
        with ann.stream(
            "GET", f"/v1/tasks/{task['id']}/events", headers={"Last-Event-ID": "999999999"}
        ) as stream:
            tail = [line for line in stream.iter_lines() if line.startswith("event: ")]
        assert tail == ["event: end"]

        effects = (home / "effects" / "effects.jsonl").read_text().splitlines()
        assert sum(json.loads(line)["task_id"] == task["id"] for line in effects) == 1
        assert ann.post(f"/v1/tasks/{task['id']}/cancel").status_code == 409


def test_approval_flow(server: tuple[str, Path]) -> None:
    base, _ = server
    with client(base) as ann:
        task_id = ann.post("/v1/tasks", json={"goal": "open the vault [approval]"}).json()["id"]
        waiting = wait_state(ann, task_id, {"awaiting_approval", "done", "failed"})
        assert waiting["state"] == "awaiting_approval"
        assert waiting["approval"]["skill"] == "demo_gate"
        assert ann.post(f"/v1/tasks/{task_id}/approve").json()["state"] == "queued"
        assert ann.post(f"/v1/tasks/{task_id}/approve").status_code in (200, 409)
        assert wait_state(ann, task_id, {"done", "failed"})["state"] == "done"

        rejected = ann.post("/v1/tasks", json={"goal": "open the safe [approval]"}).json()["id"]
        wait_state(ann, rejected, {"awaiting_approval"})
        assert ann.post(f"/v1/tasks/{rejected}/reject").status_code == 200
        final = wait_state(ann, rejected, {"done", "failed"})
        tree = ann.get(f"/v1/tasks/{rejected}/tree").json()
        gate = [n for n in tree["nodes"] if n["title"] == "pass the gate"]
        assert gate and "ApprovalRejected" in (gate[0]["error"] or "")
        assert final["state"] in ("done", "failed")


def test_bad_input_gets_clean_4xx(server: tuple[str, Path]) -> None:
    base, _ = server
    with client(base) as ann:
        malformed = ann.post(
            "/v1/tasks", content=b'{"goal": ', headers={"Content-Type": "application/json"}
        )
        assert (
            malformed.status_code == 400 and malformed.json()["error"]["type"] == "malformed_json"
        )
        big = ann.post("/v1/tasks", json={"goal": "x" * 10_000})
        assert big.status_code == 413

        def chunks() -> Iterator[bytes]:
            yield b'{"goal": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}'

        streamed = ann.post(
            "/v1/tasks", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert ann.post("/v1/tasks", json={"goal": "g", "profile": "rm -rf"}).status_code == 422
        assert ann.post("/v1/tasks", json={"goal": "g", "extra": 1}).status_code == 422
        assert ann.post("/v1/tasks", json={"goal": "  "}).status_code == 422
        assert (
            ann.post(
                "/v1/tasks", json={"goal": "g"}, headers={"Idempotency-Key": "bad key!"}
            ).status_code
            == 422
        )
        assert ann.get("/v1/tasks/no-such-task").status_code == 404
        assert ann.get("/v1/tasks/no-such-task/tree").status_code == 404
        assert ann.delete("/v1/reminders/987654").status_code == 404
        # The server is still fine.
        assert httpx.get(f"{base}/readyz").status_code == 200


def test_adapters_admin_only_and_confined_to_roots(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    base, home = server
    outside = tmp_path / "evil"
    outside.mkdir()
    payload = {"name": "cook", "path": str(outside), "description": "cooking", "examples": ["boil"]}
    with client(base) as ann, client(base, ADMIN) as admin:
        assert ann.get("/v1/adapters").json() == []
        assert ann.post("/v1/adapters", json=payload).status_code == 403
        refused = admin.post("/v1/adapters", json=payload)
        assert refused.status_code == 422
        escape = {**payload, "path": str(home / "adapters" / ".." / ".." / "evil")}
        assert admin.post("/v1/adapters", json=escape).status_code == 422
        assert admin.delete("/v1/adapters/cook").status_code == 404
        assert ann.delete("/v1/adapters/cook").status_code == 403


def test_metrics_openapi_and_slow_sse_client(server: tuple[str, Path]) -> None:
    base, _ = server
    with client(base) as ann:
        task_id = ann.post("/v1/tasks", json={"goal": "slow reader"}).json()["id"]
        # A client that opens a stream and stops reading must not hold up any worker.
        slow = httpx.Client(base_url=base, headers=ann.headers, timeout=30)
        with slow.stream("GET", f"/v1/tasks/{task_id}/events") as stream:
            next(stream.iter_raw(16))
            others = [
                ann.post("/v1/tasks", json={"goal": f"meanwhile {i}"}).json()["id"]
                for i in range(3)
            ]
            for other in others:
                assert wait_state(ann, other, {"done"})["state"] == "done"
        slow.close()
        metrics = ann.get("/metrics")
        assert metrics.status_code == 200
        body = metrics.text
        assert 'trellis_tasks{state="done"}' in body
        assert "trellis_queue_depth" in body
        assert 'trellis_llm_latency_seconds_count{adapter="base",stage="act"}' in body
        assert 'trellis_router_decisions_total{adapter="base",out_of_distribution="false"}' in body
        assert "trellis_step_latency_seconds_count" in body
    schema = httpx.get(f"{base}/openapi.json").json()
    assert {"/v1/tasks", "/v1/tasks/{task_id}/events", "/v1/reminders"} <= set(schema["paths"])
