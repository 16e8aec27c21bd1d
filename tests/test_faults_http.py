"""Fault drill over real HTTP: odd inputs answer a clean 4xx in the documented error shape,
users see only what is theirs (task counts, adapter folders), and logs carry no user text.

Runs on PostgreSQL (where NUL characters and 64-bit overflows used to become HTTP 500) and
on SQLite (the single-process default)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_registry import write_adapter
from test_service_http import ADMIN, BOB, client, start_server, stop_server, wait_state

pytestmark = [pytest.mark.slow]

SECRET = "zebra-orchid-7781"
"""A marker in user text; it must never reach the server's log."""


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    home = tmp_path_factory.mktemp("faults-http")
    (home / "adapters").mkdir()
    if request.param == "postgres":
        from test_service_http import _reset

        url = str(request.getfixturevalue("postgres_database_url"))
        _reset(url)
    else:
        url = f"sqlite:///{home}/trellis.db"
    process, base = start_server(url, home, workers=1)
    try:
        yield base, home
    finally:
        stop_server(process)


def _is_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"error"} and {"type", "message"} <= set(body["error"]), body


def test_nul_and_out_of_range_ids_answer_4xx(server: tuple[str, Path]) -> None:
    base, _home = server
    with client(base) as ann:
        _is_error(ann.post("/v1/reminders", json={"text": f"{SECRET}\u0000 no nuts"}), 422)
        _is_error(ann.post("/v1/tasks", json={"goal": f"water\u0000{SECRET}"}), 422)
        _is_error(ann.post("/v1/tasks", json={"goal": "g", "reminders": [f"a\u0000{SECRET}"]}), 422)
        _is_error(ann.post("/v1/tasks", json={"goal": "g", "profile": "demo\u0000"}), 422)
        _is_error(ann.get("/v1/tasks/abc%00def"), 400)
        _is_error(ann.get("/v1/tasks/abc%00def/tree"), 400)
        _is_error(ann.get("/v1/tasks/abc?state=%00"), 400)
        _is_error(ann.get("/v1/tasks/" + "x" * 500), 422)
        _is_error(ann.get("/v1/tasks/a.b"), 422)
        _is_error(ann.delete(f"/v1/reminders/{2**64}"), 422)
        _is_error(ann.delete("/v1/reminders/-5"), 422)
        _is_error(ann.delete(f"/v1/reminders/{2**31 - 1}"), 404)
        _is_error(ann.delete(f"/v1/reminders/{2**31}"), 422)
        _is_error(ann.delete("/v1/adapters/a%00b"), 400)
        task_id = ann.post("/v1/tasks", json={"goal": f"tidy up {SECRET}"}).json()["id"]
        _is_error(ann.get(f"/v1/tasks/{task_id}/events?after={2**70}"), 422)
        wait_state(ann, task_id, {"done"})
        # A Last-Event-ID past 64 bits is clamped, not a 500 or a cut stream.
        with ann.stream(
            "GET", f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": "9" * 40}
        ) as stream:
            assert stream.status_code == 200
            tail = [line for line in stream.iter_lines() if line.startswith("event: ")]
        assert tail[-1] == "event: end"
        # Unknown routes and methods use the same error shape.
        _is_error(ann.get("/v1/nothing-here"), 404)
        _is_error(ann.put("/v1/tasks"), 405)
        _is_error(
            ann.post("/v1/tasks", content=b"{", headers={"Content-Type": "application/json"}), 400
        )
        assert ann.get("/v1/reminders").json() == []  # nothing half-stored
        assert httpx.get(f"{base}/readyz").status_code == 200


def test_metrics_and_adapters_show_a_user_only_theirs(server: tuple[str, Path]) -> None:
    base, home = server
    folder = write_adapter(home / "adapters" / "laundry")
    adapter = {"name": "laundry", "path": str(folder), "description": "sorts laundry",
               "examples": ["fold the shirts"]}  # fmt: skip
    with client(base) as ann, client(base, BOB) as bob, client(base, ADMIN) as admin:
        assert admin.post("/v1/adapters", json=adapter).status_code in (201, 409)
        for_ann = ann.get("/v1/adapters").json()
        assert [a["name"] for a in for_ann] == ["laundry"]
        assert "path" not in for_ann[0] and str(home) not in json.dumps(for_ann)
        assert admin.get("/v1/adapters").json()[0]["path"] == str(folder.resolve())

        mine = [ann.post("/v1/tasks", json={"goal": f"chore {i}"}).json()["id"] for i in range(2)]
        theirs = [bob.post("/v1/tasks", json={"goal": f"job {i}"}).json()["id"] for i in range(3)]
        for task_id in mine:
            wait_state(ann, task_id, {"done"})
        for task_id in theirs:
            wait_state(bob, task_id, {"done"})

        def done(text: str) -> float:
            line = next(x for x in text.splitlines() if x.startswith('trellis_tasks{state="done"}'))
            return float(line.split()[-1])

        ann_done = len([t for t in ann.get("/v1/tasks").json() if t["state"] == "done"])
        bob_done = len([t for t in bob.get("/v1/tasks").json() if t["state"] == "done"])
        assert done(ann.get("/metrics").text) == ann_done
        assert done(bob.get("/metrics").text) == bob_done
        assert done(admin.get("/metrics").text) >= ann_done + bob_done


def test_logs_carry_no_user_text(server: tuple[str, Path]) -> None:
    base, home = server
    with client(base) as ann:
        ann.post("/v1/reminders", json={"text": f"never {SECRET}\u0000"})
        ann.post("/v1/reminders", json={"text": SECRET * 100})
        ann.post("/v1/tasks", json={"goal": SECRET, "profile": f"{SECRET}"})
        ann.post("/v1/tasks", json={"goal": SECRET * 1000})
        task_id = ann.post("/v1/tasks", json={"goal": f"find {SECRET}"}).json()["id"]
        wait_state(ann, task_id, {"done", "failed"})
    time.sleep(0.5)
    logged = (home / "server.log").read_text()
    assert SECRET not in logged
