"""Planner calls from the loop: build the request, turn the plan into tree node specs."""

from __future__ import annotations

from typing import Any

from trellis.adapters import Cue, LLMResult
from trellis.memory import NodeSpec, run_sync
from trellis.planners import (
    DECOMPOSE,
    OtherStep,
    PastCase,
    Plan,
    PlanRequest,
    other_step_id,
    replan_request,
)

__all__ = ["other_steps", "plan_specs", "render_cues", "settle_cases", "worked_plan"]


def render_cues(cues: list[dict[str, Any]]) -> list[str]:
    """Prompt lines for stored cues."""
    return [Cue.model_validate(c).render() for c in cues]


def _specs(plan: Plan, others: dict[str, int]) -> list[NodeSpec]:
    own = {step.id for step in plan.steps}
    return [
        NodeSpec(
            key=step.id,
            title=step.title,
            kind="decompose" if step.skill == DECOMPOSE else "step",
            input={"skill": step.skill, "args": dict(step.args)},
            # A step of this plan by its key; a step already in the task by its node id.
            depends_on=[d if d in own or d not in others else others[d] for d in step.depends_on],
        )
        for step in plan.steps
    ]


_UNFINISHED = ("pending", "ready", "running")


def other_steps(
    store: Any, node_id: int, limit: int
) -> tuple[tuple[OtherStep, ...], dict[str, int]]:
    """The steps already in the task that new children of ``node_id`` may wait for, and the
    node id each one's plan id names: steps of other branches that cannot close a cycle and
    have not finished (waiting for a finished step orders nothing, and a failed one may never
    finish), at most ``limit``, the latest (every offer lengthens the prompt and the schema)."""
    if limit == 0:
        return (), {}
    candidates = [
        n
        for n in store.dependable(node_id)
        if n.kind in ("step", "decompose") and n.status.value in _UNFINISHED
    ]
    if not candidates:
        return (), {}
    every = store.nodes(candidates[0].task_id)
    keys = {n.id: n.key for n in every}
    parents = {n.id: n.parent_id for n in every}
    offered: list[OtherStep] = []
    ids: dict[str, int] = {}
    for node in candidates[-limit:]:
        path: list[str] = []
        at: int | None = node.id
        while at is not None and parents.get(at) is not None:  # the root has no key of note
            path.append(keys[at])
            at = parents[at]
        ref = other_step_id(path[::-1])
        if ref in ids:
            continue  # two live nodes with one key path cannot be told apart: offer neither
        ids[ref] = node.id
        offered.append(OtherStep(id=ref, title=node.title, status=node.status.value))
    return tuple(offered), ids


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
    offered, others = (
        other_steps(store, node_id, deps.config.shared_steps)
        if node.parent_id is not None
        else ((), {})
    )
    if failed is not None:
        request = replan_request(
            node,
            node.error or "the step failed",
            skills=skills,
            cues=cues,
            context=context_text,
            replan_count=state.get("replans", 0),
            other_steps=offered,
        )
    else:
        root = node.parent_id is None
        request = PlanRequest(
            goal=task.goal if root else node.title,
            skills=skills,
            cues=cues,
            context="" if root else context_text,
            examples=_examples(deps, task, cues) if root else (),
            task_id=task.id,
            node_id=None if root else node_id,
            other_steps=offered,
        )
    outcome = run_sync(deps.planner.plan(request))
    results = list(outcome.llm_results)
    if outcome.plan is None:
        return None, results, outcome.error or "the planner returned no plan"
    return _specs(outcome.plan, others), results, None


def _examples(deps: Any, task: Any, cues: tuple[Cue, ...]) -> tuple[PastCase, ...]:
    """The user's most similar past successes, noted as shown to this task's planning."""
    cases = deps.cases
    if cases is None or deps.config.case_examples == 0:
        return ()
    k = deps.config.case_examples
    # A case whose plan calls a skill this agent lacks would teach a call that cannot run.
    found = [
        case
        for case in cases.retrieve(task.user_id, task.goal, k=3 * k, cues=cues)
        if all(step.skill in deps.skills for step in case.plan.steps)
    ][:k]
    shown = [c.id for c in found if c.id is not None]
    if shown:
        cases.note_use(task.id, task.user_id, shown)
    return tuple(found)


def worked_plan(store: Any, task_id: str) -> Plan | None:
    """The steps that ran and succeeded, in the order they were planned (a replanned step's
    replacements in its place), as a flat plan; None when there is none to reuse."""
    nodes = store.nodes(task_id)
    if any(n.kind == "env" for n in nodes):
        return None  # an environment's moves are not a plan of skill steps
    parents = {n.parent_id for n in nodes}
    leaves = [
        n
        for n in nodes
        if n.parent_id is not None
        and n.id not in parents
        and n.kind == "step"
        and n.status.value == "done"
        and isinstance((n.input or {}).get("skill"), str)
    ]
    ids = {n.id: str(number) for number, n in enumerate(leaves, start=1)}
    steps = [
        {
            "id": ids[n.id],
            "title": n.title,
            "skill": n.input["skill"],
            "args": dict(n.input.get("args") or {}),
            "depends_on": [ids[d] for d in sorted(n.depends_on) if d in ids],
        }
        for n in leaves
    ]
    if not steps:
        return None
    try:
        return Plan.model_validate({"steps": steps})
    except ValueError:
        return None


def settle_cases(deps: Any, task_id: str, success: bool, cues: list[dict[str, Any]]) -> None:
    """Reward the cases this task was shown; store its plan as a new case when it succeeded."""
    cases = deps.cases
    if cases is None:
        return
    task = deps.store.get_task(task_id)
    plan = worked_plan(deps.store, task_id) if success else None
    rules = [Cue.model_validate(c) for c in cues]
    cases.settle(task.id, task.user_id, success=success, goal=task.goal, plan=plan, cues=rules)
