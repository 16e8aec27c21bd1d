"""Workers: N concurrent task loops per process, claiming from the shared queue.

Each loop claims one task at a time and drives it with the profile's :class:`~agent.Agent`
(``stream_resume``: a fresh task starts, a task whose worker died continues from its
LangGraph checkpoint, an approved task continues past its interrupt). One heartbeat loop
extends the leases of every task this process runs; a lease found taken over means another
worker owns the task now, and this process's result is discarded by the queue. On stop
(SIGTERM) the loops stop claiming, running tasks get ``shutdown_grace_s`` to finish, and the
leases of those still running are shortened so another worker resumes them right after this
process has exited (checkpoints are written after every step).

Lease fencing: every run checks its lease before each stage, skill call and outcome write
(a cheap local check, a database round trip once the last confirmation is older than half
a lease), and its events are appended only while the lease is held, in the same
transaction. A worker that was paused past its lease therefore stops at its next step and
adds nothing more to a task another worker took over.

A lost database: a run rides out short drops itself (``DatabaseConfig.retry_s``); a longer
outage hands the task back, without counting the attempt, as soon as the database answers
again, and the loops keep claiming with backoff meanwhile (no restart needed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from langgraph.types import Command
from sqlalchemy import Engine

from trellis.agent.errors import ApprovalPendingError
from trellis.agent.runtime import Agent, AgentEvent, EventBase, TaskFinished
from trellis.agent.service._errors import LeaseLostError
from trellis.agent.service._metrics import ServiceMetrics
from trellis.agent.service._profiles import get_profile
from trellis.agent.service._queue import QueuedTask, QueueState, TaskQueue
from trellis.agent.service._runtime import database_lock
from trellis.agent.service._settings import ServiceSettings
from trellis.memory import (
    DatabaseUnavailable,
    TaskStatus,
    TaskStore,
    describe_db_error,
    is_transient,
    retry_transient,
    wait_until_reachable,
)
from trellis.memory.errors import ModelRetry, UsageError

__all__ = ["WorkerPool", "worker_id"]

log = logging.getLogger("trellis.worker")

_FLUSH_S = 0.2
_MAX_BACKOFF_S = 5.0
T = TypeVar("T")


def worker_id() -> str:
    """A name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class _Lease:
    """A claimed task's lease as this process knows it: the fence its run checks."""

    def __init__(self, queue: TaskQueue, task_id: str, owner: str, confirmed: float) -> None:
        self.queue = queue
        self.task_id = task_id
        self.owner = owner
        self.confirmed = confirmed
        """``time.monotonic()`` before the last claim, heartbeat or renewal that held it."""
        self.trust_s = queue.lease.total_seconds() / 2
        self.lost = False

    def check(self) -> None:
        """Raise LeaseLostError once another worker may own the task (run's thread)."""
        if self.lost:
            raise LeaseLostError(self.task_id, self.owner)
        if time.monotonic() - self.confirmed < self.trust_s:
            return
        # Paused, or heartbeats failing: ask the database (and extend the lease if held).
        asked = time.monotonic()
        if not retry_transient(
            functools.partial(self.queue.renew, self.task_id, self.owner), engine=self.queue.engine
        ):
            self.lost = True
            raise LeaseLostError(self.task_id, self.owner)
        self.confirmed = max(self.confirmed, asked)


class WorkerPool:
    """The task loops of one process."""

    def __init__(
        self,
        settings: ServiceSettings,
        engine: Engine,
        *,
        metrics: ServiceMetrics | None = None,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.queue = TaskQueue(engine, lease_s=settings.lease_s, max_attempts=settings.max_attempts)
        self.store = TaskStore(engine)
        self.metrics = metrics or ServiceMetrics()
        self.owner = owner or worker_id()
        # One agent per loop: each holds its own checkpointer connection, which serialises
        # its users behind a lock; shared by several loops it caps a process at one loop.
        self._agents: dict[tuple[str, int], Agent] = {}
        self._agent_lock = asyncio.Lock()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._leases: dict[str, _Lease] = {}
        self._cancel: set[str] = set()
        self._stop = asyncio.Event()
        self._step_started: dict[Any, float] = {}
        self.database_down_since: float | None = None
        """``time.monotonic()`` when the database stopped answering this process (None: it
        answers); ``/readyz`` reports not ready meanwhile."""

    def stop(self) -> None:
        """Stop claiming; :meth:`run` then winds down (safe to call from a signal handler)."""
        self._stop.set()

    @property
    def running(self) -> list[str]:
        """Tasks this process is driving now."""
        return list(self._running)

    async def run(self) -> list[str]:
        """Run the loops until :meth:`stop`; returns the tasks handed back unfinished."""
        count = self.settings.workers
        loop = asyncio.get_running_loop()
        # Every run drives its graph in a thread; the default pool is too small on small CPUs.
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=2 * count + 4, thread_name_prefix="trellis-run"
        )
        loop.set_default_executor(executor)
        log.info("worker started", extra={"owner": self.owner, "loops": count})
        loops = [asyncio.create_task(self._loop(i)) for i in range(count)]
        heartbeat = asyncio.create_task(self._heartbeat())
        await self._stop.wait()
        log.info("worker stopping", extra={"owner": self.owner, "running": self.running})
        _, pending = await asyncio.wait(
            [asyncio.ensure_future(t) for t in loops], timeout=self.settings.shutdown_grace_s
        )
        handed_back = list(self._running)
        for task_id in handed_back:
            # The run's thread cannot be interrupted; let the lease lapse just after this
            # process exits so the next worker resumes from the last checkpoint.
            try:
                await asyncio.to_thread(self.queue.release, task_id, self.owner, delay_s=2.0)
            except Exception as exc:  # the database is gone: the lease lapses by itself
                log.warning("hand-back failed", extra={"task_id": task_id, **_why(exc)})
        heartbeat.cancel()
        for task in pending:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        log.info("worker stopped", extra={"owner": self.owner, "handed_back": handed_back})
        return handed_back

    async def close(self) -> None:
        """Release the agents' connections."""
        for agent in self._agents.values():
            await asyncio.to_thread(agent.loop_graph.close)
        self._agents.clear()

    # --- database ------------------------------------------------------------------------

    async def _db(self, call: Callable[[], T]) -> T:
        """A queue call off the event loop, retried while the connection drops."""
        return await asyncio.to_thread(retry_transient, call, engine=self.engine)

    def _database_failed(self, exc: BaseException) -> None:
        if self.database_down_since is None:
            self.database_down_since = time.monotonic()
            log.warning("database unavailable", extra={"owner": self.owner, **_why(exc)})

    def _database_answers(self) -> None:
        if self.database_down_since is not None:
            down = time.monotonic() - self.database_down_since
            self.database_down_since = None
            log.info("database back", extra={"owner": self.owner, "down_s": round(down, 1)})

    async def _wait_for_database(self) -> bool:
        """Until the database answers (True), or the pool stops (False)."""
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(wait_until_reachable, self.engine, budget_s=5.0)
            except DatabaseUnavailable as exc:
                self._database_failed(exc)
                continue
            self._database_answers()
            return True
        return False

    # --- loops ---------------------------------------------------------------------------

    async def _loop(self, index: int) -> None:
        failures = 0
        while not self._stop.is_set():
            asked = time.monotonic()
            try:
                claimed = await asyncio.to_thread(self.queue.claim, self.owner, limit=1)
            except Exception as exc:
                failures += 1
                if is_transient(exc):
                    self._database_failed(exc)
                else:
                    log.exception("claim failed; retrying", extra={"owner": self.owner})
                delay = min(self.settings.poll_s * 2**failures, _MAX_BACKOFF_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                continue
            failures = 0
            self._database_answers()
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self.settings.poll_s)
                continue
            task = claimed[0]
            self.metrics.claims.inc()
            run = asyncio.current_task()
            if run is not None:
                self._running[task.id] = run
            lease = _Lease(self.queue, task.id, self.owner, asked)
            self._leases[task.id] = lease
            try:
                await self._run_one(task, index, lease)
            except Exception:
                log.exception("task loop error", extra={"task_id": task.id, "loop": index})
            finally:
                self._running.pop(task.id, None)
                self._leases.pop(task.id, None)
                self._cancel.discard(task.id)

    async def _heartbeat(self) -> None:
        every = self.settings.heartbeat_s or self.settings.lease_s / 3
        while True:
            await asyncio.sleep(every)
            ids = list(self._running)
            if not ids:
                continue
            asked = time.monotonic()
            try:
                held, cancel = await asyncio.to_thread(self.queue.heartbeat, self.owner, ids)
            except Exception as exc:
                if is_transient(exc):
                    self._database_failed(exc)
                else:
                    log.exception("heartbeat failed", extra={"owner": self.owner})
                continue
            for task_id in ids:
                lease = self._leases.get(task_id)
                if lease is None:
                    continue
                if task_id in held:
                    lease.confirmed = max(lease.confirmed, asked)
                else:
                    self._lose(lease)
            self._cancel.update(cancel)

    def _lose(self, lease: _Lease) -> None:
        if not lease.lost:
            lease.lost = True
        if not getattr(lease, "counted", False):
            lease.counted = True  # type: ignore[attr-defined]
            self.metrics.leases_lost.inc()
            log.warning("lease lost", extra={"task_id": lease.task_id, "owner": self.owner})

    async def _agent(self, profile: str, index: int) -> Agent:
        async with self._agent_lock:
            if (profile, index) not in self._agents:
                spec = get_profile(profile, self.settings)

                def build() -> Agent:
                    # Opening an agent sets up checkpoint tables: one process at a time.
                    with database_lock(self.store.engine):
                        return spec.build(self.settings, self.store)

                self._agents[profile, index] = await asyncio.to_thread(build)
            return self._agents[profile, index]

    async def _run_one(self, task: QueuedTask, index: int, lease: _Lease) -> None:
        started = time.perf_counter()
        log.info(
            "task claimed",
            extra={"task_id": task.id, "attempt": task.attempts, "profile": task.profile},
        )
        buffer: list[tuple[str, dict[str, Any]]] = []
        last_flush = time.monotonic()
        finished: TaskFinished | None = None
        error: str | None = None
        agent: Agent | None = None
        try:
            agent = await self._agent(task.profile, index)
        except Exception as exc:
            if is_transient(exc):
                await self._outage(task, lease, [], exc)
                return
            # Not the task's fault: hand it back (the claim still counts towards max_attempts).
            log.exception("could not build the agent", extra={"profile": task.profile})
            await self._db(
                functools.partial(self.queue.release, task.id, self.owner, count_attempt=True)
            )
            await asyncio.sleep(self.settings.poll_s * 10)
            return
        command: Command[Any] | None = (
            Command(resume=task.decision) if task.decision is not None else None
        )
        events: AsyncIterator[AgentEvent] = agent.stream_resume(
            task.id, command=command, fence=lease.check
        )
        try:
            async for event in events:
                self._observe(event)
                buffer.append((event.type, event.model_dump(mode="json")))
                if isinstance(event, TaskFinished):
                    finished = event
                if time.monotonic() - last_flush > _FLUSH_S:
                    await self._append(task, lease, buffer)
                    buffer, last_flush = [], time.monotonic()
        except LeaseLostError:
            self._lose(lease)
            log.warning("run stopped: another worker owns the task", extra={"task_id": task.id})
            return  # nothing more is written for this task by this process
        except ApprovalPendingError:
            pass  # reclaimed while waiting for a decision: record the wait again below
        except (UsageError, ModelRetry) as exc:
            log.exception("run failed", extra={"task_id": task.id})
            error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            if is_transient(exc):
                await self._outage(task, lease, buffer, exc)
                return
            # Infrastructure (a server hiccup): let a worker try again from the checkpoint;
            # max_attempts bounds the retries.
            log.exception("run interrupted; handing the task back", extra={"task_id": task.id})
            with contextlib.suppress(LeaseLostError):
                await self._append(task, lease, buffer)
            await self._db(
                functools.partial(self.queue.release, task.id, self.owner, count_attempt=True)
            )
            return
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        try:
            await self._append(task, lease, buffer)
        except LeaseLostError:
            return
        await self._db(functools.partial(self._settle, task, agent, finished, error, lease))
        log.info(
            "task settled",
            extra={
                "task_id": task.id,
                "outcome": finished.outcome if finished else "error",
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    async def _append(
        self, task: QueuedTask, lease: _Lease, buffer: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """Append events while the lease is held; LeaseLostError (and the run stops at its
        next fence) when it is not."""
        if not buffer:
            return
        if lease.lost or not await self._db(
            functools.partial(self.queue.append_events, task.id, self.owner, list(buffer))
        ):
            self._lose(lease)
            raise LeaseLostError(task.id, self.owner)

    async def _outage(
        self,
        task: QueuedTask,
        lease: _Lease,
        buffer: list[tuple[str, dict[str, Any]]],
        exc: BaseException,
    ) -> None:
        """The database stayed away longer than a run waits: once it answers again, hand
        the task back without counting the attempt (it was not the task's fault)."""
        self._database_failed(exc)
        log.warning(
            "run paused by a database outage; the task is handed back when it returns",
            extra={"task_id": task.id, **_why(exc)},
        )
        if not await self._wait_for_database():
            return  # shutting down: the lease lapses and another worker resumes the task
        try:
            await self._append(task, lease, buffer)
            await self._db(functools.partial(self.queue.release, task.id, self.owner))
        except LeaseLostError:
            pass  # another worker already has it
        except Exception as again:
            log.warning("hand-back failed", extra={"task_id": task.id, **_why(again)})

    def _observe(self, event: EventBase) -> None:
        try:
            self.metrics.observe(event, self._step_started)
        except Exception:  # metrics never break a run
            log.exception("metrics update failed")

    def _settle(
        self,
        task: QueuedTask,
        agent: Agent | None,
        finished: TaskFinished | None,
        error: str | None,
        lease: _Lease,
    ) -> None:
        if lease.lost:
            return  # another worker owns it now; its result is the one that counts
        pending = agent.pending_approval(task.id) if agent is not None and error is None else None
        if task.id in self._cancel and (finished is None or finished.outcome == "interrupted"):
            if self.queue.complete(task.id, self.owner, QueueState.CANCELLED):
                self.store.set_task_status(task.id, TaskStatus.CANCELLED, cause="cancelled")
            return
        if pending is not None:
            self.queue.complete(
                task.id,
                self.owner,
                QueueState.AWAITING_APPROVAL,
                result=finished.model_dump(mode="json") if finished else None,
                approval=pending,
            )
            return
        if finished is not None and error is None:
            state = QueueState.DONE if finished.success else QueueState.FAILED
            self.queue.complete(
                task.id,
                self.owner,
                state,
                result=finished.model_dump(mode="json"),
                error=None if finished.success else f"{finished.outcome}: {finished.reason}",
            )
            return
        self.queue.complete(
            task.id, self.owner, QueueState.FAILED, error=error or "the run ended without a result"
        )


def _why(exc: BaseException) -> dict[str, str]:
    """Log fields of a failure that carry no user text: its class and, for a database
    failure, the driver's own short message."""
    return {"error": describe_db_error(exc) if is_transient(exc) else type(exc).__name__}
