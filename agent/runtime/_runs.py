"""A run's plumbing between its loop thread and the async consumer: the event pipe, and
the turns runs take on a database that serves one run at a time."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from collections.abc import AsyncIterator

from trellis.agent.runtime._events import EventBase

__all__ = ["EventPipe", "Turn", "wait_all"]


class EventPipe:
    """Events from the run's thread to the async consumer.

    The thread buffers events and wakes the event loop only on :meth:`flush` (the loop
    flushes before it waits on a model, a skill or a human, and after every superstep):
    a wake-up per event cost the run more than the events themselves.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: deque[EventBase | None] = deque()  # appends and pops are thread-safe
        self._wake = asyncio.Event()
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, event: EventBase) -> None:
        self._pending.append(event)

    def flush(self) -> None:
        if not self._pending:
            return
        with self._lock:
            if self._scheduled:
                return  # the consumer has not drained yet: it will see these too
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._wake.set)

    def close(self) -> None:
        """The run ended: deliver everything, then end :meth:`events`."""
        self._pending.append(None)
        self.flush()

    async def events(self) -> AsyncIterator[EventBase]:
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                self._scheduled = False  # a flush from now on schedules another wake
            while self._pending:
                event = self._pending.popleft()
                if event is None:
                    return
                yield event


class Turn:
    """One run's place among an agent's runs: registered when made, gone when it ends."""

    _numbers = itertools.count()

    def __init__(self, runs: dict[int, threading.Event]) -> None:
        self._runs = runs
        self._number = next(Turn._numbers)
        self.done = runs[self._number] = threading.Event()

    def end(self) -> None:
        """The run ended (or never started); idempotent."""
        self._runs.pop(self._number, None)
        self.done.set()


def wait_all(events: list[threading.Event]) -> None:
    """Block until every one of ``events`` is set."""
    for event in events:
        event.wait()
