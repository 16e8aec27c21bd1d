"""TME prompt synthesis: the context for a node stays within its budget and keeps the nearest
and most relevant parts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trellis.memory import NodeRecord, NodeSpec, NodeStatus, PromptContext, TaskStore, UsageError
from trellis.memory._context import TRUNCATED, synthesize

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _node(node_id: int, title: str, *, depth: int = 1, output: object = None) -> NodeRecord:
    return NodeRecord(
        id=node_id,
        task_id="t",
        parent_id=None if depth == 0 else node_id - 1,
        key=f"k{node_id}",
        kind="step",
        title=title,
        status=NodeStatus.DONE if output is not None else NodeStatus.PENDING,
        input=None,
        output=output,
        error=None,
        adapter=None,
        route=None,
        attempts=0,
        position=0,
        depth=depth,
        superseded=False,
        created_at=NOW,
        updated_at=NOW,
        started_at=None,
        finished_at=None,
        version=1,
    )


texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300)


@settings(max_examples=150, deadline=None)
@given(
    goal=texts,
    titles=st.lists(texts, min_size=1, max_size=6),
    outputs=st.lists(texts, max_size=5),
    budget=st.integers(0, 800),
)
def test_never_over_budget_in_characters(
    goal: str, titles: list[str], outputs: list[str], budget: int
) -> None:
    path = [_node(i + 1, t, depth=i) for i, t in enumerate(titles)]
    deps = [_node(100 + i, f"dep {i}", output={"text": o}) for i, o in enumerate(outputs)]
    context = synthesize(goal, path, deps, [], budget_chars=budget)
    assert isinstance(context, PromptContext)
    assert len(context) <= budget
    assert set(context.truncated) <= set(context.node_ids)
    assert not set(context.omitted) & set(context.node_ids) - set(context.truncated)
    if context.truncated:
        assert TRUNCATED in context


@settings(max_examples=60, deadline=None)
@given(outputs=st.lists(texts, min_size=1, max_size=5), budget=st.integers(0, 120))
def test_never_over_budget_in_tokens(outputs: list[str], budget: int) -> None:
    def count(text: str) -> int:
        return len(text.split())

    path = [_node(1, "root goal", depth=0), _node(2, "the current step")]
    deps = [_node(10 + i, "dep", output=o) for i, o in enumerate(outputs)]
    context = synthesize(
        "goal words here", path, deps, [], budget_tokens=budget, count_tokens=count
    )
    assert count(context) <= budget


def test_priorities_nearest_and_dependencies_first() -> None:
    path = [
        _node(1, "root", depth=0),
        _node(2, "far ancestor " + "x" * 200, depth=1),
        _node(3, "near ancestor", depth=2),
        _node(4, "current step", depth=3),
    ]
    deps = [_node(9, "dependency", output={"value": 42})]
    full = synthesize("the goal", path, deps, [], budget_chars=10_000)
    assert full.omitted == () and full.truncated == ()
    lines = full.splitlines()
    # Display order: goal, path root-down, current step, dependency results.
    assert lines[0] == "Goal: the goal"
    assert lines.index("Within: far ancestor " + "x" * 200 + " [pending]") < lines.index(
        "Within: near ancestor [pending]"
    )
    assert '  output: {"value": 42}' in lines
    tight = synthesize("the goal", path, deps, [], budget_chars=len(full) - 150)
    assert "near ancestor" in tight and "current step" in tight and "42" in tight
    assert 2 in tight.truncated or 2 in tight.omitted
    tiny = synthesize("the goal", path, deps, [], budget_chars=60)
    assert len(tiny) <= 60 and tiny.startswith("Goal: the goal")
    assert 9 in tiny.omitted and 3 in tiny.omitted


def test_bad_budgets() -> None:
    path = [_node(1, "root", depth=0)]
    with pytest.raises(UsageError, match="count_tokens"):
        synthesize("g", path, [], [], budget_tokens=10)
    with pytest.raises(UsageError, match="budget_chars"):
        synthesize("g", path, [], [], budget_chars=-1)
    assert synthesize("g", path, [], [], budget_chars=0) == ""


@pytest.fixture
def store(database_url: str) -> Iterator[TaskStore]:
    with TaskStore.open(database_url) as opened:
        yield opened


def test_build_context_from_the_store(store: TaskStore) -> None:
    task = store.create_task("tidy the kitchen")
    root = store.root(task.id)
    store.transition(root.id, "running")
    wash, dry, shelve = store.add_children(
        task.id,
        root.id,
        [
            NodeSpec(key="wash", title="wash the plates"),
            NodeSpec(key="dry", title="dry the plates", depends_on=["wash"]),
            NodeSpec(key="shelve", title="put plates away", input={"shelf": 2}, depends_on=["dry"]),
        ],
    )
    for node, output in ((wash, {"plates": 6}), (dry, "dry and stacked " * 30)):
        store.transition(node.id, "running")
        store.transition(node.id, "done", output=output)
    context = store.build_context(shelve.id, budget_chars=2000)
    assert context.startswith("Goal: tidy the kitchen")
    assert "Current step: put plates away [pending]" in context
    assert 'input: {"shelf": 2}' in context
    assert "Result of: dry the plates [done]" in context
    # The finished earlier sibling that is not a dependency comes in as lower priority.
    assert "Done before: wash the plates" in context
    small = store.build_context(shelve.id, budget_chars=200)
    assert len(small) <= 200 and "put plates away" in small
    assert small.truncated or small.omitted
    counted = store.build_context(
        shelve.id, budget_chars=None, budget_tokens=20, count_tokens=lambda t: len(t.split())
    )
    assert len(counted.split()) <= 20
    assert replace(wash, title="x").title == "x"  # records are plain frozen dataclasses
