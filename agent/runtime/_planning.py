"""Planner calls from the loop: build the request, turn the plan into tree node specs."""

from __future__ import annotations

from typing import Any

from trellis.adapters import Cue, LLMResult
from trellis.memory import NodeSpec, run_sync
from trellis.planners import DECOMPOSE, Plan, PlanRequest, replan_request

__all__ = ["plan_specs", "render_cues"]


def render_cues(cues: list[dict[str, Any]]) -> list[str]:
    """Prompt lines for stored cues."""
    return [Cue.model_validate(c).render() for c in cues]


def _specs(plan: Plan) -> list[NodeSpec]:
    return [
        NodeSpec(
            key=step.id,
            title=step.title,
            kind="decompose" if step.skill == DECOMPOSE else "step",
            input={"skill": step.skill, "args": dict(step.args)},
            depends_on=list(step.depends_on),
        )
        for step in plan.steps
    ]


def plan_specs(
    deps: Any, state: Any, node_id: int, *, failed: int | None
) -> tuple[list[NodeSpec] | None, list[LLMResult], str | None]:
    """Ask the planner for children of ``node_id`` (a replan when ``failed`` is set).

    Returns the node specs (None when planning failed), the model results, and the error.
    """
    store = deps.store
    node = store.get_node(node_id)
    task = store.get_task(node.task_id)
    cues = tuple(Cue.model_validate(c) for c in state.get("cues", []))
    skills = tuple(deps.skills.specs())
    context = store.build_context(node_id, budget_chars=deps.config.context_chars)
    context_text = str(getattr(context, "text", context))
    request: PlanRequest
    if failed is not None:
        request = replan_request(
            node,
            node.error or "the step failed",
            skills=skills,
            cues=cues,
            context=context_text,
            replan_count=state.get("replans", 0),
        )
    else:
        request = PlanRequest(
            goal=task.goal if node.parent_id is None else node.title,
            skills=skills,
            cues=cues,
            context="" if node.parent_id is None else context_text,
            task_id=task.id,
            node_id=None if node.parent_id is None else node_id,
        )
    outcome = run_sync(deps.planner.plan(request))
    results = list(outcome.llm_results)
    if outcome.plan is None:
        return None, results, outcome.error or "the planner returned no plan"
    return _specs(outcome.plan), results, None
