"""TaskStore: the Task Memory Tree's repository API over any SQLAlchemy database.

Reads return frozen snapshots. Writes run in one transaction each, so a failed call leaves
nothing half-written. Node updates use optimistic locking on the ``version`` column
(``UPDATE ... WHERE version = :read_version``): two writers never silently overwrite each
other. Structural changes (adding nodes or dependencies, replanning) lock the task row, so
on PostgreSQL several processes can work on one task.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import networkx as nx
from sqlalchemy import Connection, Engine, RowMapping, delete, insert, select, update

from memory._context import PromptContext, synthesize
from memory._db import DatabaseConfig, check_schema, make_engine
from memory._db import upgrade as upgrade_schema
from memory._graph import mermaid, networkx_graph, topological
from memory._records import (
    SATISFIED,
    TRANSITIONS,
    EventRecord,
    MemoryConfig,
    NodeRecord,
    NodeSpec,
    NodeStatus,
    TaskRecord,
    TaskStatus,
    allowed_next,
)
from memory._rows import (
    EDGES,
    EVENTS,
    NODES,
    TASKS,
    check_json,
    check_text,
    chunks,
    dependencies_of,
    event_record,
    event_row,
    fetch_node_rows,
    node_record,
    now,
    records_for,
    task_record,
)
from memory._tree import (
    ancestor_ids,
    check_new_dependency,
    insert_specs,
    live_descendant_ids,
    supersede,
)
from memory.errors import (
    IllegalTransitionError,
    StaleWriteError,
    UnknownNodeError,
    UnknownTaskError,
    UsageError,
)

__all__ = ["UNSET", "TaskStore"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""Default of :meth:`TaskStore.update_node` fields: leave the column as it is."""

_OPEN = (NodeStatus.PENDING.value, NodeStatus.READY.value)


class TaskStore:
    """Durable, graph-aware task state. ``TaskStore.open()`` for the default SQLite file."""

    def __init__(self, engine: Engine, config: MemoryConfig | None = None) -> None:
        self.engine = engine
        """The SQLAlchemy engine; other packages keep their tables in the same database."""
        self.config = config or MemoryConfig()

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        upgrade: bool = True,
        config: MemoryConfig | None = None,
        database: DatabaseConfig | None = None,
    ) -> TaskStore:
        """Connect to ``url`` (default: ``trellis.db`` in ``TRELLIS_HOME``) and migrate it.

        With ``upgrade=False`` the schema must already be current (``trellis db upgrade``);
        a database written by a newer Trellis is refused either way (SchemaMismatchError).
        """
        if database is None:
            database = DatabaseConfig() if url is None else DatabaseConfig(url=url)
        elif url is not None:
            database = database.model_copy(update={"url": url})
        engine = make_engine(database)
        try:
            if upgrade:
                upgrade_schema(engine)
            check_schema(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, config)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- transactions --------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            # SQLite: a plain BEGIN (snapshot, no write lock) instead of BEGIN IMMEDIATE.
            conn.info["write"] = False
            try:
                yield conn
            finally:
                conn.info["write"] = True

    # --- tasks ---------------------------------------------------------------------------

    def create_task(
        self, goal: str, user_id: str = "default", metadata: dict[str, Any] | None = None
    ) -> TaskRecord:
        """Create a task and its root node (kind ``goal``, key ``root``, title = goal)."""
        limit = self.config.max_payload_bytes
        check_text("goal", goal, limit, max_chars=self.config.max_title_chars)
        check_text("user_id", user_id, 200, max_chars=200)
        meta = check_json("metadata", metadata if metadata is not None else {}, limit)
        task_id = uuid.uuid4().hex
        at = now()
        with self._write() as conn:
            conn.execute(
                insert(TASKS).values(
                    id=task_id,
                    goal=goal,
                    user_id=user_id,
                    status=TaskStatus.PENDING.value,
                    metadata=meta,
                    root_id=None,
                    created_at=at,
                    updated_at=at,
                    version=1,
                )
            )
            conn.execute(
                insert(EVENTS).values(
                    event_row(
                        task_id,
                        None,
                        "task.created",
                        None,
                        {"goal": goal, "user_id": user_id, "metadata": meta},
                        None,
                        at,
                    )
                )
            )
            root_id = conn.execute(
                insert(NODES)
                .values(
                    task_id=task_id,
                    parent_id=None,
                    key="root",
                    kind="goal",
                    title=goal,
                    status=NodeStatus.PENDING.value,
                    input=None,
                    output=None,
                    error=None,
                    adapter=None,
                    route=None,
                    attempts=0,
                    position=0,
                    depth=0,
                    superseded=False,
                    created_at=at,
                    updated_at=at,
                    started_at=None,
                    finished_at=None,
                    version=1,
                )
                .returning(NODES.c.id)
            ).scalar_one()
            snapshot: dict[str, Any] = {
                "parent_id": None,
                "key": "root",
                "kind": "goal",
                "title": goal,
                "status": NodeStatus.PENDING.value,
                "input": None,
                "adapter": None,
                "attempts": 0,
                "superseded": False,
                "depends_on": [],
            }
            conn.execute(
                insert(EVENTS).values(
                    event_row(task_id, root_id, "created", None, snapshot, "task created", at)
                )
            )
            conn.execute(update(TASKS).where(TASKS.c.id == task_id).values(root_id=root_id))
            task_row = self._task_row(conn, task_id)
        return task_record(task_row)

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
            stmt = stmt.where(TASKS.c.status == _task_status(status).value)
        with self._read() as conn:
            return [task_record(r) for r in conn.execute(stmt).mappings()]

    def set_task_status(
        self,
        task_id: str,
        status: TaskStatus | str,
        *,
        cause: str | None = None,
        expected_version: int | None = None,
    ) -> TaskRecord:
        """Set a task's status (recorded as a ``task.status`` event)."""
        new = _task_status(status)
        at = now()
        with self._write() as conn:
            row = self._task_row(conn, task_id, lock=expected_version is None)
            read_version = row["version"]
            if expected_version is not None and read_version != expected_version:
                raise StaleWriteError(f"task {task_id}", expected_version, read_version)
            result = conn.execute(
                update(TASKS)
                .where(TASKS.c.id == task_id, TASKS.c.version == read_version)
                .values(status=new.value, version=read_version + 1, updated_at=at)
            )
            if result.rowcount != 1:
                raise StaleWriteError(f"task {task_id}", read_version, None)
            if row["status"] != new.value:
                conn.execute(
                    insert(EVENTS).values(
                        event_row(task_id, None, "task.status", row["status"], new.value, cause, at)
                    )
                )
            return task_record(self._task_row(conn, task_id))

    def delete_task(self, task_id: str) -> None:
        """Remove a task with its nodes, edges and history."""
        with self._write() as conn:
            self._task_row(conn, task_id, lock=True)
            # Explicit order: SQLite only cascades with foreign_keys=ON, and roots are parents.
            conn.execute(delete(EVENTS).where(EVENTS.c.task_id == task_id))
            conn.execute(delete(EDGES).where(EDGES.c.task_id == task_id))
            conn.execute(update(NODES).where(NODES.c.task_id == task_id).values(parent_id=None))
            conn.execute(delete(NODES).where(NODES.c.task_id == task_id))
            conn.execute(delete(TASKS).where(TASKS.c.id == task_id))

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
            task = self._task_row(conn, task_id)
            running = [
                r[0]
                for r in conn.execute(
                    select(NODES.c.id).where(
                        NODES.c.task_id == task_id,
                        NODES.c.status == NodeStatus.RUNNING.value,
                        NODES.c.superseded.is_(False),
                    )
                )
            ]
            candidates: list[RowMapping] = []
            for part in chunks(running):
                candidates.extend(
                    conn.execute(
                        select(NODES).where(
                            NODES.c.parent_id.in_(part),
                            NODES.c.status.in_(_OPEN),
                            NODES.c.superseded.is_(False),
                        )
                    )
                    .mappings()
                    .all()
                )
            root_row = self._node_row(conn, task["root_id"])
            if root_row["status"] in _OPEN:
                candidates.append(root_row)
            deps = dependencies_of(conn, [r["id"] for r in candidates])
            dep_ids = sorted({d for ds in deps.values() for d in ds})
            satisfied = {s.value for s in SATISFIED}
            unfinished: set[int] = set()
            for part in chunks(dep_ids):
                unfinished.update(
                    r[0]
                    for r in conn.execute(
                        select(NODES.c.id).where(
                            NODES.c.id.in_(part), NODES.c.status.not_in(satisfied)
                        )
                    )
                )
            ready = [
                node_record(r, deps.get(r["id"], ()))
                for r in candidates
                if not unfinished.intersection(deps.get(r["id"], ()))
            ]
        ready.sort(key=lambda n: n.id)
        return ready if limit is None else ready[:limit]

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

    # --- structural writes ---------------------------------------------------------------

    def add_children(
        self,
        task_id: str,
        parent_id: int,
        specs: Sequence[NodeSpec],
        *,
        cause: str | None = None,
    ) -> list[NodeRecord]:
        """Add child nodes (with their subtrees) in one transaction; returns every new node,
        parents before children."""
        specs = list(specs)
        if not specs:
            return []
        with self._write() as conn:
            self._task_row(conn, task_id, lock=True)
            parent = self._node_row(conn, parent_id, task_id)
            return insert_specs(conn, parent, specs, config=self.config, cause=cause, at=now())

    def add_dependency(
        self, node_id: int, depends_on_id: int, *, cause: str | None = None
    ) -> NodeRecord:
        """Make ``node_id`` wait for ``depends_on_id`` (any live node of the same task).

        Raises CycleError naming the cycle; adding an existing dependency changes nothing.
        """
        with self._write() as conn:
            node = self._node_row(conn, node_id)
            task_id = node["task_id"]
            self._task_row(conn, task_id, lock=True)
            dep = self._node_row(conn, depends_on_id, task_id)
            for row in (node, dep):
                if row["superseded"]:
                    raise UsageError(
                        f"node {row['id']} was superseded by replanning; use its replacement"
                    )
            current = sorted(dependencies_of(conn, [node_id]).get(node_id, []))
            if depends_on_id in current:
                return node_record(node, current)
            check_new_dependency(conn, node_id, depends_on_id)
            conn.execute(
                insert(EDGES).values(node_id=node_id, depends_on_id=depends_on_id, task_id=task_id)
            )
            new = sorted([*current, depends_on_id])
            conn.execute(
                insert(EVENTS).values(
                    event_row(task_id, node_id, "depends_on", current, new, cause, now())
                )
            )
            return node_record(node, new)

    def remove_dependency(
        self, node_id: int, depends_on_id: int, *, cause: str | None = None
    ) -> NodeRecord:
        """Stop ``node_id`` waiting for ``depends_on_id`` (no-op when it did not)."""
        with self._write() as conn:
            node = self._node_row(conn, node_id)
            task_id = node["task_id"]
            self._task_row(conn, task_id, lock=True)
            current = sorted(dependencies_of(conn, [node_id]).get(node_id, []))
            if depends_on_id not in current:
                return node_record(node, current)
            conn.execute(
                delete(EDGES).where(
                    EDGES.c.node_id == node_id, EDGES.c.depends_on_id == depends_on_id
                )
            )
            new = [d for d in current if d != depends_on_id]
            conn.execute(
                insert(EVENTS).values(
                    event_row(task_id, node_id, "depends_on", current, new, cause, now())
                )
            )
            return node_record(node, new)

    def replace_subtree(
        self, node_id: int, specs: Sequence[NodeSpec], *, cause: str | None = "replan"
    ) -> list[NodeRecord]:
        """Replan below ``node_id``: its live descendants become ``superseded`` (kept, with
        their history) and ``specs`` become its new children, in one transaction.

        Dependencies that outside nodes had on replaced nodes move to the new child with the
        same key, or else to ``node_id`` itself (which finishes only with its new children).
        Returns every new node, parents before children.
        """
        specs = list(specs)
        at = now()
        with self._write() as conn:
            node = self._node_row(conn, node_id)
            task_id = node["task_id"]
            self._task_row(conn, task_id, lock=True)
            if node["superseded"]:
                raise UsageError(f"node {node_id} was itself superseded; replan its replacement")
            old = live_descendant_ids(conn, node_id)
            old_set = set(old)
            old_keys = {
                r["id"]: r["key"]
                for r in conn.execute(
                    select(NODES.c.id, NODES.c.key).where(NODES.c.parent_id == node_id)
                ).mappings()
                if r["id"] in old_set
            }
            supersede(conn, task_id, old, cause=cause, at=at)
            created = (
                insert_specs(conn, node, specs, config=self.config, cause=cause, at=at)
                if specs
                else []
            )
            new_by_key = {n.key: n.id for n in created if n.parent_id == node_id}
            incoming: list[tuple[int, int]] = []
            for part in chunks(old):
                incoming.extend(
                    (r[0], r[1])
                    for r in conn.execute(
                        select(EDGES.c.node_id, EDGES.c.depends_on_id).where(
                            EDGES.c.depends_on_id.in_(part)
                        )
                    )
                    if r[0] not in old_set
                )
            for dependent in sorted({d for d, _ in incoming}):
                before = sorted(dependencies_of(conn, [dependent]).get(dependent, []))
                after = set(before)
                for dep_id, old_dep in [(d, o) for d, o in incoming if d == dependent]:
                    target = new_by_key.get(old_keys.get(old_dep, ""), node_id)
                    after.discard(old_dep)
                    conn.execute(
                        delete(EDGES).where(
                            EDGES.c.node_id == dep_id, EDGES.c.depends_on_id == old_dep
                        )
                    )
                    if target not in after:
                        check_new_dependency(conn, dependent, target)
                        conn.execute(
                            insert(EDGES).values(
                                node_id=dependent, depends_on_id=target, task_id=task_id
                            )
                        )
                        after.add(target)
                conn.execute(
                    insert(EVENTS).values(
                        event_row(
                            task_id, dependent, "depends_on", before, sorted(after), cause, at
                        )
                    )
                )
            return created

    # --- node updates --------------------------------------------------------------------

    def transition(
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
        """Move a node to ``status``; ``output``/``error``/``adapter``/``route`` are set when
        given (None leaves them). ``running`` counts an attempt and stamps ``started_at``;
        finishing states stamp ``finished_at``.

        Raises IllegalTransitionError naming both states, and StaleWriteError when
        ``expected_version`` is given and the node has moved on since.
        """
        new = _node_status(status)
        changes: dict[str, Any] = {"status": new.value}
        limit = self.config.max_payload_bytes
        if output is not None:
            changes["output"] = check_json("output", output, limit)
        if error is not None:
            changes["error"] = check_text("error", error, limit)
        if adapter is not None:
            changes["adapter"] = check_text("adapter", adapter, 200, max_chars=200)
        if route is not None:
            changes["route"] = check_json("route", route, limit)
        with self._write() as conn:
            row = self._locked_node(conn, node_id, expected_version)
            old = NodeStatus(row["status"])
            if new not in TRANSITIONS[old]:
                raise IllegalTransitionError(node_id, old.value, new.value, allowed_next(old))
            at = now()
            stamps: dict[str, Any] = {}
            if new is NodeStatus.RUNNING:
                changes["attempts"] = row["attempts"] + 1
                stamps = {"started_at": at, "finished_at": None}
            elif new in (NodeStatus.PENDING, NodeStatus.READY):
                stamps = {"finished_at": None}
            else:
                stamps = {"finished_at": at}
            return self._apply(conn, row, changes, stamps, cause, at)

    def update_node(
        self,
        node_id: int,
        *,
        expected_version: int | None = None,
        cause: str | None = None,
        title: str = UNSET,
        input: Any = UNSET,
        output: Any = UNSET,
        error: str | None = UNSET,
        adapter: str | None = UNSET,
        route: Any = UNSET,
    ) -> NodeRecord:
        """Change fields without a status change (None clears a field; UNSET leaves it)."""
        limit = self.config.max_payload_bytes
        changes: dict[str, Any] = {}
        if title is not UNSET:
            changes["title"] = check_text(
                "title", title, limit, max_chars=self.config.max_title_chars
            )
        for name, value in (("input", input), ("output", output), ("route", route)):
            if value is not UNSET:
                changes[name] = check_json(name, value, limit)
        if error is not UNSET:
            changes["error"] = None if error is None else check_text("error", error, limit)
        if adapter is not UNSET:
            changes["adapter"] = (
                None if adapter is None else check_text("adapter", adapter, 200, max_chars=200)
            )
        with self._write() as conn:
            row = self._locked_node(conn, node_id, expected_version)
            if not changes:
                return self._node(conn, node_id)
            return self._apply(conn, row, changes, {}, cause, now())

    # --- internals -----------------------------------------------------------------------

    def _apply(
        self,
        conn: Connection,
        row: RowMapping,
        changes: dict[str, Any],
        stamps: dict[str, Any],
        cause: str | None,
        at: Any,
    ) -> NodeRecord:
        read_version = row["version"]
        result = conn.execute(
            update(NODES)
            .where(NODES.c.id == row["id"], NODES.c.version == read_version)
            .values(**changes, **stamps, version=read_version + 1, updated_at=at)
        )
        if result.rowcount != 1:
            actual = conn.execute(
                select(NODES.c.version).where(NODES.c.id == row["id"])
            ).scalar_one_or_none()
            raise StaleWriteError(f"node {row['id']}", read_version, actual)
        events = [
            event_row(row["task_id"], row["id"], name, row[name], value, cause, at)
            for name, value in changes.items()
            if row[name] != value
        ]
        if events:
            conn.execute(insert(EVENTS), events)
        return self._node(conn, row["id"])

    def _locked_node(
        self, conn: Connection, node_id: int, expected_version: int | None
    ) -> RowMapping:
        # Without an expected version the caller wants "the latest": lock the row so the
        # state-machine check and the update see the same version (PostgreSQL).
        row = self._node_row(conn, node_id, lock=expected_version is None)
        if expected_version is not None and row["version"] != expected_version:
            raise StaleWriteError(f"node {node_id}", expected_version, row["version"])
        return row

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


def _node_status(status: NodeStatus | str) -> NodeStatus:
    try:
        return NodeStatus(status)
    except ValueError:
        raise UsageError(
            f"unknown node status {status!r}; use one of {[s.value for s in NodeStatus]}"
        ) from None


def _task_status(status: TaskStatus | str) -> TaskStatus:
    try:
        return TaskStatus(status)
    except ValueError:
        raise UsageError(
            f"unknown task status {status!r}; use one of {[s.value for s in TaskStatus]}"
        ) from None
