"""Conformance suite of the Task Memory Tree: every test runs on SQLite file, SQLite memory
and PostgreSQL (the ``database_url`` fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import networkx as nx
import pytest
from sqlalchemy import func, select

from trellis.memory import (
    CycleError,
    DuplicateKeyError,
    IllegalTransitionError,
    MemoryConfig,
    NodeSpec,
    NodeStatus,
    NotSerializableError,
    PayloadTooLargeError,
    StaleWriteError,
    TaskStatus,
    TaskStore,
    UnknownNodeError,
    UnknownTaskError,
    UsageError,
    replay_events,
)
from trellis.memory._records import snapshot_fields
from trellis.memory._rows import EDGES, EVENTS, NODES


@pytest.fixture
def store(database_url: str) -> Iterator[TaskStore]:
    with TaskStore.open(database_url) as opened:
        yield opened


def _counts(store: TaskStore) -> tuple[int, int, int]:
    with store.engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(NODES)).scalar_one(),
            conn.execute(select(func.count()).select_from(EDGES)).scalar_one(),
            conn.execute(select(func.count()).select_from(EVENTS)).scalar_one(),
        )


def _started(store: TaskStore, goal: str = "make tea") -> tuple[str, int]:
    task = store.create_task(goal, user_id="ann", metadata={"env": "kitchen"})
    root = store.root(task.id)
    store.transition(root.id, NodeStatus.RUNNING, cause="planning")
    return task.id, root.id


def _tea_plan() -> list[NodeSpec]:
    return [
        NodeSpec(key="boil", title="boil water", input={"litres": 0.5}),
        NodeSpec(key="cup", title="fetch a cup"),
        NodeSpec(key="steep", title="steep the tea", depends_on=["boil", "cup"]),
    ]


def test_create_task_and_read_back(store: TaskStore) -> None:
    task = store.create_task("make tea", user_id="ann", metadata={"env": "kitchen", "n": (1, 2)})
    assert len(task.id) == 32
    assert task.status is TaskStatus.PENDING
    assert task.metadata == {"env": "kitchen", "n": [1, 2]}
    root = store.root(task.id)
    assert (root.kind, root.key, root.title, root.parent_id) == ("goal", "root", "make tea", None)
    assert root.id == task.root_id
    assert store.get_task(task.id) == task
    assert store.get_node(root.id) == root
    assert root.created_at.tzinfo is not None


def test_list_and_status_of_tasks(store: TaskStore) -> None:
    a = store.create_task("a", user_id="ann")
    b = store.create_task("b", user_id="bob")
    c = store.create_task("c", user_id="ann")
    assert {t.id for t in store.list_tasks(user_id="ann")} == {a.id, c.id}
    updated = store.set_task_status(b.id, "running", cause="agent started")
    assert updated.status is TaskStatus.RUNNING and updated.version == b.version + 1
    assert [t.id for t in store.list_tasks(status=TaskStatus.RUNNING)] == [b.id]
    assert len(store.list_tasks(limit=2)) == 2
    with pytest.raises(StaleWriteError):
        store.set_task_status(b.id, "done", expected_version=b.version)
    with pytest.raises(UsageError, match="unknown task status"):
        store.set_task_status(b.id, "finished")
    events = [e for e in store.events(b.id) if e.field == "task.status"]
    assert [(e.old, e.new, e.cause) for e in events] == [("pending", "running", "agent started")]


def test_add_children_with_subtree_and_dependencies(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    plan = [
        *_tea_plan(),
        NodeSpec(
            key="serve",
            title="serve",
            depends_on=["steep"],
            children=[NodeSpec(key="pour"), NodeSpec(key="hand", depends_on=["pour"])],
        ),
    ]
    created = store.add_children(task_id, root_id, plan, cause="plan v1")
    by_key = {n.key: n for n in created}
    assert [n.key for n in created] == ["boil", "cup", "steep", "serve", "pour", "hand"]
    assert by_key["steep"].depends_on == tuple(sorted((by_key["boil"].id, by_key["cup"].id)))
    assert by_key["hand"].depends_on == (by_key["pour"].id,)
    assert by_key["pour"].parent_id == by_key["serve"].id
    assert by_key["pour"].depth == 2
    assert [n.key for n in store.children(root_id)] == ["boil", "cup", "steep", "serve"]
    assert by_key["boil"].input == {"litres": 0.5}
    # Records the call returned equal what a later read gives.
    assert store.get_node(by_key["steep"].id) == by_key["steep"]
    # Later children continue the plan order and may depend on existing nodes by id.
    (extra,) = store.add_children(
        task_id, root_id, [NodeSpec(key="wash", depends_on=[by_key["serve"].id])]
    )
    assert extra.position == 4 and extra.depends_on == (by_key["serve"].id,)
    assert [d.key for d in store.dependencies(by_key["steep"].id)] == ["boil", "cup"]
    assert [d.key for d in store.dependents(by_key["boil"].id)] == ["steep"]


def test_ready_set_follows_dependencies_and_running_parents(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    created = {n.key: n for n in store.add_children(task_id, root_id, _tea_plan())}
    assert [n.key for n in store.ready_nodes(task_id)] == ["boil", "cup"]
    store.transition(created["boil"].id, "running")
    assert [n.key for n in store.ready_nodes(task_id)] == ["cup"]
    store.transition(created["boil"].id, "done", output={"temp": 100})
    store.transition(created["cup"].id, "skipped", cause="cup already out")
    assert [n.key for n in store.ready_nodes(task_id)] == ["steep"]
    # Children wait for their parent to run, so a blocked parent blocks its subtree.
    (sub,) = store.add_children(task_id, created["steep"].id, [NodeSpec(key="bag")])
    assert [n.key for n in store.ready_nodes(task_id)] == ["steep"]
    store.transition(created["steep"].id, "running")
    assert [n.id for n in store.ready_nodes(task_id)] == [sub.id]
    assert store.ready_nodes(task_id, limit=0) == []


def test_ready_set_of_new_task_is_its_root(store: TaskStore) -> None:
    task = store.create_task("g")
    assert [n.id for n in store.ready_nodes(task.id)] == [task.root_id]


def test_state_machine_and_timestamps(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    (node,) = store.add_children(task_id, root_id, [NodeSpec(key="a")])
    running = store.transition(node.id, "running", adapter="kitchen-lora", route={"score": 0.9})
    assert running.attempts == 1 and running.started_at is not None
    assert (running.adapter, running.route) == ("kitchen-lora", {"score": 0.9})
    failed = store.transition(node.id, "failed", error="kettle broken")
    assert failed.finished_at is not None and failed.error == "kettle broken"
    retry = store.transition(node.id, "pending", cause="retry")
    assert retry.finished_at is None and retry.error == "kettle broken"
    again = store.transition(node.id, "running")
    assert again.attempts == 2
    done = store.transition(node.id, NodeStatus.DONE, output=["ok"])
    assert done.is_terminal and done.output == ["ok"] and done.version == node.version + 5
    with pytest.raises(IllegalTransitionError, match="done -> running") as info:
        store.transition(node.id, "running")
    assert "none (terminal state)" in str(info.value)
    (other,) = store.add_children(task_id, root_id, [NodeSpec(key="b")])
    with pytest.raises(IllegalTransitionError, match=r"pending -> done.*ready, running"):
        store.transition(other.id, "done")
    with pytest.raises(UsageError, match="unknown node status"):
        store.transition(other.id, "finished")
    assert store.get_node(other.id).status is NodeStatus.PENDING


def test_update_node_sets_and_clears_fields(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    (node,) = store.add_children(task_id, root_id, [NodeSpec(key="a", title="old")])
    changed = store.update_node(node.id, title="new", route={"adapter": None}, adapter="x")
    assert (changed.title, changed.route, changed.adapter) == ("new", {"adapter": None}, "x")
    cleared = store.update_node(node.id, adapter=None, expected_version=changed.version)
    assert cleared.adapter is None and cleared.route == {"adapter": None}
    with pytest.raises(StaleWriteError, match="read at version"):
        store.update_node(node.id, title="late", expected_version=changed.version)
    assert store.get_node(node.id).title == "new"


def test_stale_write_is_rejected(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    (node,) = store.add_children(task_id, root_id, [NodeSpec(key="a")])
    store.transition(node.id, "running", expected_version=node.version)
    with pytest.raises(StaleWriteError) as info:
        store.transition(node.id, "running", expected_version=node.version)
    assert info.value.expected_version == node.version
    assert info.value.actual_version == node.version + 1
    assert store.get_node(node.id).attempts == 1


def test_unknown_ids(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    other = store.create_task("other")
    with pytest.raises(UnknownTaskError, match="nope"):
        store.get_task("nope")
    with pytest.raises(UnknownTaskError):
        store.ready_nodes("nope")
    with pytest.raises(UnknownNodeError, match="999999"):
        store.get_node(999_999)
    with pytest.raises(UnknownNodeError):
        store.transition(999_999, "running")
    with pytest.raises(UnknownNodeError):
        store.active_path(999_999)
    # A node of another task is unknown in this one.
    with pytest.raises(UnknownNodeError, match=task_id):
        store.add_children(task_id, other.root_id or 0, [NodeSpec(key="x")])
    with pytest.raises(UnknownNodeError):
        store.add_children(task_id, root_id, [NodeSpec(key="x", depends_on=[other.root_id or 0])])
    with pytest.raises(UnknownNodeError):
        store.add_dependency(root_id, other.root_id or 0)


def test_cycles_are_rejected_and_named(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    nodes = {n.key: n for n in store.add_children(task_id, root_id, _tea_plan())}
    boil, steep = nodes["boil"].id, nodes["steep"].id
    before = _counts(store)
    with pytest.raises(CycleError) as info:
        store.add_dependency(boil, steep)
    assert info.value.cycle == [boil, steep, boil]
    assert f"{boil} -> {steep} -> {boil}" in str(info.value)
    with pytest.raises(CycleError):
        store.add_dependency(boil, boil)
    with pytest.raises(CycleError, match="ancestor"):
        store.add_dependency(boil, root_id)
    with pytest.raises(CycleError, match="comes after"):
        store.add_dependency(root_id, boil)
    with pytest.raises(CycleError) as batch:
        store.add_children(
            task_id,
            boil,
            [
                NodeSpec(key="a", depends_on=["c"]),
                NodeSpec(key="b", depends_on=["a"]),
                NodeSpec(key="c", depends_on=["b"]),
            ],
        )
    assert batch.value.cycle[0] == batch.value.cycle[-1] and len(batch.value.cycle) == 4
    assert _counts(store) == before
    # A longer chain: b waits for a, c for b; then a waiting for c closes it.
    a, b, c = (
        n.id
        for n in store.add_children(
            task_id,
            nodes["cup"].id,
            [NodeSpec(key="a"), NodeSpec(key="b", depends_on=["a"]), NodeSpec(key="c")],
        )
    )
    store.add_dependency(c, b)
    with pytest.raises(CycleError) as chain:
        store.add_dependency(a, c)
    assert chain.value.cycle == [a, c, b, a]  # a waits for c, c for b, b for a
    assert nx.is_directed_acyclic_graph(store.to_networkx(task_id))


def test_bad_specs_write_nothing(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    store.add_children(task_id, root_id, [NodeSpec(key="a")])
    before = _counts(store)
    with pytest.raises(DuplicateKeyError, match="'a'"):
        store.add_children(task_id, root_id, [NodeSpec(key="b"), NodeSpec(key="a")])
    with pytest.raises(DuplicateKeyError):
        store.add_children(task_id, root_id, [NodeSpec(key="c"), NodeSpec(key="c")])
    with pytest.raises(UsageError, match="not a sibling key"):
        store.add_children(task_id, root_id, [NodeSpec(key="d", depends_on=["zzz"])])
    with pytest.raises(NotSerializableError, match="input of 'e'"):
        store.add_children(task_id, root_id, [NodeSpec(key="e", input={"f": object()})])
    with pytest.raises(NotSerializableError):
        store.add_children(task_id, root_id, [NodeSpec(key="e", input={"f": float("nan")})])
    with pytest.raises(NotSerializableError, match="NUL"):
        store.add_children(task_id, root_id, [NodeSpec(key="e", input="a\x00b")])
    # A bad grandchild fails the whole subtree, written or not.
    with pytest.raises(NotSerializableError):
        store.add_children(
            task_id,
            root_id,
            [NodeSpec(key="f", children=[NodeSpec(key="g", input={1j: 2})])],
        )
    assert _counts(store) == before


def test_payload_limits(database_url: str) -> None:
    with TaskStore.open(database_url, config=MemoryConfig(max_payload_bytes=100)) as store:
        task_id, root_id = _started(store)
        (node,) = store.add_children(task_id, root_id, [NodeSpec(key="a")])
        store.transition(node.id, "running")
        with pytest.raises(PayloadTooLargeError, match=r"output is 1\d\d bytes") as info:
            store.transition(node.id, "done", output={"text": "x" * 100})
        assert info.value.limit == 100
        with pytest.raises(NotSerializableError):
            store.transition(node.id, "done", output={"when": object()})
        with pytest.raises(PayloadTooLargeError):
            store.add_children(task_id, root_id, [NodeSpec(key="b", input=["y" * 200])])
        with pytest.raises(PayloadTooLargeError):
            store.create_task("g", metadata={"blob": "z" * 200})
        # Nothing moved: the node is still running at the same version.
        assert store.get_node(node.id).status is NodeStatus.RUNNING
        assert store.get_node(node.id).version == node.version + 1


def test_active_path_topological_order_and_exports(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    nodes = {n.key: n for n in store.add_children(task_id, root_id, _tea_plan())}
    (leaf,) = store.add_children(task_id, nodes["steep"].id, [NodeSpec(key="bag")])
    assert [n.key for n in store.active_path(leaf.id)] == ["root", "steep", "bag"]
    order = [n.key for n in store.topological_order(task_id)]
    assert order.index("boil") < order.index("steep") < order.index("bag")
    assert order.index("cup") < order.index("steep") and order[0] == "root"
    graph = store.to_networkx(task_id)
    assert graph.number_of_nodes() == 5
    assert graph.edges[nodes["boil"].id, nodes["steep"].id]["kind"] == "dependency"
    assert graph.edges[root_id, nodes["boil"].id]["kind"] == "child"
    assert graph.nodes[leaf.id]["status"] == "pending"
    text = store.to_mermaid(task_id)
    assert text.startswith("flowchart TD")
    assert f"n{nodes['boil'].id} -.-> n{nodes['steep'].id}" in text
    assert f"n{root_id} --> n{nodes['boil'].id}" in text


def test_mermaid_escapes_titles(store: TaskStore) -> None:
    task = store.create_task('say "hi" <b>now</b>\nplease')
    text = store.to_mermaid(task.id)
    assert "#quot;hi#quot;" in text and "#lt;b#gt;" in text
    assert "\nplease" not in text


def test_replace_subtree_keeps_history_and_retargets(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    nodes = {n.key: n for n in store.add_children(task_id, root_id, _tea_plan())}
    steep = nodes["steep"]
    old_children = store.add_children(
        task_id, steep.id, [NodeSpec(key="bag"), NodeSpec(key="wait", depends_on=["bag"])]
    )
    (serve,) = store.add_children(
        task_id, root_id, [NodeSpec(key="serve", depends_on=[old_children[1].id])]
    )
    new = store.replace_subtree(
        steep.id, [NodeSpec(key="leaves"), NodeSpec(key="wait", depends_on=["leaves"])]
    )
    assert [n.key for n in new] == ["leaves", "wait"]
    assert [n.key for n in store.children(steep.id)] == ["leaves", "wait"]
    everything = store.children(steep.id, include_superseded=True)
    assert [(n.key, n.superseded) for n in everything] == [
        ("bag", True),
        ("wait", True),
        ("leaves", False),
        ("wait", False),
    ]
    # "serve" waited for the old "wait"; now it waits for the new one.
    assert store.get_node(serve.id).depends_on == (new[1].id,)
    assert all(n.id not in {c.id for c in old_children} for n in store.nodes(task_id))
    assert len(store.nodes(task_id, include_superseded=True)) == len(store.nodes(task_id)) + 2
    superseded_events = [e for e in store.events(task_id) if e.field == "superseded"]
    assert {e.node_id for e in superseded_events} == {c.id for c in old_children}
    with pytest.raises(UsageError, match="superseded"):
        store.add_dependency(serve.id, old_children[0].id)
    # Without a same-key replacement, the dependency moves to the replanned node itself.
    store.replace_subtree(steep.id, [NodeSpec(key="other")])
    assert store.get_node(serve.id).depends_on == (steep.id,)


def test_history_replays_to_current_state(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    nodes = {n.key: n for n in store.add_children(task_id, root_id, _tea_plan())}
    store.transition(nodes["boil"].id, "running", adapter="a1")
    store.transition(nodes["boil"].id, "done", output={"t": 99})
    store.add_dependency(nodes["cup"].id, nodes["boil"].id, cause="user")
    store.update_node(nodes["cup"].id, title="fetch the big cup")
    store.replace_subtree(nodes["steep"].id, [NodeSpec(key="x")])
    replayed = replay_events(store.events(task_id))
    current = store.nodes(task_id, include_superseded=True)
    assert replayed == {n.id: snapshot_fields(n) for n in current}
    cup_events = store.events(task_id, node_id=nodes["cup"].id)
    assert [e.field for e in cup_events] == ["created", "depends_on", "title"]
    assert cup_events[1].cause == "user"
    assert store.events(task_id, after_id=cup_events[-1].id, limit=1)[0].id > cup_events[-1].id


def test_delete_task(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    store.add_children(task_id, root_id, _tea_plan())
    keep = store.create_task("keep")
    store.delete_task(task_id)
    with pytest.raises(UnknownTaskError):
        store.get_task(task_id)
    assert store.get_task(keep.id).goal == "keep"
    assert _counts(store)[0] == 1


async def test_async_store_runs_the_same_operations(database_url: str) -> None:
    import asyncio

    from trellis.memory import AsyncTaskStore

    store = await AsyncTaskStore.open(database_url)
    try:
        task = await store.create_task("async goal")
        root = await store.root(task.id)
        await store.transition(root.id, "running")
        created = await store.add_children(
            task.id, root.id, [NodeSpec(key=f"k{i}") for i in range(8)]
        )
        # Concurrent calls from one loop: each finishes, none is lost.
        finished = await asyncio.gather(
            *(store.transition(n.id, "running", expected_version=n.version) for n in created)
        )
        assert {n.status for n in finished} == {NodeStatus.RUNNING}
        assert await store.ready_nodes(task.id) == []
        updated = await store.update_node(created[0].id, title="renamed")
        assert (await store.get_node(created[0].id)).title == updated.title == "renamed"
        assert "renamed" in await store.to_mermaid(task.id)
    finally:
        await store.close()


def test_specs_may_be_plain_dicts(store: TaskStore) -> None:
    task_id, root_id = _started(store)
    first, second = store.add_children(
        task_id, root_id, [{"key": "a", "title": "A"}, {"key": "b", "depends_on": ["a"]}]
    )
    assert second.depends_on == (first.id,) and first.title == "A"
    with pytest.raises(UsageError, match="node spec #0 is invalid"):
        store.add_children(task_id, root_id, [{"key": "", "title": 3}])
    with pytest.raises(UsageError, match="not bools"):
        store.add_children(task_id, root_id, [{"key": "c", "depends_on": [True]}])


def test_a_url_where_an_engine_belongs_and_an_unknown_scheme_are_named() -> None:
    from trellis.memory import make_engine

    with pytest.raises(UsageError, match=r"TaskStore\.open\(url\)"):
        TaskStore("sqlite://")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"cannot open database URL 'nosuch://x'.*sqlite:///"):
        make_engine("nosuch://x")
