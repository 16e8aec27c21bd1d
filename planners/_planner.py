"""Planners: turn a goal (or a failed node) into a validated plan, or a recorded failure.

:class:`LLMPlanner` prompts a backend with the Task Memory Tree context, the skill catalogue,
the user's cues and past successes, constrains the answer to the plan JSON schema, validates
it (skills, arguments, dependencies, cues) and feeds the exact error back for a bounded
number of repair rounds. :class:`ScriptedPlanner` returns fixed plans through the same
interface and the same validation. Neither raises: a plan that cannot be made is a
:class:`PlanOutcome` with ``error`` set.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, InstanceOf

from trellis.adapters import Cue, LLMBackend, LLMRequest, LLMResult, SamplingParams
from trellis.memory import run_sync
from trellis.planners._cases import PastCase
from trellis.planners._plan import MAX_TITLE_CHARS, OtherStep, Plan, plan_json_schema
from trellis.planners._skills import DECOMPOSE, SkillSpec
from trellis.planners._validate import validate_plan
from trellis.planners.errors import PlanValidationError

__all__ = [
    "LLMPlanner",
    "PlanOutcome",
    "PlanRequest",
    "Planner",
    "PlannerConfig",
    "ScriptedPlanner",
    "build_plan_prompt",
    "build_repair_prompt",
    "replan_request",
]


class PlannerConfig(BaseModel):
    """Limits and decoding settings of a planner."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=10)
    """Model calls per plan: the first answer plus repair rounds with the error fed back."""
    max_steps: int = Field(default=8, ge=1, le=50)
    """Most steps in one plan (the schema and the validator both enforce it)."""
    max_tokens: int = Field(default=256, ge=16, le=8192)
    """Token limit of one answer."""
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    """0 is greedy (reproducible); repair rounds use the same value."""
    per_skill_args: bool = True
    """Constrain each skill's arguments to its schema (larger schema, fewer argument errors)."""
    allow_decompose: bool = True
    """Whether steps may be ``"decompose"`` (planned further when reached); when False the
    prompt does not offer it either."""
    max_title_chars: int = Field(default=MAX_TITLE_CHARS, ge=8, le=200)
    """Longest step title the schema lets the model write (titles are a few words)."""
    max_goal_chars: int = Field(default=1000, ge=1)
    """Longer goals are refused with a recorded error (a goal is a sentence, not a document)."""
    max_context_chars: int = Field(default=2000, ge=0)
    """Task Memory Tree context beyond this is cut (from the start: recent lines matter most)."""
    max_examples: int = Field(default=3, ge=0)
    """Past successes shown in the prompt."""
    max_replans_per_task: int = Field(default=3, ge=0)
    """Replans allowed per task; the next one is refused with a recorded error."""
    timeout_s: float = Field(default=300.0, gt=0)
    """Wall-clock limit of one model call."""


class PlanRequest(BaseModel):
    """Everything a planner needs for one plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    goal: str
    """What to achieve: the task goal, or the title of the node to (re)plan."""
    skills: tuple[InstanceOf[SkillSpec], ...]
    """The skill catalogue the plan may use."""
    context: str = ""
    """Task Memory Tree context (active path, dependency outputs) from ``TaskStore.build_context``."""
    cues: tuple[Cue, ...] = ()
    """Rules in force; forbid/require cues are enforced by validation."""
    examples: tuple[PastCase, ...] = ()
    """Past successes shown as few-shot examples."""
    failure: str | None = None
    """Why the previous attempt at this node failed (set when replanning)."""
    observation: str | None = None
    """The latest observation from the world, when there is one."""
    task_id: str | None = None
    """Task the plan is for (replan budget, traces)."""
    node_id: int | None = None
    """Node the plan expands (None: the task root)."""
    other_steps: tuple[OtherStep, ...] = ()
    """Steps already in the task, outside the node being planned, that a new step may wait
    for (``depends_on`` names them by id, ``"task.3"``): how a sub-plan shares a step of
    another branch. The runtime offers only steps that cannot close a cycle."""
    replan_count: int = Field(default=0, ge=0)
    """Replans already made for this task (from its history); checked against the budget."""


class PlanOutcome(BaseModel):
    """The result of planning: a validated plan, or the recorded reason there is none."""

    model_config = ConfigDict(extra="forbid")

    plan: Plan | None = None
    """The validated plan (None when planning failed)."""
    attempts: int = 0
    """Model calls (or scripted answers) used."""
    errors: list[str] = Field(default_factory=list)
    """The validation or call error of every failed attempt, in order."""
    prompts: list[str] = Field(default_factory=list)
    """Prompts sent, in order."""
    raw_outputs: list[str] = Field(default_factory=list)
    """Answers received, verbatim."""
    llm_results: list[LLMResult] = Field(default_factory=list)
    """Full backend results (tokens, latency, adapter)."""
    error: str | None = None
    """Why planning failed, for the node's error field; None on success."""
    planner: str = ""
    """Which planner produced this outcome."""
    duration_s: float = 0.0
    """Wall-clock seconds spent."""

    @property
    def ok(self) -> bool:
        """Whether a valid plan came out."""
        return self.plan is not None

    @property
    def first_attempt_valid(self) -> bool:
        """Whether the very first answer validated (no repair needed)."""
        return self.plan is not None and self.attempts == 1


@runtime_checkable
class Planner(Protocol):
    """Anything that plans: ``await plan(request)`` never raises."""

    async def plan(self, request: PlanRequest) -> PlanOutcome:
        """A validated plan, or an outcome whose ``error`` says why there is none."""
        ...

    def plan_sync(self, request: PlanRequest) -> PlanOutcome:
        """Blocking :meth:`plan`."""
        ...


def _check_request(request: PlanRequest, config: PlannerConfig) -> str | None:
    goal = request.goal.strip()
    if not goal:
        return "the goal is empty: say what should be achieved, in one sentence"
    if len(goal) > config.max_goal_chars:
        return (
            f"the goal is {len(goal)} characters, over the limit of {config.max_goal_chars}; "
            "state it in one sentence and put details in reminders"
        )
    if not request.skills and not config.allow_decompose:
        return "no skills were given to plan with; register at least one skill"
    if request.failure is not None and request.replan_count >= config.max_replans_per_task:
        return (
            f"replan budget exhausted: {request.replan_count} replans already made for task "
            f"{request.task_id!r} (limit {config.max_replans_per_task}); the task fails with "
            f"the last error: {request.failure}"
        )
    return None


def _compact_plan(plan: Plan) -> str:
    return json.dumps(plan.model_dump(mode="json"), separators=(",", ":"))


def build_plan_prompt(
    request: PlanRequest, *, max_context_chars: int = 2000, allow_decompose: bool = True
) -> str:
    """The planning prompt (pure: same request, same text; training data uses exactly this).

    ``allow_decompose`` must match the planner's configuration: the ``decompose`` line is
    offered only when the schema allows it.
    """
    lines = ["Plan the goal as JSON steps. Use only these skills:"]
    lines += [f"- {spec.signature()}" for spec in request.skills]
    if allow_decompose:
        lines.append(f"- {DECOMPOSE} - a step too big for one skill; it is planned later")
    if request.cues:
        lines.append("Rules (must be followed):")
        lines += [f"- {cue.render()}" for cue in request.cues]
    for case in request.examples:
        lines += [f"Goal: {' '.join(case.goal.split())}", f"Plan: {_compact_plan(case.plan)}"]
    if request.other_steps:
        lines.append("Steps already in the task (a step may also depend on these):")
        lines += [
            f"- {o.id}: {' '.join(o.title.split())} ({o.status})" for o in request.other_steps
        ]
    context = request.context.strip()
    if context:
        if len(context) > max_context_chars:
            context = "..." + context[-max_context_chars:]
        lines += ["Context:", context]
    if request.observation:
        lines.append(f"Observation: {' '.join(request.observation.split())[:500]}")
    if request.failure:
        lines.append(f"Previous attempt failed: {' '.join(request.failure.split())[:500]}")
    lines += [f"Goal: {' '.join(request.goal.split())}", "Plan:"]
    return "\n".join(lines)


def build_repair_prompt(
    request: PlanRequest,
    previous: str,
    error: str,
    *,
    max_context_chars: int = 2000,
    allow_decompose: bool = True,
) -> str:
    """The prompt of a repair round: the plan prompt, the rejected answer, the exact error."""
    base = build_plan_prompt(
        request, max_context_chars=max_context_chars, allow_decompose=allow_decompose
    )
    return f"{base} {previous.strip()[:1500]}\nError: {error}\nFixed plan:"


def replan_request(
    failed_node: Any,
    failure: str,
    *,
    skills: Sequence[SkillSpec],
    cues: Sequence[Cue] = (),
    examples: Sequence[PastCase] = (),
    context: str = "",
    observation: str | None = None,
    replan_count: int = 0,
    other_steps: Sequence[OtherStep] = (),
) -> PlanRequest:
    """A request to replan a failed node's subtree with the failure in context.

    ``failed_node`` is a ``memory.NodeRecord`` (anything with ``title``, ``id``, ``task_id``).
    The caller replaces the node's subtree with the new plan (``TaskStore.replace_subtree``),
    which keeps the old subtree as history.
    """
    return PlanRequest(
        goal=str(getattr(failed_node, "title", "") or ""),
        skills=tuple(skills),
        cues=tuple(cues),
        examples=tuple(examples),
        context=context,
        failure=failure,
        observation=observation,
        task_id=getattr(failed_node, "task_id", None),
        node_id=getattr(failed_node, "id", None),
        replan_count=replan_count,
        other_steps=tuple(other_steps),
    )


class LLMPlanner:
    """Plans with a model through any :class:`adapters.LLMBackend`, with validation and repair."""

    def __init__(
        self,
        backend: LLMBackend,
        *,
        adapter: str | None = None,
        config: PlannerConfig | None = None,
    ) -> None:
        self.backend = backend
        self.adapter = adapter
        self.config = config or PlannerConfig()
        self.name = f"llm:{getattr(backend, 'name', 'backend')}" + (
            f":{adapter}" if adapter else ""
        )

    def schema(self, request: PlanRequest) -> dict[str, Any]:
        """The JSON schema handed to the backend for this request."""
        return plan_json_schema(
            request.skills,
            max_steps=self.config.max_steps,
            per_skill_args=self.config.per_skill_args,
            allow_decompose=self.config.allow_decompose,
            max_title_chars=self.config.max_title_chars,
            other_ids=[o.id for o in request.other_steps],
        )

    async def plan(self, request: PlanRequest) -> PlanOutcome:
        started = time.perf_counter()
        outcome = PlanOutcome(planner=self.name)
        try:
            await self._plan(request, outcome)
        except Exception as exc:  # the runtime records, it does not crash
            outcome.plan = None
            outcome.error = f"planning crashed: {type(exc).__name__}: {str(exc)[:500]}"
        outcome.duration_s = time.perf_counter() - started
        return outcome

    def plan_sync(self, request: PlanRequest) -> PlanOutcome:
        return run_sync(self.plan(request))

    async def _plan(self, request: PlanRequest, outcome: PlanOutcome) -> None:
        refused = _check_request(request, self.config)
        if refused is not None:
            outcome.error = refused
            return
        schema = self.schema(request)
        limit = self.config.max_context_chars
        decompose = self.config.allow_decompose
        prompt = build_plan_prompt(request, max_context_chars=limit, allow_decompose=decompose)
        for _ in range(self.config.max_attempts):
            outcome.attempts += 1
            outcome.prompts.append(prompt)
            llm_request = LLMRequest(
                prompt=prompt,
                adapter=self.adapter,
                json_schema=schema,
                sampling=SamplingParams(
                    max_tokens=self.config.max_tokens, temperature=self.config.temperature
                ),
                timeout_s=self.config.timeout_s,
            )
            try:
                result = await self.backend.generate(llm_request)
            except Exception as exc:  # a failed call is one failed attempt, not a crash
                outcome.errors.append(f"model call failed: {type(exc).__name__}: {exc}")
                continue
            outcome.llm_results.append(result)
            outcome.raw_outputs.append(result.text)
            try:
                raw: Any = result.parsed if result.parsed is not None else result.text
                plan = validate_plan(
                    raw,
                    request.skills,
                    request.cues,
                    max_steps=self.config.max_steps,
                    allow_decompose=self.config.allow_decompose,
                    other_ids={o.id for o in request.other_steps},
                )
            except PlanValidationError as exc:
                feedback = exc.feedback
                if result.finish_reason == "length" and result.parsed is None:
                    feedback += (
                        f" (the answer was cut at {self.config.max_tokens} tokens: "
                        "use fewer, shorter steps)"
                    )
                outcome.errors.append(feedback)
                prompt = build_repair_prompt(
                    request,
                    result.text,
                    feedback,
                    max_context_chars=limit,
                    allow_decompose=decompose,
                )
                continue
            outcome.plan = plan
            return
        outcome.error = _failure_text(outcome)


def _failure_text(outcome: PlanOutcome) -> str:
    last = outcome.errors[-1] if outcome.errors else "no answer"
    last = last if len(last) <= 2000 else last[:2000] + "..."  # model text stays short
    return f"planning failed after {outcome.attempts} attempt(s); last error: {last}"


PlanLike = Plan | str | Mapping[str, Any] | list[Any]
Script = Callable[[PlanRequest], "PlanLike | None"]


class ScriptedPlanner:
    """Deterministic plans behind the :class:`Planner` interface (tests, fixed procedures).

    ``plans`` is either a function ``request -> plan`` or a mapping from goal text to a plan
    or a list of plans (successive requests for the same goal, e.g. a first plan and then a
    replan, take the next one; the last repeats). Every plan is validated like a model's.
    """

    def __init__(
        self,
        plans: Script | Mapping[str, PlanLike | Sequence[PlanLike]],
        *,
        config: PlannerConfig | None = None,
        name: str = "scripted",
    ) -> None:
        self.plans = plans
        self.config = config or PlannerConfig()
        self.name = name
        self._calls: dict[str, int] = {}

    def _lookup(self, request: PlanRequest) -> PlanLike | None:
        if callable(self.plans):
            return self.plans(request)
        goal = " ".join(request.goal.split())
        entry = self.plans.get(goal)
        if isinstance(entry, str | Plan | Mapping) or entry is None:
            return entry
        if not entry:
            return list(entry)
        first = entry[0]
        if isinstance(first, Mapping) and "steps" not in first:
            return list(entry)  # one plan written as a list of step dicts
        # A list of plans: successive requests for this goal take the next, the last repeats.
        count = self._calls.get(goal, 0)
        self._calls[goal] = count + 1
        chosen: PlanLike = entry[min(count, len(entry) - 1)]
        return chosen

    async def plan(self, request: PlanRequest) -> PlanOutcome:
        started = time.perf_counter()
        outcome = PlanOutcome(planner=self.name, attempts=1)
        try:
            refused = _check_request(request, self.config)
            if refused is not None:
                outcome.error = refused
            else:
                found = self._lookup(request)
                if found is None:
                    outcome.error = (
                        f"no scripted plan for goal {request.goal!r}; add it to the "
                        "ScriptedPlanner's plans"
                    )
                else:
                    text = found if isinstance(found, str) else _as_text(found)
                    outcome.raw_outputs.append(text)
                    outcome.plan = validate_plan(
                        found,
                        request.skills,
                        request.cues,
                        max_steps=self.config.max_steps,
                        allow_decompose=self.config.allow_decompose,
                        other_ids={o.id for o in request.other_steps},
                    )
        except PlanValidationError as exc:
            outcome.errors.append(exc.feedback)
            outcome.error = f"the scripted plan is invalid: {exc.feedback}"
        except Exception as exc:  # a user script must not crash the runtime
            outcome.error = f"the planning script failed: {type(exc).__name__}: {str(exc)[:500]}"
        outcome.duration_s = time.perf_counter() - started
        return outcome

    def plan_sync(self, request: PlanRequest) -> PlanOutcome:
        return run_sync(self.plan(request))


def _as_text(value: Any) -> str:
    if isinstance(value, Plan):
        return value.to_json()
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)
