"""Planning in an environment: the next move, under the part of the goal being worked on.

A world whose goal has parts (``Environment.goal_parts``: each object to put away, each
ingredient to prepare) gets one ``part`` node per part under the task's root, in the order
the world gives them. Each move is planned under the first part the world does not yet judge
done; a part the world judges done is closed; a part that takes ``AgentConfig.part_moves``
moves without being done fails, and the moves turn to the next part (a failed part is tried
again once no fresh part is left). The tree thus shows progress per part, and a world
without parts gets its moves straight under the root, as before.

Every write here is safe to repeat after a crash: parts are added by key, status changes
check where the node already is, and a pending move means this stage already ran.
"""

from __future__ import annotations

from typing import Any

from trellis.agent.env import Environment, GoalPart
from trellis.memory import NodeRecord, NodeSpec, NodeStatus

__all__ = ["MOVE_KIND", "PART_KIND", "EnvPlanner", "part_key"]

MOVE_KIND = "env"
"""Node kind of one environment move."""
PART_KIND = "part"
"""Node kind of one part of an environment goal (never run itself)."""
_PART_PREFIX = "part:"


def part_key(part: GoalPart) -> str:
    """The tree key of a part's node."""
    return f"{_PART_PREFIX}{part.key}"


class EnvPlanner:
    """Plans environment moves for the loop's ``plan`` stage (see the module docstring)."""

    def __init__(self, stages: Any) -> None:
        self.stages = stages  # the loop's stages: store, status changes, events

    def plan_move(self, task_id: str, environment: Environment, skill: str) -> list[NodeRecord]:
        """Add the next move node (and any new part nodes); none when a move is pending."""
        store = self.stages.d.store
        nodes = store.nodes(task_id)
        if any(
            n.kind == MOVE_KIND and n.status in (NodeStatus.PENDING, NodeStatus.READY)
            for n in nodes
        ):
            return []  # this move was planned before a crash
        root = next(n for n in nodes if n.parent_id is None)
        parent = self._current_part(task_id, root, nodes, environment)
        number = sum(1 for n in nodes if n.kind == MOVE_KIND) + 1
        spec = NodeSpec(
            key=f"move{number}",
            title=f"move {number}: choose and take one action in the game",
            kind=MOVE_KIND,
            input={"skill": skill, "args": {}},
        )
        return list(store.add_children(task_id, parent.id, [spec], cause="next move"))

    def _current_part(
        self, task_id: str, root: NodeRecord, nodes: list[NodeRecord], environment: Environment
    ) -> NodeRecord:
        parts = environment.goal_parts(environment.state)
        if not parts:
            return root
        stages, store = self.stages, self.stages.d.store
        known = {n.key: n for n in nodes if n.kind == PART_KIND and n.parent_id == root.id}
        fresh = [
            NodeSpec(key=part_key(p), title=p.title, kind=PART_KIND)
            for p in parts
            if part_key(p) not in known
        ]
        if fresh:
            for node in store.add_children(task_id, root.id, fresh, cause="goal parts"):
                known[node.key] = node
        limit = stages.d.config.part_moves
        moves: dict[int, int] = {}
        for node in nodes:
            if node.kind == MOVE_KIND and node.parent_id is not None:
                moves[node.parent_id] = moves.get(node.parent_id, 0) + 1
        waiting: list[NodeRecord] = []
        retry: list[NodeRecord] = []
        for part in parts:  # in the world's order: the part it puts first is worked on
            node = known[part_key(part)]
            taken = moves.get(node.id, 0)
            if part.done:
                self._close(task_id, node, NodeStatus.DONE, "the world judges it done")
            elif node.status in (NodeStatus.DONE, NodeStatus.CANCELLED):
                continue  # closed in the tree, then undone in the world: moves go elsewhere
            elif node.status is NodeStatus.FAILED:
                retry.append(node)
            elif node.status is NodeStatus.RUNNING and taken and taken % limit == 0:
                self._close(task_id, node, NodeStatus.FAILED, f"not done after {limit} moves")
                retry.append(node)
            else:
                waiting.append(node)
        current = (waiting or retry or [root])[0]
        if current.id == root.id:
            return root
        current = store.get_node(current.id)
        if current.status is NodeStatus.FAILED:
            stages._set_status(task_id, current.id, NodeStatus.PENDING, cause="tried again")
        if current.status is not NodeStatus.RUNNING:
            current = stages._set_status(task_id, current.id, NodeStatus.RUNNING, cause="part")
        return current

    def _close(self, task_id: str, node: NodeRecord, status: NodeStatus, why: str) -> None:
        node = self.stages.d.store.get_node(node.id)
        if node.status is status or node.status is NodeStatus.DONE:
            return
        if node.status in (NodeStatus.PENDING, NodeStatus.READY, NodeStatus.FAILED):
            if status is NodeStatus.FAILED:
                return
            if node.status is NodeStatus.FAILED:
                self.stages._set_status(task_id, node.id, NodeStatus.PENDING, cause=why)
            self.stages._set_status(task_id, node.id, NodeStatus.RUNNING, cause=why)
        error = None if status is NodeStatus.DONE else why
        self.stages._set_status(task_id, node.id, status, cause=why, error=error)

    def finish(self, task_id: str, environment: Environment) -> None:
        """Close the parts when the task ends: done as the world judges them, the others
        cancelled (the task stopped first)."""
        store = self.stages.d.store
        done = {part_key(p) for p in environment.goal_parts(environment.state) if p.done}
        for node in store.nodes(task_id):
            if node.kind == PART_KIND and node.key in done:
                self._close(task_id, node, NodeStatus.DONE, "the world judges it done")
        for node in store.nodes(task_id):
            if node.kind != PART_KIND or node.status in (NodeStatus.DONE, NodeStatus.CANCELLED):
                continue
            self.stages._set_status(
                task_id, node.id, NodeStatus.CANCELLED, cause="the task ended first"
            )
