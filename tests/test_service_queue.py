"""The service task queue on every supported database: claims, leases, idempotency, cancel."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from trellis.agent.errors import NoPendingApprovalError
from trellis.agent.service._errors import TaskStateError
from trellis.agent.service._queue import QueueState, TaskQueue
from trellis.agent.service._queue_log import EventLog, ReminderBook
from trellis.memory import NotFoundError, UnknownTaskError, make_engine, upgrade


def _queue(url: str, **kwargs: float) -> TaskQueue:
    engine = make_engine(url)
    upgrade(engine)
    return TaskQueue(engine, **kwargs)  # type: ignore[arg-type]


def _submit(queue: TaskQueue, user: str = "ann", key: str | None = None) -> str:
    task_id = uuid.uuid4().hex
    queue.enqueue(task_id, user_id=user, goal="tidy up", profile="demo", idempotency_key=key)
    return task_id


def test_claim_complete_and_idempotency(database_url: str) -> None:
    queue = _queue(database_url)
    first, created = queue.enqueue(
        "t1", user_id="ann", goal="g", profile="demo", reminders=["r"], idempotency_key="k"
    )
    again, created_again = queue.enqueue(
        "t2", user_id="ann", goal="other", profile="demo", idempotency_key="k"
    )
    assert created and not created_again
    assert again.id == first.id == "t1"
    # The key is per user: another user may use the same one.
    other, created_other = queue.enqueue(
        "t3", user_id="bob", goal="g", profile="demo", idempotency_key="k"
    )
    assert created_other and other.id == "t3"

    claimed = queue.claim("w1", limit=5)
    assert [t.id for t in claimed] == ["t1", "t3"]
    assert all(t.state is QueueState.CLAIMED and t.attempts == 1 for t in claimed)
    assert queue.claim("w2") == []
    assert not queue.complete("t1", "w2", QueueState.DONE)  # not the lease owner
    assert queue.complete("t1", "w1", QueueState.DONE, result={"outcome": "success"})
    assert not queue.complete("t1", "w1", QueueState.DONE)  # finishes exactly once
    done = queue.get("t1", user_id="ann")
    assert done.state is QueueState.DONE and done.result == {"outcome": "success"}
    assert done.finished_at is not None
    with pytest.raises(UnknownTaskError):
        queue.get("t1", user_id="bob")
    assert [t.id for t in queue.list("ann")] == ["t1"]
    assert queue.counts()["done"] == 1 and queue.counts()["claimed"] == 1


def test_expired_lease_is_reclaimed_and_old_owner_cannot_finish(database_url: str) -> None:
    queue = _queue(database_url, lease_s=0.2)
    task_id = _submit(queue)
    assert [t.id for t in queue.claim("dead")] == [task_id]
    assert queue.claim("alive") == []
    time.sleep(0.3)
    reclaimed = queue.claim("alive")
    assert [t.attempts for t in reclaimed] == [2]
    held, _ = queue.heartbeat("dead", [task_id])
    assert held == set()
    assert not queue.complete(task_id, "dead", QueueState.DONE)
    assert queue.complete(task_id, "alive", QueueState.DONE)


def test_heartbeat_keeps_the_lease(database_url: str) -> None:
    queue = _queue(database_url, lease_s=0.3)
    task_id = _submit(queue)
    queue.claim("w1")
    for _ in range(4):
        time.sleep(0.12)
        held, cancel = queue.heartbeat("w1", [task_id])
        assert held == {task_id} and cancel == set()
    assert queue.claim("w2") == []


def test_poison_task_fails_after_max_attempts(database_url: str) -> None:
    queue = _queue(database_url, lease_s=0.05, max_attempts=2)
    task_id = _submit(queue)
    for _ in range(2):
        assert queue.claim("w")
        time.sleep(0.08)
    assert queue.claim("w") == []
    task = queue.get(task_id)
    assert task.state is QueueState.FAILED and "gave up after 2 claims" in (task.error or "")


def test_cancel_release_and_approval(database_url: str) -> None:
    queue = _queue(database_url)
    queued = _submit(queue)
    assert queue.cancel(queued, user_id="ann").state is QueueState.CANCELLED
    with pytest.raises(TaskStateError):
        queue.cancel(queued, user_id="ann")
    with pytest.raises(UnknownTaskError):
        queue.cancel(queued, user_id="bob")

    running = _submit(queue)
    queue.claim("w1")
    assert queue.cancel(running, user_id="ann").state is QueueState.CLAIMED
    assert queue.heartbeat("w1", [running]) == ({running}, {running})
    assert queue.complete(running, "w1", QueueState.CANCELLED)

    paused = _submit(queue)
    queue.claim("w1")
    with pytest.raises(NoPendingApprovalError):
        queue.decide(paused, user_id="ann", approved=True)
    approval = {"skill": "unlock", "args": {}}
    assert queue.complete(paused, "w1", QueueState.AWAITING_APPROVAL, approval=approval)
    assert queue.get(paused).approval == approval
    assert queue.decide(paused, user_id="ann", approved=False).state is QueueState.QUEUED
    resumed = queue.claim("w2")
    assert resumed[0].decision == {"approved": False}

    handed_back = _submit(queue)
    queue.claim("w3")
    assert queue.release(handed_back, "w3")
    again = queue.claim("w4")
    assert again[0].id == handed_back and again[0].attempts == 1


def test_concurrent_claims_never_share_a_task(postgres_url: str) -> None:
    queue = _queue(postgres_url)
    ids = {_submit(queue) for _ in range(60)}
    taken: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            got = queue.claim(name, limit=2)
            if not got:
                return
            with lock:
                taken.extend(t.id for t in got)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)


def test_event_log_and_reminders(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    log = EventLog(engine)
    log.append([("a", "task_started", {"n": i}) for i in range(3)])
    log.append([("b", "task_started", {"n": 9})])
    events = log.read("a")
    assert [e.payload["n"] for e in events] == [0, 1, 2]
    assert [e.payload["n"] for e in log.read("a", after=events[0].id)] == [1, 2]
    book = ReminderBook(engine, max_per_user=2)
    first = book.add("ann", " no nuts ")
    book.add("ann", "quiet after 9")
    with pytest.raises(Exception, match="already have 2"):
        book.add("ann", "third")
    assert [r.text for r in book.list("ann")] == ["no nuts", "quiet after 9"]
    assert book.list("bob") == []
    with pytest.raises(NotFoundError):
        book.remove("bob", first.id)
    book.remove("ann", first.id)
    assert [r.text for r in book.list("ann")] == ["quiet after 9"]


SERVICE_TABLES = {"service_tasks", "service_events", "service_reminders"}


def test_migration_matches_the_models(database_url: str) -> None:
    from _schema import migration_drift
    from sqlalchemy import inspect

    engine = make_engine(database_url)
    upgrade(engine)
    assert set(inspect(engine).get_table_names()) >= SERVICE_TABLES
    assert migration_drift(engine, SERVICE_TABLES) == []
