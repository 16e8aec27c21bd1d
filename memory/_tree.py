"""Structural writes of the tree: batched subtree inserts, dependency checks, supersession.

Every function here runs inside the caller's write transaction, after the task row is
locked, so a failure anywhere rolls the whole change back and concurrent structural edits of
one task are serialised (no two writers can each add half of a cycle).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, literal, select, update

from memory._records import MemoryConfig, NodeRecord, NodeSpec, NodeStatus
from memory._rows import (
    EDGES,
    ENCODER,
    EVENTS,
    NODES,
    JsonText,
    bulk_insert,
    bulk_insert_tuples,
    check_json_text,
    check_text,
    chunks,
    driver_value,
    event_row,
    fetch_node_rows,
)
from memory.errors import CycleError, DuplicateKeyError, UnknownNodeError, UsageError

__all__ = [
    "ancestor_ids",
    "check_new_dependency",
    "insert_specs",
    "live_descendant_ids",
]


def ancestor_ids(conn: Connection, node_id: int) -> list[int]:
    """Ids from ``node_id`` up to the root (``node_id`` first), following parent pointers."""
    path = (
        select(NODES.c.id, NODES.c.parent_id, literal(0).label("lvl"))
        .where(NODES.c.id == node_id)
        .cte("path", recursive=True)
    )
    path = path.union_all(
        select(NODES.c.id, NODES.c.parent_id, (path.c.lvl + 1).label("lvl")).select_from(
            NODES.join(path, NODES.c.id == path.c.parent_id)
        )
    )
    return [row[0] for row in conn.execute(select(path.c.id).order_by(path.c.lvl))]


def live_descendant_ids(conn: Connection, node_id: int) -> list[int]:
    """Every live (not superseded) node below ``node_id``, parents before children."""
    sub = (
        select(NODES.c.id, literal(1).label("lvl"))
        .where(NODES.c.parent_id == node_id, NODES.c.superseded.is_(False))
        .cte("sub", recursive=True)
    )
    sub = sub.union_all(
        select(NODES.c.id, (sub.c.lvl + 1).label("lvl")).select_from(
            NODES.join(sub, NODES.c.parent_id == sub.c.id)
        )
    )
    return [row[0] for row in conn.execute(select(sub.c.id).order_by(sub.c.lvl, sub.c.id))]


def check_new_dependency(conn: Connection, node_id: int, depends_on_id: int) -> None:
    """Raise :class:`CycleError` if ``node_id`` may not wait for ``depends_on_id``.

    Precedence runs along dependency edges (dependency before dependent) and tree edges (a
    parent starts before its children). The new edge closes a cycle exactly when
    ``depends_on_id`` already comes after ``node_id``: a forward search from ``node_id``
    over its children and dependents, so the cost follows what lies downstream of the node,
    not the size of the task. Waiting for one's own ancestor is refused too: the ancestor
    only finishes once its children have.
    """
    if node_id == depends_on_id:
        raise CycleError([node_id, node_id], reason="a node cannot depend on itself")
    ancestors = ancestor_ids(conn, node_id)
    if depends_on_id in ancestors:
        chain = ancestors[: ancestors.index(depends_on_id) + 1]
        raise CycleError(
            [node_id, depends_on_id, node_id],
            reason=f"{depends_on_id} is an ancestor of {node_id} (path {chain[::-1]}) and "
            "finishes only after its children",
        )
    came_from: dict[int, int] = {node_id: node_id}
    frontier = [node_id]
    while frontier:
        nxt: list[int] = []
        for part in chunks(frontier):
            kids = conn.execute(
                select(NODES.c.parent_id, NODES.c.id).where(
                    NODES.c.parent_id.in_(part), NODES.c.superseded.is_(False)
                )
            ).all()
            dependents = conn.execute(
                select(EDGES.c.depends_on_id, EDGES.c.node_id).where(
                    EDGES.c.depends_on_id.in_(part)
                )
            ).all()
            for source, target in [*kids, *dependents]:
                if target in came_from:
                    continue
                came_from[target] = source
                if target == depends_on_id:
                    path = [target]
                    while path[-1] != node_id:
                        path.append(came_from[path[-1]])
                    # path runs depends_on_id back to node_id; the cycle reads node -> dep.
                    cycle: list[object] = [node_id, *path]
                    raise CycleError(
                        cycle,
                        reason=f"{depends_on_id} already comes after {node_id} "
                        "(through its children or dependents)",
                    )
                nxt.append(target)
        frontier = nxt


def _sibling_order(specs: list[NodeSpec]) -> None:
    """Refuse duplicate keys, unknown sibling keys and cycles among one batch of siblings."""
    keys: dict[str, NodeSpec] = {}
    for spec in specs:
        if spec.key in keys:
            raise DuplicateKeyError(spec.key, where="in this batch of siblings")
        keys[spec.key] = spec
    graph: dict[str, list[str]] = {}
    for spec in specs:
        graph[spec.key] = []
        for dep in spec.depends_on:
            if isinstance(dep, str):
                if dep not in keys:
                    raise UsageError(
                        f"step {spec.key!r} depends on {dep!r}, which is not a sibling key in "
                        f"this batch (keys: {sorted(keys)}); use an existing node id (int) for "
                        "nodes added earlier"
                    )
                if dep == spec.key:
                    raise CycleError([dep, dep], reason="a node cannot depend on itself")
                graph[spec.key].append(dep)
    # Depth-first search with colours finds a cycle and its path in one pass.
    colour: dict[str, int] = {}
    for start in graph:
        if colour.get(start):
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        trail: list[str] = []
        while stack:
            key, index = stack.pop()
            if index == 0:
                colour[key] = 1
                trail.append(key)
            deps = graph[key]
            if index < len(deps):
                stack.append((key, index + 1))
                dep = deps[index]
                if colour.get(dep) == 1:
                    cycle: list[object] = [*trail[trail.index(dep) :], dep]
                    raise CycleError(cycle)
                if not colour.get(dep):
                    stack.append((dep, 0))
            else:
                colour[key] = 2
                trail.pop()


def _validate(
    specs: list[NodeSpec], config: MemoryConfig
) -> list[tuple[NodeSpec, tuple[Any, JsonText | None]]]:
    """Check every spec of the subtree before writing anything; inputs normalised and as JSON."""
    checked: list[tuple[NodeSpec, tuple[Any, JsonText | None]]] = []
    queue: deque[list[NodeSpec]] = deque([specs])
    limit = config.max_payload_bytes
    while queue:
        group = queue.popleft()
        _sibling_order(group)
        for spec in group:
            check_text(
                f"title of {spec.key!r}", spec.title, limit, max_chars=config.max_title_chars
            )
            if "\x00" in spec.key:
                raise UsageError(f"key {spec.key!r} contains a NUL character")
            checked.append((spec, check_json_text(f"input of {spec.key!r}", spec.input, limit)))
            if spec.children:
                queue.append(spec.children)
    return checked


def insert_specs(
    conn: Connection,
    parent: RowMapping,
    specs: list[NodeSpec],
    *,
    config: MemoryConfig,
    cause: str | None,
    at: datetime,
) -> list[NodeRecord]:
    """Insert ``specs`` (and their children) below ``parent``; return the new nodes, level order."""
    task_id: str = parent["task_id"]
    if parent["superseded"]:
        raise UsageError(
            f"node {parent['id']} was superseded by replanning; add children to the live "
            "node that replaced it"
        )
    inputs = {id(spec): value for spec, value in _validate(specs, config)}

    # Existing nodes named by id must be live nodes of this task, and not an ancestor.
    external = sorted({d for s in _walk(specs) for d in s.depends_on if isinstance(d, int)})
    if external:
        found = fetch_node_rows(conn, external)
        for dep in external:
            row = found.get(dep)
            if row is None or row["task_id"] != task_id:
                raise UnknownNodeError(dep, task_id)
            if row["superseded"]:
                raise UsageError(
                    f"node {dep} was superseded by replanning; depend on its replacement"
                )
        ancestors = set(ancestor_ids(conn, parent["id"]))
        for spec in _walk(specs):
            for ref in spec.depends_on:
                if isinstance(ref, int) and ref in ancestors:
                    raise CycleError(
                        [spec.key, ref, spec.key],
                        reason=f"{ref} is an ancestor of new step {spec.key!r} and finishes "
                        "only after its children",
                    )

    taken = {
        row[0]
        for row in conn.execute(
            select(NODES.c.key).where(
                NODES.c.parent_id == parent["id"], NODES.c.superseded.is_(False)
            )
        )
    }
    for spec in specs:
        if spec.key in taken:
            raise DuplicateKeyError(spec.key, where=f"among the children of node {parent['id']}")
    first_position = conn.execute(
        select(func.coalesce(func.max(NODES.c.position) + 1, 0)).where(
            NODES.c.parent_id == parent["id"]
        )
    ).scalar_one()

    pending = NodeStatus.PENDING
    stamp = driver_value(conn, NODES.c.created_at, at)
    event_stamp = driver_value(conn, EVENTS.c.at, at)
    created: list[NodeRecord] = []
    edge_rows: list[tuple[Any, ...]] = []
    event_rows: list[tuple[Any, ...]] = []
    # One level at a time: a level's ids parent the next. Rows are driver-ready tuples (see
    # bulk_insert_tuples): large subtrees are bound by Python overhead, not by SQLite.
    level: list[tuple[int, int, list[NodeSpec], int]] = [
        (parent["id"], parent["depth"] + 1, specs, first_position)
    ]
    while level:
        rows: list[tuple[Any, ...]] = []
        owners: list[tuple[NodeSpec, int, int, int]] = []
        for parent_id, depth, group, offset in level:
            for index, spec in enumerate(group):
                owners.append((spec, parent_id, depth, offset + index))
                rows.append(
                    (
                        task_id,
                        parent_id,
                        spec.key,
                        spec.kind,
                        spec.title,
                        pending.value,
                        inputs[id(spec)][1],
                        spec.adapter,
                        0,
                        offset + index,
                        depth,
                        False,
                        stamp,
                        stamp,
                        1,
                    )
                )
        # Plain executemany (RETURNING in parameter order degrades to one statement per row
        # on SQLite), then read the ids back by (parent, key): unique among live siblings.
        bulk_insert_tuples(conn, NODES, _NODE_COLUMNS, rows, batch=config.insert_batch_size)
        parents = sorted({owner[1] for owner in owners})
        by_group: dict[tuple[int | None, str], int] = {}
        for part in chunks(parents):
            for node_id, parent_id, key in conn.execute(
                select(NODES.c.id, NODES.c.parent_id, NODES.c.key).where(
                    NODES.c.parent_id.in_(part), NODES.c.superseded.is_(False)
                )
            ):
                by_group[(parent_id, key)] = node_id
        next_level: list[tuple[int, int, list[NodeSpec], int]] = []
        for spec, parent_id, depth, position in owners:
            node_id = by_group[(parent_id, spec.key)]
            deps = sorted(
                {by_group[(parent_id, d)] if isinstance(d, str) else d for d in spec.depends_on}
            )
            for dep in deps:
                edge_rows.append((node_id, dep, task_id))
            value, text = inputs[id(spec)]
            created.append(
                NodeRecord(
                    id=node_id,
                    task_id=task_id,
                    parent_id=parent_id,
                    key=spec.key,
                    kind=spec.kind,
                    title=spec.title,
                    status=pending,
                    input=value,
                    output=None,
                    error=None,
                    adapter=spec.adapter,
                    route=None,
                    attempts=0,
                    position=position,
                    depth=depth,
                    superseded=False,
                    created_at=at,
                    updated_at=at,
                    started_at=None,
                    finished_at=None,
                    version=1,
                    depends_on=tuple(deps),
                )
            )
            snapshot = ENCODER.encode(
                {
                    "parent_id": parent_id,
                    "key": spec.key,
                    "kind": spec.kind,
                    "title": spec.title,
                    "status": pending.value,
                    "adapter": spec.adapter,
                    "attempts": 0,
                    "superseded": False,
                    "depends_on": deps,
                }
            )
            # Splice the input's JSON in rather than serialising it a second time.
            snapshot = f'{snapshot[:-1]},"input":{text or "null"}}}'
            event_rows.append(
                (task_id, node_id, "created", None, JsonText(snapshot), cause, event_stamp)
            )
            if spec.children:
                next_level.append((node_id, depth + 1, spec.children, 0))
        level = next_level
    bulk_insert_tuples(conn, EDGES, _EDGE_COLUMNS, edge_rows, batch=config.insert_batch_size)
    bulk_insert_tuples(conn, EVENTS, _EVENT_COLUMNS, event_rows, batch=config.insert_batch_size)
    return created


_NODE_COLUMNS = (
    "task_id",
    "parent_id",
    "key",
    "kind",
    "title",
    "status",
    "input",
    "adapter",
    "attempts",
    "position",
    "depth",
    "superseded",
    "created_at",
    "updated_at",
    "version",
)
_EDGE_COLUMNS = ("node_id", "depends_on_id", "task_id")
_EVENT_COLUMNS = ("task_id", "node_id", "field", "old", "new", "cause", "at")


def _walk(specs: list[NodeSpec]) -> list[NodeSpec]:
    out: list[NodeSpec] = []
    stack = list(reversed(specs))
    while stack:
        spec = stack.pop()
        out.append(spec)
        stack.extend(reversed(spec.children))
    return out


def supersede(
    conn: Connection, task_id: str, node_ids: list[int], *, cause: str | None, at: datetime
) -> None:
    """Mark nodes as replaced (kept, with their history, out of every live query)."""
    for part in chunks(node_ids):
        conn.execute(
            update(NODES)
            .where(NODES.c.id.in_(part))
            .values(superseded=True, version=NODES.c.version + 1, updated_at=at)
        )
    events = [event_row(task_id, n, "superseded", False, True, cause, at) for n in node_ids]
    bulk_insert(conn, EVENTS, events)
