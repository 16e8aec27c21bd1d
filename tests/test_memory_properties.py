"""Property-based tests of the tree's invariants under random operation sequences.

After any sequence of adds, dependencies, transitions and replans: no cycle is stored, the
ready set equals its definition computed from the stored nodes, every accepted transition
was legal (and every refused one illegal), and the event history replays to the state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trellis.memory import (
    CycleError,
    IllegalTransitionError,
    NodeRecord,
    NodeSpec,
    NodeStatus,
    TaskStore,
    UsageError,
    replay_events,
)
from trellis.memory._records import SATISFIED, TRANSITIONS, snapshot_fields

STATUSES = list(NodeStatus)

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(0, 50),
            st.integers(1, 3),
            st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=3),
            st.none() | st.integers(0, 50),
        ),
        st.tuples(st.just("dep"), st.integers(0, 50), st.integers(0, 50)),
        st.tuples(st.just("move"), st.integers(0, 50), st.sampled_from(STATUSES)),
        st.tuples(st.just("replan"), st.integers(0, 50), st.integers(0, 2)),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture(params=["sqlite-memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[TaskStore]:
    """One store per backend; every hypothesis example works on its own fresh task."""
    url = (
        "sqlite://" if request.param == "sqlite-memory" else request.getfixturevalue("postgres_url")
    )
    with TaskStore.open(url) as opened:
        yield opened


def _expected_ready(nodes: list[NodeRecord]) -> list[int]:
    by_id = {n.id: n for n in nodes}
    ready = []
    for node in nodes:
        if node.status not in (NodeStatus.PENDING, NodeStatus.READY):
            continue
        if node.parent_id is not None and by_id[node.parent_id].status is not NodeStatus.RUNNING:
            continue
        if all(by_id[d].status in SATISFIED for d in node.depends_on if d in by_id):
            ready.append(node.id)
    return ready


def _check_invariants(store: TaskStore, task_id: str, statuses: dict[int, NodeStatus]) -> None:
    everything = store.nodes(task_id, include_superseded=True)
    live = [n for n in everything if not n.superseded]
    # Ready set: the SQL-side query equals the definition computed from the snapshot.
    assert [n.id for n in store.ready_nodes(task_id)] == _expected_ready(live)
    # No cycle through dependencies and parent links, over every stored edge.
    graph = nx.DiGraph()
    by_id = {n.id: n for n in everything}
    for node in everything:
        graph.add_node(node.id)
        if node.parent_id is not None and not node.superseded:
            graph.add_edge(node.parent_id, node.id)
        for dep in node.depends_on:
            graph.add_edge(dep, node.id)
            # Never waiting for one's own ancestor.
            parent = node.parent_id
            while parent is not None:
                assert parent != dep
                parent = by_id[parent].parent_id
    assert nx.is_directed_acyclic_graph(graph)
    # Statuses match the reference model; history replays to the stored state.
    assert {n.id: n.status for n in everything} == statuses
    replayed = replay_events(store.events(task_id))
    assert replayed == {n.id: snapshot_fields(n) for n in everything}


def _apply(
    store: TaskStore, task_id: str, op: tuple[Any, ...], statuses: dict[int, NodeStatus]
) -> None:
    live = store.nodes(task_id)

    def pick(index: int) -> NodeRecord:
        return live[index % len(live)]

    kind = op[0]
    if kind == "add":
        _, parent_index, count, sibling_deps, external = op
        parent = pick(parent_index)
        specs = []
        for i in range(count):
            deps: list[str | int] = [f"s{j}" for a, j in sibling_deps if a == i and j < i]
            if external is not None and i == 0:
                deps.append(pick(external).id)
            specs.append(NodeSpec(key=f"s{i}", depends_on=deps))
        try:
            created = store.add_children(task_id, parent.id, specs)
        except (CycleError, UsageError):
            return
        statuses.update({n.id: n.status for n in created})
    elif kind == "dep":
        with contextlib.suppress(CycleError):
            store.add_dependency(pick(op[1]).id, pick(op[2]).id)
    elif kind == "move":
        node, target = pick(op[1]), op[2]
        legal = target in TRANSITIONS[statuses[node.id]]
        try:
            store.transition(node.id, target)
        except IllegalTransitionError:
            assert not legal
            return
        assert legal
        statuses[node.id] = target
    elif kind == "replan":
        node = pick(op[1])
        try:
            created = store.replace_subtree(node.id, [NodeSpec(key=f"r{i}") for i in range(op[2])])
        except CycleError:
            return
        statuses.update({n.id: n.status for n in created})


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_invariants_hold_after_any_operation_sequence(store: TaskStore, ops: list[Any]) -> None:
    task = store.create_task("property")
    statuses = {task.root_id: NodeStatus.PENDING}
    for op in ops:
        _apply(store, task.id, op, statuses)
    _check_invariants(store, task.id, statuses)
