"""TaskStore: the Task Memory Tree's repository API over any SQLAlchemy database.

Reads return frozen snapshots. Writes run in one transaction each, so a failed call leaves
nothing half-written. Node updates use optimistic locking on the ``version`` column
(``UPDATE ... WHERE version = :read_version``): two writers never silently overwrite each
other. Structural changes (adding nodes or dependencies, replanning) lock the task row, so
on PostgreSQL several processes can work on one task.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import ValidationError
from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    RowMapping,
    delete,
    insert,
    select,
    update,
)

from trellis.memory._db import DatabaseConfig, check_schema, make_engine, migration_lock
from trellis.memory._db import upgrade as upgrade_schema
from trellis.memory._reads import TaskReads, parse_task_status
from trellis.memory._records import (
    TRANSITIONS,
    MemoryConfig,
    NodeRecord,
    NodeSpec,
    NodeStatus,
    TaskRecord,
    TaskStatus,
    allowed_next,
)
from trellis.memory._retry import retrying_method, write_transaction
from trellis.memory._rows import (
    EDGES,
    EVENTS,
    NODES,
    TASKS,
    check_json,
    check_text,
    chunks,
    dependencies_of,
    event_row,
    node_record,
    now,
    task_record,
)
from trellis.memory._tree import (
    check_new_dependency,
    insert_specs,
    live_descendant_ids,
    supersede,
)
from trellis.memory.errors import (
    IllegalTransitionError,
    StaleWriteError,
    UsageError,
)

__all__ = ["UNSET", "TaskStore"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""Default of :meth:`TaskStore.update_node` fields: leave the column as it is."""


class TaskStore(TaskReads):
    """Durable, graph-aware task state. ``TaskStore.open()`` for the default SQLite file."""

    def __init__(
        self, engine: Engine, config: MemoryConfig | None = None, *, retry_s: float | None = None
    ) -> None:
        if not isinstance(engine, Engine):
            raise UsageError(
                f"TaskStore() takes a SQLAlchemy Engine, got {type(engine).__name__}; "
                "open a database by URL with TaskStore.open(url)"
            )
        self.engine = engine
        """The SQLAlchemy engine; other packages keep their tables in the same database."""
        self.config = config or MemoryConfig()
        self.retry_s = retry_s
        """Seconds a call retries a dropped or unreachable database before it raises
        DatabaseUnavailable (None: the engine's ``DatabaseConfig.retry_s``)."""

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
                with migration_lock(engine):
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
        with write_transaction(self.engine) as conn:
            yield conn

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

    def set_task_status(
        self,
        task_id: str,
        status: TaskStatus | str,
        *,
        cause: str | None = None,
        expected_version: int | None = None,
    ) -> TaskRecord:
        """Set a task's status (recorded as a ``task.status`` event)."""
        new = parse_task_status(status)
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

    # --- structural writes ---------------------------------------------------------------

    def add_children(
        self,
        task_id: str,
        parent_id: int,
        specs: Sequence[NodeSpec | Mapping[str, Any]],
        *,
        cause: str | None = None,
    ) -> list[NodeRecord]:
        """Add child nodes (with their subtrees) in one transaction; returns every new node,
        parents before children."""
        specs = _specs(specs)
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
        self,
        node_id: int,
        specs: Sequence[NodeSpec | Mapping[str, Any]],
        *,
        cause: str | None = "replan",
    ) -> list[NodeRecord]:
        """Replan below ``node_id``: its live descendants become ``superseded`` (kept, with
        their history) and ``specs`` become its new children, in one transaction.

        Dependencies that outside nodes had on replaced nodes move to the new child with the
        same key, or else to ``node_id`` itself (which finishes only with its new children).
        Returns every new node, parents before children.
        """
        specs = _specs(specs)
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
        also: Sequence[Executable] = (),
    ) -> NodeRecord:
        """Move a node to ``status``; ``output``/``error``/``adapter``/``route`` are set when
        given (None leaves them). ``running`` counts an attempt and stamps ``started_at``;
        finishing states stamp ``finished_at``. ``also``: statements on the same database
        (another package's bookkeeping) that commit or roll back with the status change.

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
            record = self._apply(conn, row, changes, stamps, cause, at)
            for statement in also:
                conn.execute(statement)
            return record

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
        # The new state is known: build the snapshot without reading the row again.
        values = {**row, **changes, **stamps, "version": read_version + 1, "updated_at": at}
        deps = dependencies_of(conn, [row["id"]]).get(row["id"], ())
        return node_record(values, deps)  # type: ignore[arg-type]

    def _locked_node(
        self, conn: Connection, node_id: int, expected_version: int | None
    ) -> RowMapping:
        # Without an expected version the caller wants "the latest": lock the row so the
        # state-machine check and the update see the same version (PostgreSQL).
        row = self._node_row(conn, node_id, lock=expected_version is None)
        if expected_version is not None and row["version"] != expected_version:
            raise StaleWriteError(f"node {node_id}", expected_version, row["version"])
        return row


_RETRIED = (
    # reads (TaskReads)
    "get_task", "list_tasks", "root", "get_node", "nodes", "children", "active_path",
    "dependencies", "dependents", "ready_nodes", "topological_order", "events",
    "to_networkx", "to_mermaid", "build_context",
    # writes: each is one transaction
    "create_task", "set_task_status", "delete_task", "add_children", "add_dependency",
    "remove_dependency", "replace_subtree", "transition", "update_node",
)  # fmt: skip
for _name in _RETRIED:
    # Every public call retries a dropped or unreachable database (memory/_retry.py).
    setattr(TaskStore, _name, retrying_method(getattr(TaskStore, _name)))


def _specs(specs: Sequence[NodeSpec | Mapping[str, Any]]) -> list[NodeSpec]:
    """Accept NodeSpec objects or plain dicts (as a planner's JSON gives them)."""
    out: list[NodeSpec] = []
    for index, spec in enumerate(specs):
        if isinstance(spec, NodeSpec):
            out.append(spec)
            continue
        try:
            out.append(NodeSpec.model_validate(spec))
        except ValidationError as exc:
            raise UsageError(f"node spec #{index} is invalid: {exc}") from exc
    return out


def _node_status(status: NodeStatus | str) -> NodeStatus:
    try:
        return NodeStatus(status)
    except ValueError:
        raise UsageError(
            f"unknown node status {status!r}; use one of {[s.value for s in NodeStatus]}"
        ) from None
