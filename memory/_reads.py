"""The read side of :class:`memory.TaskStore`: snapshots, the ready set, graph views and
prompt context. Every read runs in one short transaction and returns frozen records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import networkx as nx
from sqlalchemy import Connection, Engine, RowMapping, or_, select

from trellis.memory._context import PromptContext, synthesize
from trellis.memory._graph import mermaid, networkx_graph, topological
from trellis.memory._records import (
    SATISFIED,
    EventRecord,
    MemoryConfig,
    NodeRecord,
    NodeStatus,
    TaskRecord,
    TaskStatus,
)
from trellis.memory._rows import (
    EDGES,
    EVENTS,
    NODES,
    TASKS,
    chunks,
    dependencies_of,
    event_record,
    fetch_node_rows,
    node_record,
    one_of,
    records_for,
    task_record,
)
from trellis.memory._tree import ancestor_ids, finishing_after
from trellis.memory.errors import UnknownNodeError, UnknownTaskError, UsageError

__all__ = ["TaskReads", "parse_task_status"]

_OPEN = (NodeStatus.PENDING.value, NodeStatus.READY.value)

# Equalities, not IN lists: SQLAlchemy re-renders an IN list at every execution, while the
# statement cache serves a query of plain comparisons whole (these run every step).
_IS_OPEN = or_(*(NODES.c.status == status for status in _OPEN))
_SATISFIED = tuple(s.value for s in SATISFIED)
_DEP = NODES.alias("dep")
# "Some dependency of the node is unfinished", built once: building the alias and the
# subquery per call cost more than running the query (the ready set is read every step).
_BLOCKED = (
    select(EDGES.c.node_id)
    .join(_DEP, _DEP.c.id == EDGES.c.depends_on_id)
    .where(EDGES.c.node_id == NODES.c.id, *(_DEP.c.status != status for status in _SATISFIED))
    .exists()
)


class TaskReads:
    """Queries over the tree (mixed into :class:`memory.TaskStore`)."""

    engine: Engine
    config: MemoryConfig

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            # SQLite: a plain BEGIN (snapshot, no write lock) instead of BEGIN IMMEDIATE.
            conn.info["write"] = False
            try:
                yield conn
            finally:
                conn.info["write"] = True

    def get_task(self, task_id: str) -> TaskRecord:
        with self._read() as conn:
            return task_record(self._task_row(conn, task_id))

    def list_tasks(
        self, user_id: str | None = None, status: TaskStatus | str | None = None, limit: int = 100
    ) -> list[TaskRecord]:
        """Newest first."""
        stmt = select(TASKS).order_by(TASKS.c.created_at.desc(), TASKS.c.id).limit(limit)
        if user_id is not None:
            stmt = stmt.where(TASKS.c.user_id == user_id)
        if status is not None:
            stmt = stmt.where(TASKS.c.status == parse_task_status(status).value)
        with self._read() as conn:
            return [task_record(r) for r in conn.execute(stmt).mappings()]

    # --- reading nodes -------------------------------------------------------------------

    def root(self, task_id: str) -> NodeRecord:
        """The task's root node."""
        with self._read() as conn:
            task = self._task_row(conn, task_id)
            return self._node(conn, task["root_id"], task_id)

    def get_node(self, node_id: int) -> NodeRecord:
        with self._read() as conn:
            return self._node(conn, node_id)

    def nodes(self, task_id: str, *, include_superseded: bool = False) -> list[NodeRecord]:
        """Every node of the task, in creation order."""
        with self._read() as conn:
            self._task_row(conn, task_id)
            return self._task_nodes(conn, task_id, include_superseded=include_superseded)

    def children(self, node_id: int, *, include_superseded: bool = False) -> list[NodeRecord]:
        """Direct children, in plan order."""
        stmt = select(NODES).where(NODES.c.parent_id == node_id)
        if not include_superseded:
            stmt = stmt.where(NODES.c.superseded.is_(False))
        with self._read() as conn:
            self._node_row(conn, node_id)
            rows = conn.execute(stmt.order_by(NODES.c.position, NODES.c.id)).mappings().all()
            return records_for(conn, rows)

    def active_path(self, node_id: int) -> list[NodeRecord]:
        """The nodes from the root down to ``node_id`` (cost follows depth, not task size)."""
        with self._read() as conn:
            ids = ancestor_ids(conn, node_id)
            if not ids:
                raise UnknownNodeError(node_id)
            rows = fetch_node_rows(conn, ids)
            return records_for(conn, [rows[i] for i in reversed(ids)])

    def dependable(self, node_id: int) -> list[NodeRecord]:
        """The live nodes of the task that a new child of ``node_id`` may wait for, in
        creation order: every node except ``node_id``, the nodes below it, and those that
        finish only after it (its ancestors and whatever waits for it or for them). A
        dependency on any other node cannot close a cycle; this is what a sub-plan may name
        across branches."""
        with self._read() as conn:
            node = self._node(conn, node_id)
            excluded = finishing_after(conn, node_id) | {node_id}
            nodes = self._task_nodes(conn, node.task_id, include_superseded=False)
            below = {node_id}
            for candidate in nodes:  # creation order: a parent before its children
                if candidate.parent_id in below:
                    below.add(candidate.id)
            return [n for n in nodes if n.id not in excluded and n.id not in below]

    def dependencies(self, node_id: int) -> list[NodeRecord]:
        """The nodes ``node_id`` waits for."""
        with self._read() as conn:
            node = self._node(conn, node_id)
            rows = fetch_node_rows(conn, node.depends_on)
            return records_for(conn, [rows[i] for i in node.depends_on])

    def dependents(self, node_id: int) -> list[NodeRecord]:
        """The nodes that wait for ``node_id``."""
        with self._read() as conn:
            self._node_row(conn, node_id)
            ids = [
                r[0]
                for r in conn.execute(
                    select(EDGES.c.node_id).where(EDGES.c.depends_on_id == node_id)
                )
            ]
            rows = fetch_node_rows(conn, ids)
            return records_for(conn, [rows[i] for i in sorted(ids)])

    def ready_nodes(self, task_id: str, *, limit: int | None = None) -> list[NodeRecord]:
        """Nodes that can start now, in creation order.

        A node is ready when it is live, ``pending`` or ``ready``, every dependency is
        ``done`` or ``skipped``, and its parent is ``running`` (the root: no parent). So a
        step runs only inside a started parent, and a parent's own dependencies gate its whole
        subtree. The query starts from the task's running nodes and visits only their
        children: the cost follows depth and fan-out, not the size of the task.
        """
        with self._read() as conn:
            # Only ids and statuses until the ready set is known: full rows (with their JSON
            # columns) are read for the ready nodes alone, not for every waiting step.
            running: list[int] = []
            root_running = False
            for node_id, parent_id in conn.execute(
                select(NODES.c.id, NODES.c.parent_id).where(
                    NODES.c.task_id == task_id,
                    NODES.c.status == NodeStatus.RUNNING.value,
                    NODES.c.superseded.is_(False),
                )
            ):
                running.append(node_id)
                root_running = root_running or parent_id is None
            # A candidate is ready when no dependency of it is unfinished: one anti-join, so
            # waiting steps cost an index probe each and are never loaded.
            blocked = _BLOCKED
            ready_ids: list[int] = []
            for part in chunks(running):
                ready_ids.extend(
                    r[0]
                    for r in conn.execute(
                        select(NODES.c.id).where(
                            one_of(NODES.c.parent_id, part),
                            _IS_OPEN,
                            NODES.c.superseded.is_(False),
                            ~blocked,
                        )
                    )
                )
            # The root has no parent: ready when open and unblocked (never while running).
            if not root_running:
                if (
                    not running
                    and conn.execute(select(TASKS.c.id).where(TASKS.c.id == task_id)).first()
                    is None
                ):
                    raise UnknownTaskError(task_id)
                ready_ids.extend(
                    r[0]
                    for r in conn.execute(
                        select(NODES.c.id).where(
                            NODES.c.task_id == task_id,
                            NODES.c.parent_id.is_(None),
                            _IS_OPEN,
                            ~blocked,
                        )
                    )
                )
            ready_ids.sort()
            if limit is not None:
                ready_ids = ready_ids[:limit]
            rows = fetch_node_rows(conn, ready_ids)
            deps = dependencies_of(conn, ready_ids)
            ready = [node_record(rows[i], deps.get(i, ())) for i in ready_ids]
        return ready

    def topological_order(self, task_id: str) -> list[NodeRecord]:
        """Live nodes so that parents precede children and dependencies precede dependents."""
        return topological(self.nodes(task_id))

    def events(
        self,
        task_id: str,
        *,
        node_id: int | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[EventRecord]:
        """The task's history, oldest first (optionally one node's, or after an event id)."""
        stmt = select(EVENTS).where(EVENTS.c.task_id == task_id).order_by(EVENTS.c.id)
        if node_id is not None:
            stmt = stmt.where(EVENTS.c.node_id == node_id)
        if after_id is not None:
            stmt = stmt.where(EVENTS.c.id > after_id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._read() as conn:
            self._task_row(conn, task_id)
            return [event_record(r) for r in conn.execute(stmt).mappings()]

    def to_networkx(self, task_id: str, *, include_superseded: bool = False) -> nx.DiGraph:
        """A DiGraph: node attributes are record fields; edges ``kind`` is child/dependency.

        Edges point the way work flows: parent -> child, dependency -> dependent.
        """
        return networkx_graph(self.nodes(task_id, include_superseded=include_superseded))

    def to_mermaid(self, task_id: str, *, include_superseded: bool = False) -> str:
        """A Mermaid flowchart (solid: parent to child; dotted: dependency to dependent)."""
        return mermaid(self.nodes(task_id, include_superseded=include_superseded))

    def build_context(
        self,
        node_id: int,
        budget_chars: int | None = 2000,
        *,
        budget_tokens: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
        max_siblings: int = 3,
    ) -> PromptContext:
        """TME prompt context for ``node_id`` under a size budget (never over it).

        Kept first: the goal and the current step, then the outputs of its dependencies,
        then the path from the parent up (nearest first), then finished earlier siblings.
        What does not fit is shortened with a visible marker or left out and counted.
        ``budget_tokens`` with ``count_tokens`` budgets tokens instead of characters.
        """
        with self._read() as conn:
            ids = ancestor_ids(conn, node_id)
            if not ids:
                raise UnknownNodeError(node_id)
            path_rows = fetch_node_rows(conn, ids)
            path = records_for(conn, [path_rows[i] for i in reversed(ids)])
            current = path[-1]
            dep_rows = fetch_node_rows(conn, current.depends_on)
            deps = [node_record(dep_rows[i]) for i in current.depends_on]
            siblings: list[NodeRecord] = []
            if current.parent_id is not None and max_siblings > 0:
                rows = conn.execute(
                    select(NODES)
                    .where(
                        NODES.c.parent_id == current.parent_id,
                        NODES.c.superseded.is_(False),
                        NODES.c.position < current.position,
                        NODES.c.status == NodeStatus.DONE.value,
                    )
                    .order_by(NODES.c.position.desc())
                    .limit(max_siblings)
                ).mappings()
                siblings = [node_record(r) for r in rows if r["id"] not in current.depends_on]
            goal = self._task_row(conn, current.task_id)["goal"]
        return synthesize(
            goal,
            path,
            deps,
            siblings,
            budget_chars=budget_chars,
            budget_tokens=budget_tokens,
            count_tokens=count_tokens,
        )

    def _task_row(self, conn: Connection, task_id: str, *, lock: bool = False) -> RowMapping:
        stmt = select(TASKS).where(TASKS.c.id == task_id)
        if lock:
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).mappings().first()
        if row is None:
            raise UnknownTaskError(task_id)
        return row

    def _node_row(
        self, conn: Connection, node_id: int, task_id: str | None = None, *, lock: bool = False
    ) -> RowMapping:
        if isinstance(node_id, bool) or not isinstance(node_id, int):
            raise UnknownNodeError(node_id, task_id)
        stmt = select(NODES).where(NODES.c.id == node_id)
        if lock:
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).mappings().first()
        if row is None or (task_id is not None and row["task_id"] != task_id):
            raise UnknownNodeError(node_id, task_id)
        return row

    def _node(self, conn: Connection, node_id: int, task_id: str | None = None) -> NodeRecord:
        row = self._node_row(conn, node_id, task_id)
        return node_record(row, dependencies_of(conn, [node_id]).get(node_id, ()))

    def _task_nodes(
        self, conn: Connection, task_id: str, *, include_superseded: bool
    ) -> list[NodeRecord]:
        stmt = select(NODES).where(NODES.c.task_id == task_id).order_by(NODES.c.id)
        if not include_superseded:
            stmt = stmt.where(NODES.c.superseded.is_(False))
        rows = conn.execute(stmt).mappings().all()
        deps: dict[int, list[int]] = {}
        for node, dep in conn.execute(
            select(EDGES.c.node_id, EDGES.c.depends_on_id).where(EDGES.c.task_id == task_id)
        ):
            deps.setdefault(node, []).append(dep)
        return [node_record(r, deps.get(r["id"], ())) for r in rows]


def parse_task_status(status: TaskStatus | str) -> TaskStatus:
    try:
        return TaskStatus(status)
    except ValueError:
        raise UsageError(
            f"unknown task status {status!r}; use one of {[s.value for s in TaskStatus]}"
        ) from None
