"""Whole-task graph views: networkx export, Mermaid rendering, topological order."""

from __future__ import annotations

from dataclasses import asdict

import networkx as nx

from trellis.memory._records import NodeRecord, NodeStatus

__all__ = ["mermaid", "networkx_graph", "topological"]


def networkx_graph(nodes: list[NodeRecord]) -> nx.DiGraph:
    """Parent -> child edges (``kind="child"``) and dependency -> dependent (``"dependency"``)."""
    graph = nx.DiGraph()
    present = {n.id for n in nodes}
    for node in nodes:
        attrs = asdict(node)
        attrs["status"] = node.status.value
        graph.add_node(node.id, **attrs)
    for node in nodes:
        if node.parent_id is not None and node.parent_id in present:
            graph.add_edge(node.parent_id, node.id, kind="child")
        for dep in node.depends_on:
            if dep in present:
                graph.add_edge(dep, node.id, kind="dependency")
    return graph


def topological(nodes: list[NodeRecord]) -> list[NodeRecord]:
    """Parents before children and dependencies before dependents; among the nodes ready at
    once, shallower first, then in plan order."""
    by_id = {n.id: n for n in nodes}
    graph = nx.DiGraph()
    graph.add_nodes_from(by_id)
    for node in nodes:
        if node.parent_id is not None and node.parent_id in by_id:
            graph.add_edge(node.parent_id, node.id)
        graph.add_edges_from((dep, node.id) for dep in node.depends_on if dep in by_id)
    try:
        order = nx.lexicographical_topological_sort(
            graph, key=lambda i: (by_id[i].depth, by_id[i].position, i)
        )
        return [by_id[i] for i in order]
    except nx.NetworkXUnfeasible:
        # The store refuses cycles; if one got in anyway, keep every node visible.
        return sorted(nodes, key=lambda n: (n.depth, n.position, n.id))


_STYLE = {
    NodeStatus.PENDING: "fill:#eeeeee,stroke:#999999",
    NodeStatus.READY: "fill:#dbeafe,stroke:#3b82f6",
    NodeStatus.RUNNING: "fill:#fef3c7,stroke:#d97706",
    NodeStatus.DONE: "fill:#dcfce7,stroke:#16a34a",
    NodeStatus.FAILED: "fill:#fee2e2,stroke:#dc2626",
    NodeStatus.SKIPPED: "fill:#f3f4f6,stroke:#9ca3af,stroke-dasharray:3",
    NodeStatus.CANCELLED: "fill:#f3f4f6,stroke:#6b7280,stroke-dasharray:3",
}


def _label(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    # Mermaid entity codes keep quotes and brackets from ending the label early.
    for raw, code in (("&", "#amp;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(raw, code)
    return text


def mermaid(nodes: list[NodeRecord]) -> str:
    """A Mermaid flowchart: solid arrows parent -> child, dotted dependency -> dependent."""
    lines = ["flowchart TD"]
    present = {n.id for n in nodes}
    for node in nodes:
        title = _label(node.title or node.key)
        extra = " (superseded)" if node.superseded else ""
        lines.append(
            f'  n{node.id}["{title}<br/>{node.status.value}{extra}"]:::{node.status.value}'
        )
    for node in nodes:
        if node.parent_id is not None and node.parent_id in present:
            lines.append(f"  n{node.parent_id} --> n{node.id}")
    for node in nodes:
        for dep in node.depends_on:
            if dep in present:
                lines.append(f"  n{dep} -.-> n{node.id}")
    for status, style in _STYLE.items():
        lines.append(f"  classDef {status.value} {style}")
    return "\n".join(lines) + "\n"
