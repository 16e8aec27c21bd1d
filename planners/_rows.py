"""Training rows for a planning adapter, built through the runtime's own prompt and schema.

:func:`plan_row` turns a request and a correct plan into ``{"prompt", "completion"}``: the
prompt is exactly what :class:`~trellis.planners.LLMPlanner` sends for that request (the same
:func:`~trellis.planners.build_plan_prompt` call with the same planner configuration), and the
completion is the plan as the constrained decoder emits it under
:func:`~trellis.planners.plan_json_schema`: compact JSON, keys in schema order, ids ``"1"``..
by position, dependencies on earlier steps only, arguments in the skill's field order. Nothing
here knows about any application; apps bring the requests and the plans.
"""

from __future__ import annotations

import json
from typing import Any

from trellis.planners._plan import Plan
from trellis.planners._planner import PlannerConfig, PlanRequest, build_plan_prompt
from trellis.planners._skills import DECOMPOSE
from trellis.planners._validate import validate_plan

__all__ = ["plan_completion", "plan_row"]


def plan_completion(plan: Plan, request: PlanRequest) -> str:
    """The plan as the constrained decoder writes it for ``request``'s catalogue.

    Step ids become ``"1"``, ``"2"``, ... in list order and ``depends_on`` follows them
    (a dependency on a step already in the task, ``"task.3"``, is kept as it is);
    a dependency on a later step is a ``ValueError`` (the position-aware schema cannot
    express it: list a step after what it waits for). Arguments are ordered like the
    skill's argument schema, which is the order the decoder must follow.
    """
    position = {step.id: str(i + 1) for i, step in enumerate(plan.steps)}
    order = {spec.name: list(spec.args_schema().get("properties", {})) for spec in request.skills}
    steps: list[dict[str, Any]] = []
    for i, step in enumerate(plan.steps):
        deps = [position.get(d, d) for d in step.depends_on]
        if any(d.isdigit() and int(d) > i for d in deps):
            raise ValueError(
                f"step {step.id!r} depends on a step listed at or after it; list every step "
                "after the steps it depends on"
            )
        fields = order.get(step.skill, [])
        args = {k: step.args[k] for k in fields if k in step.args}
        args.update({k: v for k, v in step.args.items() if k not in args})
        steps.append(
            {
                "id": str(i + 1),
                "title": step.title,
                "skill": step.skill,
                "args": args if step.skill != DECOMPOSE else {},
                "depends_on": deps,
            }
        )
    return json.dumps({"steps": steps}, separators=(",", ":"), ensure_ascii=False)


def plan_row(
    request: PlanRequest, plan: Plan, *, config: PlannerConfig | None = None
) -> dict[str, str]:
    """One supervised row: the runtime's prompt for ``request`` and ``plan`` as the answer.

    ``config`` must be the planner configuration the adapter will serve under (the prompt
    depends on ``max_context_chars`` and ``allow_decompose``). The plan is validated against
    the request's skills and cues first (:class:`~trellis.planners.PlanValidationError`
    otherwise): a row must never teach a plan the runtime would reject.
    """
    config = config or PlannerConfig()
    checked = validate_plan(
        plan,
        request.skills,
        request.cues,
        max_steps=config.max_steps,
        allow_decompose=config.allow_decompose,
        other_ids={o.id for o in request.other_steps},
    )
    long = [s.id for s in checked.steps if len(s.title) > config.max_title_chars]
    if long:
        raise ValueError(
            f"step(s) {', '.join(long)} have titles over {config.max_title_chars} characters, "
            "which the plan schema does not allow; shorten them"
        )
    prompt = build_plan_prompt(
        request,
        max_context_chars=config.max_context_chars,
        allow_decompose=config.allow_decompose,
    )
    return {"prompt": prompt, "completion": plan_completion(checked, request)}
