"""Workers in-process on SQLite (the single-process default) and PostgreSQL; settings."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from trellis.agent.service._errors import ServiceConfigError, UnknownProfileError
from trellis.agent.service._metrics import ServiceMetrics
from trellis.agent.service._profiles import get_profile
from trellis.agent.service._queue import QueueState, TaskQueue
from trellis.agent.service._queue_log import EventLog
from trellis.agent.service._runtime import JsonFormatter, open_database
from trellis.agent.service._settings import ServiceSettings
from trellis.agent.service._worker import WorkerPool
from trellis.memory import TaskStatus, TaskStore

TOKEN = "tok-0123456789abcdef"


def _settings(url: str, tmp_path: Path, **extra: object) -> ServiceSettings:
    return ServiceSettings(
        database_url=url,
        tokens={TOKEN: "ann"},
        workers=2,
        poll_s=0.05,
        demo={"steps": 2, "effects_dir": tmp_path / "effects"},
        **extra,  # type: ignore[arg-type]
    )


def _submit(settings: ServiceSettings, store: TaskStore, queue: TaskQueue, goal: str) -> str:
    task = store.create_task(goal, user_id="ann", metadata={"reminders": []})
    queue.enqueue(task.id, user_id="ann", goal=goal, profile=settings.default_profile)
    return task.id


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(60):
        while not predicate():  # noqa: ASYNC110 - polls the database, nothing to wait on
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_pool_runs_tasks_approvals_and_cancels(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path}/trellis.db"
        if kind == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    settings = _settings(url, tmp_path)
    engine = open_database(settings)
    store, queue = TaskStore(engine), TaskQueue(engine)
    metrics = ServiceMetrics(queue.counts)
    pool = WorkerPool(settings, engine, metrics=metrics)
    plain = [_submit(settings, store, queue, f"chore {i}") for i in range(3)]
    gated = _submit(settings, store, queue, "open the door [approval]")
    runner = asyncio.create_task(pool.run())
    try:
        await _until(lambda: all(queue.get(t).state is QueueState.DONE for t in plain))
        await _until(lambda: queue.get(gated).state is QueueState.AWAITING_APPROVAL)
        assert queue.get(gated).approval["skill"] == "demo_gate"  # type: ignore[index]
        queue.decide(gated, user_id="ann", approved=True)
        await _until(lambda: queue.get(gated).state is QueueState.DONE)
        assert queue.get(gated).attempts == 2

        waiting = _submit(settings, store, queue, "another door [approval]")
        await _until(lambda: queue.get(waiting).state is QueueState.AWAITING_APPROVAL)
        assert queue.cancel(waiting, user_id="ann").state is QueueState.CANCELLED
    finally:
        pool.stop()
        handed_back = await runner
        await pool.close()
    assert handed_back == []
    for task_id in [*plain, gated]:
        assert store.get_task(task_id).status is TaskStatus.DONE
        kinds = [e.type for e in EventLog(engine).read(task_id, limit=500)]
        assert kinds[0] == "task_started" and "task_finished" in kinds
    effects = [
        json.loads(line)["task_id"]
        for line in (tmp_path / "effects" / "effects.jsonl").read_text().splitlines()
    ]
    assert sorted(effects) == sorted([*plain, gated])
    text = metrics.render().decode()
    assert 'trellis_tasks{state="done"} 4.0' in text
    assert 'trellis_tasks_finished_total{outcome="success"}' in text


def test_settings_refuse_no_tokens_and_read_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ServiceConfigError, match="refuses to run open"):
        ServiceSettings().user_tokens()
    with pytest.raises(ServiceConfigError, match="at least 16"):
        ServiceSettings(tokens={"short": "ann"}).user_tokens()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# token user\n" + TOKEN + " bob\n")
    config = tmp_path / "service.toml"
    config.write_text(f'workers = 7\nlease_s = 9.5\ntokens_file = "{tokens}"\n')
    monkeypatch.setenv("TRELLIS_LEASE_S", "12")
    settings = ServiceSettings.load(config, workers=3)
    assert settings.workers == 3  # flag beats file
    assert settings.lease_s == 12  # environment beats file
    assert settings.user_tokens() == {TOKEN: "bob"}
    assert TOKEN not in repr(settings)
    with pytest.raises(ServiceConfigError, match="default_profile"):
        ServiceSettings.load(None, default_profile="twc")
    with pytest.raises(UnknownProfileError, match="this service runs: demo"):
        get_profile("twc", ServiceSettings())


def test_json_logs_carry_extra_fields() -> None:
    record = logging.LogRecord("trellis.worker", logging.INFO, "x", 1, "task claimed", None, None)
    record.task_id = "abc"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "task claimed" and line["task_id"] == "abc"
    assert line["level"] == "INFO"
