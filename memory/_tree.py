"""Structural writes of the tree: batched subtree inserts, dependency checks, supersession.

Every function here runs inside the caller's write transaction, after the task row is
locked, so a failure anywhere rolls the whole change back and concurrent structural edits of
one task are serialised (no two writers can each add half of a cycle).
"""

from __future__ import annotations

import gc
import json
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from json.encoder import encode_basestring as quote
from typing import Any

import networkx as nx
from sqlalchemy import Connection, RowMapping, func, literal, select, update

from trellis.memory._records import MemoryConfig, NodeRecord, NodeSpec, NodeStatus
from trellis.memory._rows import (
    EDGES,
    EVENTS,
    NODES,
    JsonText,
    bulk_insert,
    bulk_insert_tuples,
    check_text,
    chunks,
    driver_value,
    encode_checked,
    event_row,
    fetch_node_rows,
)
from trellis.memory.errors import CycleError, DuplicateKeyError, UnknownNodeError, UsageError

__all__ = [
    "ancestor_ids",
    "check_new_dependency",
    "finishing_after",
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

    Precedence relates the start and the finish of nodes: a dependency finishes before its
    dependent starts, a parent starts before its children and finishes only after them. The
    new edge closes a cycle exactly when ``depends_on_id`` already finishes after
    ``node_id`` starts: a forward search from the node's start (see :func:`finishing_after`),
    so the cost follows what lies downstream of the node, not the size of the task. Waiting
    for one's own ancestor is refused by name: the ancestor only finishes once its children
    have.
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
    path = _precedence_path(conn, (node_id, _START), depends_on_id)
    if path is not None:
        # path runs from the node to depends_on_id; the cycle reads node -> dep -> ... -> node.
        cycle: list[object] = [node_id, *path[::-1]]
        raise CycleError(
            cycle,
            reason=f"{depends_on_id} already comes after {node_id} (through its children, "
            "its dependents, or a parent that finishes only after it)",
        )


def finishing_after(conn: Connection, node_id: int) -> set[int]:
    """Every live node that can only finish after ``node_id`` finishes.

    A new child of ``node_id`` may wait for any live node of the task outside this set (and
    outside the node itself): whatever comes after the child comes after its parent's finish.
    """
    reached: set[int] = set()
    _precedence_path(conn, (node_id, _FINISH), None, reached=reached)
    return reached


_START, _FINISH = 0, 1


def _precedence_path(
    conn: Connection,
    origin: tuple[int, int],
    target: int | None,
    *,
    reached: set[int] | None = None,
) -> list[int] | None:
    """Search forward from a node's start or finish; the nodes from the origin to the target's
    finish (None when it is not reached). ``reached`` collects every node whose finish was."""
    came_from: dict[tuple[int, int], tuple[int, int]] = {origin: origin}
    frontier = [origin]
    while frontier:
        starts = [n for n, phase in frontier if phase == _START]
        finishes = [n for n, phase in frontier if phase == _FINISH]
        moves: list[tuple[tuple[int, int], tuple[int, int]]] = [
            ((n, _START), (n, _FINISH)) for n in starts
        ]
        for part in chunks(starts):
            moves.extend(
                ((parent, _START), (child, _START))
                for parent, child in conn.execute(
                    select(NODES.c.parent_id, NODES.c.id).where(
                        NODES.c.parent_id.in_(part), NODES.c.superseded.is_(False)
                    )
                )
            )
        for part in chunks(finishes):
            moves.extend(
                ((child, _FINISH), (parent, _FINISH))
                for child, parent in conn.execute(
                    select(NODES.c.id, NODES.c.parent_id).where(
                        NODES.c.id.in_(part), NODES.c.parent_id.is_not(None)
                    )
                )
            )
            moves.extend(
                ((dep, _FINISH), (dependent, _START))
                for dep, dependent in conn.execute(
                    select(EDGES.c.depends_on_id, EDGES.c.node_id)
                    .select_from(EDGES.join(NODES, NODES.c.id == EDGES.c.node_id))
                    .where(EDGES.c.depends_on_id.in_(part), NODES.c.superseded.is_(False))
                )
            )
        frontier = []
        for source, state in moves:
            if state in came_from:
                continue
            came_from[state] = source
            if state[1] == _FINISH:
                if reached is not None:
                    reached.add(state[0])
                if state[0] == target:
                    path = [state]
                    while path[-1] != origin:
                        path.append(came_from[path[-1]])
                    nodes = [n for n, _ in reversed(path)]
                    # One entry per node: its start and finish are one step of the cycle.
                    return [n for i, n in enumerate(nodes) if i == 0 or nodes[i - 1] != n]
            frontier.append(state)
    return None


def _sibling_order(specs: list[NodeSpec]) -> None:
    """Refuse duplicate keys, unknown sibling keys and cycles among one batch of siblings."""
    keys: dict[str, NodeSpec] = {}
    # Plans usually list a step after what it waits for: then no key is unknown and no
    # cycle is possible, and the search below can be skipped.
    ordered = True
    for spec in specs:
        if spec.key in keys:
            raise DuplicateKeyError(spec.key, where="in this batch of siblings")
        if ordered:
            for dep in spec.depends_on:
                if isinstance(dep, str) and dep not in keys:
                    ordered = False
                    break
        keys[spec.key] = spec
    if ordered:
        return
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
    try:
        edges = nx.find_cycle(nx.DiGraph([(k, d) for k, deps in graph.items() for d in deps]))
    except nx.NetworkXNoCycle:
        return
    cycle: list[object] = [edge[0] for edge in edges] + [edges[0][0]]
    raise CycleError(cycle)


def _validate(
    specs: list[NodeSpec], config: MemoryConfig
) -> list[tuple[NodeSpec, tuple[Any, JsonText | None]]]:
    """Check every spec of the subtree before writing anything; inputs normalised and as JSON."""
    texts: list[tuple[NodeSpec, JsonText | None]] = []
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
            texts.append((spec, encode_checked(f"input of {spec.key!r}", spec.input, limit)))
            if spec.children:
                queue.append(spec.children)
    # Read every input back in one parse (as a read would return it: tuples become lists,
    # non-string keys strings); one json.loads per node costs more than the parse itself.
    present = [text for _, text in texts if text is not None]
    values = iter(json.loads(f"[{','.join(present)}]") if present else [])
    return [(spec, (None, None) if text is None else (next(values), text)) for spec, text in texts]


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
    with _collector_paused():
        return _insert_specs(conn, parent, specs, config=config, cause=cause, at=at)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a batch is built.

    A large batch allocates several tuples and records per node, none of them cyclic; each
    automatic collection would also walk every spec of the tree, a quarter or more of the
    insert's time at 100k nodes. It is switched back on only if it was on before.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _insert_specs(
    conn: Connection,
    parent: RowMapping,
    specs: list[NodeSpec],
    *,
    config: MemoryConfig,
    cause: str | None,
    at: datetime,
) -> list[NodeRecord]:
    task_id: str = parent["task_id"]
    if parent["superseded"]:
        raise UsageError(
            f"node {parent['id']} was superseded by replanning; add children to the live "
            "node that replaced it"
        )
    checked = _validate(specs, config)
    inputs = {id(spec): value for spec, value in checked}

    # Existing nodes named by id must be live nodes of this task, and not an ancestor.
    external = sorted({d for s, _ in checked for d in s.depends_on if isinstance(d, int)})
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
        # Whatever comes after a new node comes after the parent's finish.
        after_parent = finishing_after(conn, parent["id"])
        for spec in _walk(specs):
            for ref in spec.depends_on:
                if isinstance(ref, int) and ref in ancestors:
                    raise CycleError(
                        [spec.key, ref, spec.key],
                        reason=f"{ref} is an ancestor of new step {spec.key!r} and finishes "
                        "only after its children",
                    )
                if isinstance(ref, int) and ref in after_parent:
                    chain = _precedence_path(conn, (parent["id"], _FINISH), ref) or [ref]
                    raise CycleError(
                        [spec.key, *chain[::-1], spec.key],
                        reason=f"{ref} already comes after node {parent['id']}, which "
                        f"finishes only after its new step {spec.key!r}",
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
    pending_value = pending.value
    status = quote(pending_value)
    stamp = driver_value(conn, NODES.c.created_at, at)
    event_stamp = driver_value(conn, EVENTS.c.at, at)
    created: list[NodeRecord] = []
    edge_rows: list[tuple[Any, ...]] = []
    event_rows: list[tuple[Any, ...]] = []
    # One level at a time: a level's ids parent the next. Rows are driver-ready tuples (see
    # bulk_insert_tuples): large subtrees are bound by Python overhead, not by SQLite.
    ids = _allocate_ids(conn, len(checked))
    level: list[tuple[int, int, list[NodeSpec], int]] = [
        (parent["id"], parent["depth"] + 1, specs, first_position)
    ]
    while level:
        rows: list[tuple[Any, ...]] = []
        owners: list[tuple[NodeSpec, int, int, int]] = []
        by_group: dict[tuple[int | None, str], int] = {}
        for parent_id, depth, group, offset in level:
            for index, spec in enumerate(group):
                owners.append((spec, parent_id, depth, offset + index))
                values: tuple[Any, ...] = (
                    task_id,
                    parent_id,
                    spec.key,
                    spec.kind,
                    spec.title,
                    pending_value,
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
                if ids is not None:
                    node_id = next(ids)
                    by_group[(parent_id, spec.key)] = node_id
                    values = (node_id, *values)
                rows.append(values)
        if ids is not None:
            bulk_insert_tuples(
                conn, NODES, ("id", *_NODE_COLUMNS), rows, batch=config.insert_batch_size, copy=True
            )
        else:
            # Plain executemany (RETURNING in parameter order degrades to one statement per
            # row on SQLite), then read the ids back by (parent, key): unique among live
            # siblings.
            bulk_insert_tuples(conn, NODES, _NODE_COLUMNS, rows, batch=config.insert_batch_size)
        parents = sorted({owner[1] for owner in owners}) if ids is None else []
        for part in chunks(parents):
            for node_id, parent_id, key in conn.execute(
                select(NODES.c.id, NODES.c.parent_id, NODES.c.key).where(
                    NODES.c.parent_id.in_(part), NODES.c.superseded.is_(False)
                )
            ).all():
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
            # The text ENCODER gives for the snapshot dict, built from escaped strings: one
            # encoder call per node costs more than the rest of the row. The input's JSON is
            # spliced in rather than serialised a second time.
            adapter = "null" if spec.adapter is None else quote(spec.adapter)
            snapshot = (
                f'{{"parent_id":{parent_id},"key":{quote(spec.key)},"kind":{quote(spec.kind)},'
                f'"title":{quote(spec.title)},"status":{status},"adapter":{adapter},'
                f'"attempts":0,"superseded":false,"depends_on":[{",".join(map(str, deps))}],'
                f'"input":{text or "null"}}}'
            )
            event_rows.append(
                (task_id, node_id, "created", None, JsonText(snapshot), cause, event_stamp)
            )
            if spec.children:
                next_level.append((node_id, depth + 1, spec.children, 0))
        level = next_level
    batch = config.insert_batch_size
    bulk_insert_tuples(conn, EDGES, _EDGE_COLUMNS, edge_rows, batch=batch, copy=True)
    bulk_insert_tuples(conn, EVENTS, _EVENT_COLUMNS, event_rows, batch=batch, copy=True)
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


def _allocate_ids(conn: Connection, count: int) -> Iterator[int] | None:
    """Ids for ``count`` new nodes, in increasing order, taken before inserting them (so no
    query reads them back); None where the backend gives no safe way to reserve them."""
    backend = conn.dialect.name
    if backend == "sqlite":
        # Writers run under BEGIN IMMEDIATE, so no one else inserts until commit; the table
        # has no AUTOINCREMENT, so these are the rowids SQLite itself would assign. Without
        # an open transaction (an engine not set up by Trellis) another writer could take
        # them between the read and the insert: read the ids back instead.
        raw = conn.connection.driver_connection
        if raw is None or not getattr(raw, "in_transaction", False):
            return None
        last = conn.execute(select(func.max(NODES.c.id))).scalar_one() or 0
        return iter(range(last + 1, last + 1 + count))
    if backend == "postgresql":
        sequence = conn.execute(
            select(func.pg_get_serial_sequence(NODES.name, NODES.c.id.name))
        ).scalar_one()
        if sequence is None:
            return None
        series = func.generate_series(1, count).table_valued("n")
        taken = conn.execute(select(func.nextval(sequence)).select_from(series)).scalars()
        return iter(sorted(taken))
    return None


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
