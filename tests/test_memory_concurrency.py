"""Several OS processes on one task: optimistic locking and serialised structural changes.

Runs on a SQLite file and on PostgreSQL (in-memory SQLite cannot be shared between
processes).
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import networkx as nx
import pytest

from trellis.memory import CycleError, NodeSpec, NodeStatus, StaleWriteError, TaskStore

SPAWN = mp.get_context("spawn")


@pytest.fixture(params=["sqlite-file", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path}/shared.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _start_running(
    url: str, node_id: int, version: int, barrier: Any, results: Any, name: str
) -> None:
    with TaskStore.open(url, upgrade=False) as store:
        barrier.wait(timeout=60)
        try:
            store.transition(
                node_id, NodeStatus.RUNNING, expected_version=version, cause=f"worker {name}"
            )
            results.put((name, "won"))
        except StaleWriteError as exc:
            results.put((name, f"stale {exc.expected_version}->{exc.actual_version}"))
        except Exception as exc:  # reported to the parent, which fails the test
            results.put((name, f"error {type(exc).__name__}: {exc}"))


def _add_dependency(
    url: str, node_id: int, dep_id: int, barrier: Any, results: Any, name: str
) -> None:
    with TaskStore.open(url, upgrade=False) as store:
        barrier.wait(timeout=60)
        try:
            store.add_dependency(node_id, dep_id, cause=f"worker {name}")
            results.put((name, "added"))
        except CycleError:
            results.put((name, "cycle"))
        except Exception as exc:
            results.put((name, f"error {type(exc).__name__}: {exc}"))


def _run_pair(target: Any, args_a: tuple[Any, ...], args_b: tuple[Any, ...]) -> dict[str, str]:
    barrier = SPAWN.Barrier(2)
    results = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=target, args=(*args, barrier, results, name))
        for name, args in (("a", args_a), ("b", args_b))
    ]
    for proc in procs:
        proc.start()
    outcome = dict(results.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    return outcome


def test_two_processes_same_read_version_exactly_one_wins(shared_url: str) -> None:
    with TaskStore.open(shared_url) as store:
        task = store.create_task("race")
        root = store.root(task.id)
        store.transition(root.id, NodeStatus.RUNNING)
        (node,) = store.add_children(task.id, root.id, [NodeSpec(key="contested")])
        read = store.get_node(node.id)

        outcome = _run_pair(
            _start_running, (shared_url, node.id, read.version), (shared_url, node.id, read.version)
        )

        assert sorted(outcome.values()) == [
            "stale " + f"{read.version}->{read.version + 1}",
            "won",
        ], outcome
        after = store.get_node(node.id)
        assert after.status is NodeStatus.RUNNING
        assert after.attempts == 1 and after.version == read.version + 1
        winner = next(name for name, result in outcome.items() if result == "won")
        status_events = [e for e in store.events(task.id, node_id=node.id) if e.field == "status"]
        assert [(e.new, e.cause) for e in status_events] == [("running", f"worker {winner}")]


def test_two_processes_cannot_close_a_cycle_together(shared_url: str) -> None:
    with TaskStore.open(shared_url) as store:
        task = store.create_task("race")
        root = store.root(task.id)
        a, b = store.add_children(task.id, root.id, [NodeSpec(key="a"), NodeSpec(key="b")])

        outcome = _run_pair(_add_dependency, (shared_url, a.id, b.id), (shared_url, b.id, a.id))

        assert sorted(outcome.values()) == ["added", "cycle"], outcome
        graph = store.to_networkx(task.id)
        assert nx.is_directed_acyclic_graph(graph)
        assert len(store.get_node(a.id).depends_on) + len(store.get_node(b.id).depends_on) == 1


def _open_and_create(url: str, barrier: Any, results: Any, name: str) -> None:
    barrier.wait(timeout=60)
    try:
        with TaskStore.open(url) as store:
            results.put((name, store.get_task(store.create_task(f"from {name}").id).goal))
    except Exception as exc:
        results.put((name, f"error {type(exc).__name__}: {exc}"))


def test_two_processes_can_migrate_a_fresh_database_at_once(shared_url: str) -> None:
    outcome = _run_pair(_open_and_create, (shared_url,), (shared_url,))
    assert outcome == {"a": "from a", "b": "from b"}
    with TaskStore.open(shared_url, upgrade=False) as store:
        assert sorted(t.goal for t in store.list_tasks()) == ["from a", "from b"]
