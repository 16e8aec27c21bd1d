"""AsyncTaskStore: the TaskStore API for async code (the LangGraph loop, the service).

Each call runs the synchronous store in a worker thread, so the event loop never blocks on
the database. SQLite admits one writer at a time and an in-memory database is a single
shared connection, so calls on SQLite are serialised; PostgreSQL calls run concurrently.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import networkx as nx

from trellis.memory._context import PromptContext
from trellis.memory._records import (
    EventRecord,
    MemoryConfig,
    NodeRecord,
    NodeSpec,
    NodeStatus,
    TaskRecord,
    TaskStatus,
)
from trellis.memory._store import TaskStore

__all__ = ["AsyncTaskStore"]

P = ParamSpec("P")
T = TypeVar("T")


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

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        call = functools.partial(fn, *args, **kwargs)
        if not self._serial:
            return await asyncio.to_thread(call)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            return await asyncio.to_thread(call)

    async def close(self) -> None:
        await self._call(self.sync.close)

    async def create_task(
        self, goal: str, user_id: str = "default", metadata: dict[str, Any] | None = None
    ) -> TaskRecord:
        return await self._call(self.sync.create_task, goal, user_id, metadata)

    async def get_task(self, task_id: str) -> TaskRecord:
        return await self._call(self.sync.get_task, task_id)

    async def list_tasks(
        self, user_id: str | None = None, status: TaskStatus | str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        return await self._call(self.sync.list_tasks, user_id, status, limit)

    async def set_task_status(
        self,
        task_id: str,
        status: TaskStatus | str,
        *,
        cause: str | None = None,
        expected_version: int | None = None,
    ) -> TaskRecord:
        return await self._call(
            self.sync.set_task_status,
            task_id,
            status,
            cause=cause,
            expected_version=expected_version,
        )

    async def root(self, task_id: str) -> NodeRecord:
        return await self._call(self.sync.root, task_id)

    async def get_node(self, node_id: int) -> NodeRecord:
        return await self._call(self.sync.get_node, node_id)

    async def nodes(self, task_id: str, *, include_superseded: bool = False) -> list[NodeRecord]:
        return await self._call(self.sync.nodes, task_id, include_superseded=include_superseded)

    async def children(self, node_id: int, *, include_superseded: bool = False) -> list[NodeRecord]:
        return await self._call(self.sync.children, node_id, include_superseded=include_superseded)

    async def active_path(self, node_id: int) -> list[NodeRecord]:
        return await self._call(self.sync.active_path, node_id)

    async def ready_nodes(self, task_id: str, *, limit: int | None = None) -> list[NodeRecord]:
        return await self._call(self.sync.ready_nodes, task_id, limit=limit)

    async def topological_order(self, task_id: str) -> list[NodeRecord]:
        return await self._call(self.sync.topological_order, task_id)

    async def events(
        self,
        task_id: str,
        *,
        node_id: int | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[EventRecord]:
        return await self._call(
            self.sync.events, task_id, node_id=node_id, after_id=after_id, limit=limit
        )

    async def to_networkx(self, task_id: str, *, include_superseded: bool = False) -> nx.DiGraph:
        return await self._call(
            self.sync.to_networkx, task_id, include_superseded=include_superseded
        )

    async def to_mermaid(self, task_id: str, *, include_superseded: bool = False) -> str:
        return await self._call(
            self.sync.to_mermaid, task_id, include_superseded=include_superseded
        )

    async def build_context(
        self,
        node_id: int,
        budget_chars: int | None = 2000,
        *,
        budget_tokens: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> PromptContext:
        return await self._call(
            self.sync.build_context,
            node_id,
            budget_chars,
            budget_tokens=budget_tokens,
            count_tokens=count_tokens,
        )

    async def add_children(
        self, task_id: str, parent_id: int, specs: Sequence[NodeSpec], *, cause: str | None = None
    ) -> list[NodeRecord]:
        return await self._call(self.sync.add_children, task_id, parent_id, specs, cause=cause)

    async def add_dependency(
        self, node_id: int, depends_on_id: int, *, cause: str | None = None
    ) -> NodeRecord:
        return await self._call(self.sync.add_dependency, node_id, depends_on_id, cause=cause)

    async def replace_subtree(
        self, node_id: int, specs: Sequence[NodeSpec], *, cause: str | None = "replan"
    ) -> list[NodeRecord]:
        return await self._call(self.sync.replace_subtree, node_id, specs, cause=cause)

    async def transition(
        self,
        node_id: int,
        status: NodeStatus | str,
        expected_version: int | None = None,
        cause: str | None = None,
        output: Any = None,
        error: str | None = None,
        adapter: str | None = None,
        route: Any = None,
    ) -> NodeRecord:
        return await self._call(
            self.sync.transition,
            node_id,
            status,
            expected_version,
            cause,
            output,
            error,
            adapter,
            route,
        )

    async def update_node(self, node_id: int, **changes: Any) -> NodeRecord:
        """:meth:`TaskStore.update_node` (same keyword arguments)."""
        return await self._call(self.sync.update_node, node_id, **changes)
