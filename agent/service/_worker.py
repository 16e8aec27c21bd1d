"""Workers: N concurrent task loops per process, claiming from the shared queue.

Each loop claims one task at a time and drives it with the profile's :class:`~agent.Agent`
(``stream_resume``: a fresh task starts, a task whose worker died continues from its
LangGraph checkpoint, an approved task continues past its interrupt). One heartbeat loop
extends the leases of every task this process runs; a lease found taken over means another
worker owns the task now, and this process's result is discarded by the queue. On stop
(SIGTERM) the loops stop claiming, running tasks get ``shutdown_grace_s`` to finish, and the
leases of those still running are shortened so another worker resumes them right after this
process has exited (checkpoints are written after every step).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from langgraph.types import Command
from sqlalchemy import Engine

from trellis.agent.errors import ApprovalPendingError
from trellis.agent.runtime._events import EventBase, TaskFinished
from trellis.agent.runtime._sdk import Agent
from trellis.agent.service._metrics import ServiceMetrics
from trellis.agent.service._profiles import get_profile
from trellis.agent.service._queue import QueuedTask, QueueState, TaskQueue
from trellis.agent.service._queue_log import EventLog
from trellis.agent.service._runtime import database_lock
from trellis.agent.service._settings import ServiceSettings
from trellis.memory import TaskStatus, TaskStore
from trellis.memory.errors import ModelRetry, UsageError

__all__ = ["WorkerPool", "worker_id"]

log = logging.getLogger("trellis.worker")

_FLUSH_S = 0.2


def worker_id() -> str:
    """A name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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
        self.queue = TaskQueue(engine, lease_s=settings.lease_s, max_attempts=settings.max_attempts)
        self.events = EventLog(engine)
        self.store = TaskStore(engine)
        self.metrics = metrics or ServiceMetrics()
        self.owner = owner or worker_id()
        # One agent per loop: each holds its own checkpointer connection, which serialises
        # its users behind a lock; shared by several loops it caps a process at one loop.
        self._agents: dict[tuple[str, int], Agent] = {}
        self._agent_lock = asyncio.Lock()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()
        self._cancel: set[str] = set()
        self._stop = asyncio.Event()
        self._step_started: dict[Any, float] = {}

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
            await asyncio.to_thread(self.queue.release, task_id, self.owner, delay_s=2.0)
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

    # --- loops ---------------------------------------------------------------------------

    async def _loop(self, index: int) -> None:
        while not self._stop.is_set():
            try:
                claimed = await asyncio.to_thread(self.queue.claim, self.owner, limit=1)
            except Exception:
                log.exception("claim failed; retrying", extra={"owner": self.owner})
                claimed = []
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self.settings.poll_s)
                continue
            task = claimed[0]
            self.metrics.claims.inc()
            run = asyncio.current_task()
            if run is not None:
                self._running[task.id] = run
            try:
                await self._run_one(task, index)
            except Exception:
                log.exception("task loop error", extra={"task_id": task.id, "loop": index})
            finally:
                self._running.pop(task.id, None)
                self._lost.discard(task.id)
                self._cancel.discard(task.id)

    async def _heartbeat(self) -> None:
        every = self.settings.heartbeat_s or self.settings.lease_s / 3
        while True:
            await asyncio.sleep(every)
            ids = list(self._running)
            if not ids:
                continue
            try:
                held, cancel = await asyncio.to_thread(self.queue.heartbeat, self.owner, ids)
            except Exception:
                log.exception("heartbeat failed", extra={"owner": self.owner})
                continue
            for task_id in set(ids) - held:
                if task_id in self._running and task_id not in self._lost:
                    self._lost.add(task_id)
                    self.metrics.leases_lost.inc()
                    log.warning("lease lost", extra={"task_id": task_id, "owner": self.owner})
            self._cancel.update(cancel)

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

    async def _run_one(self, task: QueuedTask, index: int) -> None:
        started = time.perf_counter()
        log.info(
            "task claimed",
            extra={"task_id": task.id, "attempt": task.attempts, "profile": task.profile},
        )
        buffer: list[tuple[str, str, dict[str, Any]]] = []
        last_flush = time.monotonic()
        finished: TaskFinished | None = None
        error: str | None = None
        agent: Agent | None = None
        try:
            agent = await self._agent(task.profile, index)
        except Exception:
            # Not the task's fault: hand it back (the claim still counts towards max_attempts).
            log.exception("could not build the agent", extra={"profile": task.profile})
            await asyncio.to_thread(self.queue.release, task.id, self.owner, count_attempt=True)
            await asyncio.sleep(self.settings.poll_s * 10)
            return
        try:
            command: Command[Any] | None = (
                Command(resume=task.decision) if task.decision is not None else None
            )
            async for event in agent.stream_resume(task.id, command=command):
                self._observe(event)
                buffer.append((task.id, event.type, event.model_dump(mode="json")))
                if isinstance(event, TaskFinished):
                    finished = event
                if time.monotonic() - last_flush > _FLUSH_S:
                    await asyncio.to_thread(self.events.append, buffer)
                    buffer, last_flush = [], time.monotonic()
        except ApprovalPendingError:
            pass  # reclaimed while waiting for a decision: record the wait again below
        except (UsageError, ModelRetry) as exc:
            log.exception("run failed", extra={"task_id": task.id})
            error = f"{type(exc).__name__}: {exc}"
        except Exception:
            # Infrastructure (a database or server hiccup): let a worker try again from the
            # checkpoint; max_attempts bounds the retries.
            log.exception("run interrupted; handing the task back", extra={"task_id": task.id})
            if buffer:
                await asyncio.to_thread(self.events.append, buffer)
            await asyncio.to_thread(self.queue.release, task.id, self.owner, count_attempt=True)
            return
        if buffer:
            await asyncio.to_thread(self.events.append, buffer)
        await asyncio.to_thread(self._settle, task, agent, finished, error)
        log.info(
            "task settled",
            extra={
                "task_id": task.id,
                "outcome": finished.outcome if finished else "error",
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

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
    ) -> None:
        if task.id in self._lost:
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
