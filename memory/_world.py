"""World memory: what a task's environment has shown so far, kept in the Task Memory Tree.

An environment reports facts as (subject, relation, object) triples. The task keeps the
facts of its starting state in its metadata (``env_facts``) and those of each move in the
move node's output (``facts``), so the memory is as durable as the tree, rebuilt exactly on
resume and replay, and never needs a table of its own. Folding them in order keeps the
latest object of each (subject, relation); an empty object forgets the pair.
:func:`render_world` writes the memory for a prompt, under a character budget, with the
subjects the caller focuses on first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from trellis.memory._records import NodeRecord, NodeStatus, TaskRecord

__all__ = [
    "FACTS_KEY",
    "START_KEY",
    "WorldMemory",
    "fact_rows",
    "fold",
    "render_world",
    "world_memory",
]

FACTS_KEY = "facts"
"""Where a move node's output keeps the facts its step revealed."""
START_KEY = "env_facts"
"""Where a task's metadata keeps the facts of the environment's starting state."""

WorldMemory = dict[tuple[str, str], str]
"""(subject, relation) -> object, in the order the pairs were first learned."""


def fact_rows(facts: Iterable[Any]) -> list[list[str]]:
    """Facts (objects with subject/relation/object, or triples) as JSON rows to store."""
    rows: list[list[str]] = []
    for fact in facts:
        if isinstance(fact, Sequence) and not isinstance(fact, str) and len(fact) == 3:
            subject, relation, value = fact
        else:
            subject, relation, value = fact.subject, fact.relation, fact.object
        rows.append([str(subject), str(relation), str(value)])
    return rows


def fold(memory: WorldMemory, rows: Iterable[Sequence[str]]) -> WorldMemory:
    """Apply one batch of fact rows to ``memory`` (in place; returned for chaining)."""
    for subject, relation, value in rows:
        key = (subject, relation)
        if not value:
            memory.pop(key, None)
            continue
        memory.pop(key, None)  # re-learned facts move to the end: most recent last
        memory[key] = value
    return memory


def world_memory(task: TaskRecord, nodes: Iterable[NodeRecord]) -> WorldMemory:
    """The task's world memory from its metadata and its finished environment moves (in
    the order they ran; replaced moves included: a move made cannot be unmade)."""
    memory: WorldMemory = {}
    fold(memory, (task.metadata or {}).get(START_KEY) or [])
    for node in sorted(nodes, key=lambda n: n.id):
        if node.status is NodeStatus.DONE and isinstance(node.output, dict):
            fold(memory, node.output.get(FACTS_KEY) or [])
    return memory


def render_world(
    memory: Mapping[tuple[str, str], str], *, budget_chars: int, focus: Sequence[str] = ()
) -> str:
    """One line per subject (``subject: relation object; ...``), subjects named in ``focus``
    first, then the most recently learned; lines that do not fit are left out and counted."""
    by_subject: dict[str, list[str]] = {}
    recency: dict[str, int] = {}
    for index, ((subject, relation), value) in enumerate(memory.items()):
        by_subject.setdefault(subject, []).append(f"{relation} {value}")
        recency[subject] = index
    wanted = [" ".join(text.lower().split()) for text in focus]

    def rank(subject: str) -> tuple[int, int]:
        focused = any(subject.lower() in text for text in wanted)
        return (0 if focused else 1, -recency[subject])

    lines: list[str] = []
    used = 0
    left_out = 0
    for subject in sorted(by_subject, key=rank):
        line = f"{subject}: " + "; ".join(by_subject[subject])
        if used + len(line) + 1 > budget_chars:
            left_out += 1
            continue
        lines.append(line)
        used += len(line) + 1
    if left_out and lines:
        lines.append(f"(+{left_out} more)")
    return "\n".join(lines)
