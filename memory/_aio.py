"""AsyncTaskStore: the TaskStore API for async code, without a second copy of it.

Every :class:`TaskStore` method is available awaitable under the same name and signature
(``await store.get_task(task_id)``); the call runs the synchronous store in a worker thread,
so the event loop never blocks on the database. SQLite admits one writer at a time and an
in-memory database is a single shared connection, so calls on SQLite are serialised;
PostgreSQL calls run concurrently.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from trellis.memory._records import MemoryConfig
from trellis.memory._store import TaskStore

__all__ = ["AsyncTaskStore"]


class AsyncTaskStore:
    """Awaitable twin of :class:`TaskStore`; ``store.sync`` is the wrapped store."""

    def __init__(self, store: TaskStore) -> None:
        self.sync = store
        self._serial = store.engine.dialect.name == "sqlite"
        self._lock: asyncio.Lock | None = None

    @classmethod
    async def open(
        cls, url: str | None = None, *, upgrade: bool = True, config: MemoryConfig | None = None
    ) -> AsyncTaskStore:
        """:meth:`TaskStore.open` off the event loop."""
        store = await asyncio.to_thread(TaskStore.open, url, upgrade=upgrade, config=config)
        return cls(store)

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        call = functools.partial(fn, *args, **kwargs)
        if not self._serial:
            return await asyncio.to_thread(call)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            return await asyncio.to_thread(call)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.sync, name)  # AttributeError names what TaskStore lacks
        if name.startswith("_") or not callable(method):
            raise AttributeError(f"AsyncTaskStore has no awaitable {name!r}")

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(method, *args, **kwargs)

        return call
