"""The fast replay check: re-derive a trace's decisions from its recorded answers, no loop.

:func:`check_trace` walks the events once and checks every decision against what the
recorded inputs imply, with the same functions the runtime uses:

- each accepted plan of an LLM planner is the planner's validation (``validate_plan``) of
  its last raw answer, and the nodes created carry that plan's titles;
- each routed node was runnable (pending or ready, every dependency done or skipped);
- each skill call is what the act answer before it says (``{"skill", "args"}``, or an
  environment action), or the planned step's own call when no model was asked;
- each status change is allowed by the Task Memory Tree state machine, and a step ends
  done after a successful skill result and failed after a failed one;
- the final tree matches the statuses the events led to.

It does not rebuild prompts (use :func:`agent._replay.replay` for that): it is the quick
check for large trace sets, at tens of thousands of events per second.
"""

from __future__ import annotations

import time
from typing import Any

from trellis.agent.env import EnvironmentRegistry
from trellis.agent.traces._replay import Divergence, ReplayResult
from trellis.agent.traces._replay_world import args_model_from_schema
from trellis.agent.traces._trace import (
    EndEvent,
    LLMEvent,
    PlanEvent,
    RouteEvent,
    SkillCallEvent,
    SkillResultEvent,
    Trace,
    TreeEvent,
)
from trellis.memory import TRANSITIONS, NodeStatus
from trellis.memory.errors import TrellisError
from trellis.planners import SkillSpec, validate_plan

__all__ = ["check_trace"]

_SATISFIED = {"done", "skipped"}
_ALLOWED = {old.value: {new.value for new in news} for old, news in TRANSITIONS.items()}
# The loop retries a failed node by passing through pending without an event of its own.
_ALLOWED[NodeStatus.FAILED.value] |= {NodeStatus.RUNNING.value}


class _Found(Exception):
    def __init__(self, divergence: Divergence) -> None:
        super().__init__(divergence.field)
        self.divergence = divergence


def _fail(event: Any, field: str, expected: Any, got: Any) -> _Found:
    return _Found(
        Divergence(
            seq=event.seq, replay_seq=None, type=event.type, field=field,
            expected=expected, got=got,
        )
    )  # fmt: skip


def _act_call(event: LLMEvent, env_skill: str | None) -> tuple[str | None, dict[str, Any]]:
    value = event.parsed
    if not isinstance(value, dict):
        return None, {}
    if env_skill is not None and "action" in value:
        return env_skill, {"action": value.get("action")}
    name = value.get("skill")
    args = value.get("args") or {}
    return (name if isinstance(name, str) else None), dict(args) if isinstance(args, dict) else {}


class _Checker:
    def __init__(self, trace: Trace) -> None:
        start = trace.start
        self.specs = [
            SkillSpec(
                name=info.name,
                description=info.description,
                args_model=args_model_from_schema(info),
                side_effects=info.side_effects,
                needs_approval=info.needs_approval,
                timeout_s=info.timeout_s,
            )
            for info in start.skills
        ]
        self.env_skill = _env_skill(start.env)
        planner = start.planner
        self.llm_planner = planner.get("kind") == "llm"
        config = planner.get("config") or {}
        self.max_steps = config.get("max_steps")
        self.allow_decompose = bool(config.get("allow_decompose", True))
        self.status: dict[int, str] = {}
        self.planned: dict[int, tuple[Any, dict[str, Any]]] = {}
        self.deps: dict[int, list[int]] = {}
        self.routed: int | None = None
        self.act: LLMEvent | None = None
        self.result: dict[int, bool] = {}

    def tree(self, e: TreeEvent) -> None:
        old = self.status.get(e.node_id)
        if old is not None and e.status != old and e.status not in _ALLOWED.get(old, set()):
            raise _fail(e, "node_status.status", f"a status allowed after {old!r}", e.status)
        outcome = self.result.pop(e.node_id, None)
        if outcome is not None and e.status in ("done", "failed"):
            expected = "done" if outcome else "failed"
            if e.status != expected:
                raise _fail(e, "node_status.status", expected, e.status)
        self.status[e.node_id] = e.status

    def plan(self, e: PlanEvent) -> None:
        if e.plan is None:
            for node_id in e.node_ids:  # an environment move: one step, the action skill
                self.status.setdefault(node_id, "pending")
                self.planned[node_id] = (self.env_skill, {})
                self.deps[node_id] = []
            return
        steps = list(e.plan.get("steps", []))
        if self.llm_planner and e.raw_outputs:
            try:
                plan = validate_plan(
                    e.raw_outputs[-1],
                    self.specs,
                    max_steps=self.max_steps,
                    allow_decompose=self.allow_decompose,
                    other_ids={str(o.get("id")) for o in e.other_steps or []},
                )
            except TrellisError as exc:
                raise _fail(e, "plan_made.plan", "a plan that validates", str(exc)) from None
            derived = plan.model_dump(mode="json")
            if derived != e.plan:
                raise _fail(e, "plan_made.plan", derived, e.plan)
        titles = [str(s.get("title")) for s in steps]
        if titles != e.titles:
            raise _fail(e, "plan_made.titles", titles, e.titles)
        ids = {str(s.get("id")): node for s, node in zip(steps, e.node_ids, strict=False)}
        for step, node_id in zip(steps, e.node_ids, strict=False):
            self.status.setdefault(node_id, "pending")
            self.planned[node_id] = (step.get("skill"), dict(step.get("args") or {}))
            self.deps[node_id] = [
                ids[d] if isinstance(d, str) and d in ids else int(d)
                for d in step.get("depends_on", [])
                if not isinstance(d, str) or d in ids or d.isdigit()
            ]

    def route(self, e: RouteEvent) -> None:
        state = self.status.get(e.node_id)
        if state not in ("pending", "ready", "failed"):
            raise _fail(e, "route.node_id", "a pending or ready step", f"{e.node_id} ({state})")
        waiting = [d for d in self.deps.get(e.node_id, []) if self.status.get(d) not in _SATISFIED]
        if waiting:
            raise _fail(e, "route.node_id", "a step whose dependencies are done", waiting)
        self.routed = e.node_id
        self.act = None

    def skill_call(self, e: SkillCallEvent) -> None:
        if e.node_id != self.routed:
            raise _fail(e, "skill_called.node_id", self.routed, e.node_id)
        if self.act is not None:
            expected = _act_call(self.act, self.env_skill)
        else:
            expected = self.planned.get(e.node_id, (None, {}))
        if (e.skill, e.args) != expected:
            raise _fail(e, "skill_called", {"skill": expected[0], "args": expected[1]},
                        {"skill": e.skill, "args": e.args})  # fmt: skip

    def end(self, e: EndEvent) -> None:
        for node in e.tree:
            seen = self.status.get(node.id)
            if not node.superseded and seen is not None and seen != node.status:
                raise _fail(e, f"task_finished.tree[{node.id}].status", seen, node.status)


def check_trace(trace: Trace) -> ReplayResult:
    """Check every decision of a trace against its recorded inputs (fast, no loop)."""
    started = time.perf_counter()
    checker = _Checker(trace)
    divergence: Divergence | None = None
    try:
        for event in trace.events:
            if isinstance(event, TreeEvent):
                checker.tree(event)
            elif isinstance(event, PlanEvent):
                checker.plan(event)
            elif isinstance(event, RouteEvent):
                checker.route(event)
            elif isinstance(event, LLMEvent):
                if event.stage == "act":
                    checker.act = event
            elif isinstance(event, SkillCallEvent):
                checker.skill_call(event)
            elif isinstance(event, SkillResultEvent):
                checker.result[event.node_id] = event.ok
            elif isinstance(event, EndEvent):
                checker.end(event)
    except _Found as found:
        divergence = found.divergence
    return ReplayResult(
        source=trace.source,
        ok=divergence is None,
        events=len(trace.events),
        replayed_events=len(trace.events),
        divergence=divergence,
        duration_s=time.perf_counter() - started,
    )


def _env_skill(spec: dict[str, Any] | None) -> str | None:
    """The action skill of the recorded environment (by its pack, else the default name)."""
    kind = (spec or {}).get("kind")
    if not isinstance(kind, str):
        return None
    try:
        return EnvironmentRegistry().get(kind).skill_name
    except TrellisError:  # the pack is not installed: the default name is the usual one
        return f"{kind}_act"
