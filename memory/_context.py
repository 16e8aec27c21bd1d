"""TME prompt synthesis: the context an LLM sees for one node, under a size budget.

Sections, in the order they are *kept* when space runs out: the goal, the current step, the
outputs of its dependencies, the path above it (nearest ancestor first), then finished
earlier siblings. A section that does not fit whole is shortened with a visible marker; one
that does not fit at all is left out and counted in a closing note. The result never
exceeds the budget, in characters or in tokens (with a caller-supplied counter).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trellis.memory._records import NodeRecord
from trellis.memory.errors import UsageError

__all__ = ["PromptContext", "synthesize"]

TRUNCATED = " …[truncated]"
# Below this many characters a shortened section says nothing useful: leave it out.
MIN_SECTION = 24


class PromptContext(str):
    """The context text (a ``str``) with what went into it.

    ``node_ids``: the nodes whose text is included (whole or shortened); ``truncated``: the
    ids shortened to fit; ``omitted``: the ids left out.
    """

    node_ids: tuple[int, ...]
    truncated: tuple[int, ...]
    omitted: tuple[int, ...]

    def __new__(
        cls,
        text: str,
        node_ids: tuple[int, ...] = (),
        truncated: tuple[int, ...] = (),
        omitted: tuple[int, ...] = (),
    ) -> PromptContext:
        obj = super().__new__(cls, text)
        obj.node_ids = node_ids
        obj.truncated = truncated
        obj.omitted = omitted
        return obj

    @property
    def text(self) -> str:
        return str.__str__(self)


@dataclass
class _Section:
    node_id: int | None  # None: the goal line (the task's, not a node's)
    priority: int
    order: int
    text: str


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _node_line(label: str, node: NodeRecord, *, with_output: bool) -> str:
    line = f"{label}: {node.title or node.key} [{node.status.value}]"
    if node.input is not None and label == "Current step":
        line += f"\n  input: {_value(node.input)}"
    if with_output and node.output is not None:
        line += f"\n  output: {_value(node.output)}"
    if with_output and node.error:
        line += f"\n  error: {node.error}"
    return line


def synthesize(
    goal: str,
    path: list[NodeRecord],
    dependencies: list[NodeRecord],
    siblings: list[NodeRecord],
    *,
    budget_chars: int | None = 2000,
    budget_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> PromptContext:
    """Build the context for ``path[-1]`` (``path`` runs from the root down)."""
    if budget_tokens is not None:
        if count_tokens is None:
            raise UsageError("budget_tokens needs count_tokens, a function str -> token count")
        if budget_tokens < 0:
            raise UsageError(f"budget_tokens must be >= 0, got {budget_tokens}")
        budget, size = budget_tokens, count_tokens
    else:
        if budget_chars is None or budget_chars < 0:
            raise UsageError(f"budget_chars must be >= 0, got {budget_chars}")
        budget, size = budget_chars, len
    if not path:
        raise UsageError("synthesize needs the active path (root first, current node last)")

    current = path[-1]
    ancestors = path[:-1]
    sections: list[_Section] = []
    sections.append(_Section(None, 0, 0, f"Goal: {goal}"))
    sections.append(
        _Section(current.id, 1, 10_000, _node_line("Current step", current, with_output=False))
    )
    for rank, dep in enumerate(dependencies):
        sections.append(
            _Section(
                dep.id, 2 + rank, 20_000 + rank, _node_line("Result of", dep, with_output=True)
            )
        )
    # Ancestors below the root, nearest first in priority, root-down in display order.
    base = 2 + len(dependencies)
    for distance, node in enumerate(reversed(ancestors[1:])):
        sections.append(
            _Section(
                node.id,
                base + distance,
                1_000 + node.depth,
                _node_line("Within", node, with_output=False),
            )
        )
    base += len(ancestors)
    for rank, node in enumerate(siblings):
        sections.append(
            _Section(
                node.id,
                base + rank,
                5_000 - rank,
                _node_line("Done before", node, with_output=True),
            )
        )

    kept: list[_Section] = []
    truncated: list[int | None] = []
    omitted: list[int | None] = []
    sep = "\n"

    def render(parts: list[_Section], note: str = "") -> str:
        body = sep.join(s.text for s in sorted(parts, key=lambda s: s.order))
        return body + (sep + note if note and body else note)

    for section in sorted(sections, key=lambda s: s.priority):
        trial = [*kept, section]
        if size(render(trial)) <= budget:
            kept.append(section)
            continue
        shortened = _shorten(section, kept, budget, size, render)
        if shortened is not None:
            kept.append(shortened)
            truncated.append(section.node_id)
        else:
            omitted.append(section.node_id)

    note = f"[{len(omitted)} more item(s) omitted to fit the budget]" if omitted else ""
    shown = sorted(kept, key=lambda s: s.order)
    text = render(kept, note)
    if note and size(text) > budget:
        text = render(kept)
    if size(text) > budget:  # only possible when even one section cannot fit
        text, shown = "", []
    return PromptContext(
        text,
        node_ids=tuple(s.node_id for s in shown if s.node_id is not None),
        truncated=tuple(n for n in truncated if n is not None),
        omitted=tuple(n for n in omitted if n is not None),
    )


def _shorten(
    section: _Section,
    kept: list[_Section],
    budget: int,
    size: Callable[[str], int],
    render: Callable[[list[_Section]], str],
) -> _Section | None:
    """The longest prefix of ``section`` (plus the marker) that still fits, if any useful."""
    low, high = 0, len(section.text)
    best: _Section | None = None
    while low <= high:
        mid = (low + high) // 2
        candidate = _Section(
            section.node_id,
            section.priority,
            section.order,
            section.text[:mid].rstrip() + TRUNCATED,
        )
        if size(render([*kept, candidate])) <= budget:
            best = candidate
            low = mid + 1
        else:
            high = mid - 1
    if best is None or len(best.text) - len(TRUNCATED) < MIN_SECTION:
        return None
    return best
