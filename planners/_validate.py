"""Plan validation: nothing reaches execution unless it parses, type-checks and obeys the cues.

:func:`validate_plan` accepts the model's raw text or a parsed value and either returns a
:class:`Plan` or raises :class:`PlanValidationError` whose message is the exact feedback for
the next repair round: every problem found, each naming the step and the fix.

Forbid and require cues are enforced here, not only suggested in the prompt. Matching is on
normalised words (lower case, simple singular forms): a step mentions a cue's subject when
every word of the subject occurs in the step's title, skill name or string arguments, and it
performs the cue's action when the action's words occur in its skill name or title.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from trellis.adapters import Cue, check_model_value, parse_json_text
from trellis.memory import ModelRetry
from trellis.planners._plan import Plan, PlanStep
from trellis.planners._skills import DECOMPOSE, SkillSpec, format_validation_error
from trellis.planners.errors import InvalidSkillArgsError, PlanValidationError

__all__ = ["call_violations", "cue_violations", "extract_json", "step_words", "validate_plan"]

# Verbs that say nothing beyond "involves": any step mentioning the subject counts
# ("never take the blue cups" is broken by pick_up(obj="blue cup") as much as by take).
_GENERIC_ACTIONS = {
    "use", "touch", "handle", "involve", "do", "take", "grab", "get", "pick", "bring",
    "carry", "move",
}  # fmt: skip
_STOP = {"the", "a", "an", "my", "your", "our", "of", "to", "and", "any", "some", "all"}
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _stem(word: str) -> str:
    """A deliberately crude stemmer: both sides of every comparison go through it, so it
    only has to map inflections of one word together (plates/plate, cooking/cook)."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith("es") and word[:-2].endswith(("s", "x", "ch", "sh")):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


_GENERIC_STEMS = {_stem(w) for w in _GENERIC_ACTIONS}


def _words(text: str) -> list[str]:
    return [_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP]


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def step_words(step: PlanStep) -> tuple[set[str], set[str]]:
    """(words that say what the step does, all words of the step) for cue matching."""
    doing = set(_words(step.skill.replace("_", " "))) | set(_words(step.title))
    everything = doing | {w for text in _strings(step.args) for w in _words(text)}
    return doing, everything


def _mentions(step: PlanStep, phrase: str | None) -> bool:
    wanted = set(_words(phrase or ""))
    return bool(wanted) and wanted <= step_words(step)[1]


def _performs(step: PlanStep, cue: Cue) -> bool:
    if not _mentions(step, cue.subject):
        return False
    action = set(_words(cue.action or "")) - _GENERIC_STEMS
    return not action or action <= step_words(step)[0]


def _ancestors(plan: Plan) -> dict[str, set[str]]:
    """Every step's transitive dependencies (the plan is known to be acyclic here)."""
    deps = {s.id: set(s.depends_on) for s in plan.steps}
    memo: dict[str, set[str]] = {}

    def visit(node: str) -> set[str]:
        if node not in memo:
            memo[node] = set()
            found: set[str] = set()
            for parent in deps.get(node, ()):
                found |= {parent} | visit(parent)
            memo[node] = found
        return memo[node]

    for step in plan.steps:
        visit(step.id)
    return memo


def call_violations(skill: str, args: Mapping[str, Any], cues: Sequence[Cue]) -> list[str]:
    """One message per forbid cue that a call breaks, checked just before it runs.

    A call has no title: what it does is said by its skill name and its text arguments
    (``act(action="open fridge")``, ``wash(item="blue plates")``), so those words count as
    both the subject and the action. Only ``forbid`` cues apply to a single call; ``require``
    and ordering cues concern a whole plan (:func:`cue_violations`).
    """
    doing = set(_words(skill.replace("_", " "))) | {
        w for text in _strings(dict(args)) for w in _words(text)
    }
    problems: list[str] = []
    for cue in cues:
        if cue.polarity != "forbid":
            continue
        subject = set(_words(cue.subject))
        action = set(_words(cue.action or "")) - _GENERIC_STEMS
        if subject and subject <= doing and action <= doing:
            what = f"{cue.action} {cue.subject}" if cue.action else cue.subject
            problems.append(
                f"the call {skill}({_call_text(args)}) breaks the rule {cue.constraint!r} "
                f"(forbidden: {what}); choose another call"
            )
    return problems


def _call_text(args: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= 200 else text[:200] + "..."


def cue_violations(plan: Plan, cues: Sequence[Cue]) -> list[str]:
    """One message per forbid/require cue the plan breaks (prefer and inform are advice)."""
    problems: list[str] = []
    index = {s.id: i for i, s in enumerate(plan.steps)}
    ancestors: dict[str, set[str]] | None = None
    for cue in cues:
        rule = f"{cue.constraint!r}"
        if cue.polarity == "forbid":
            for step in plan.steps:
                if _performs(step, cue):
                    what = f"{cue.action} {cue.subject}" if cue.action else cue.subject
                    problems.append(
                        f"step {step.id!r} ({step.skill}) breaks the rule {rule} "
                        f"(forbidden: {what}); remove it or use something else"
                    )
        elif cue.polarity == "require":
            triggers = [
                s
                for s in plan.steps
                if cue.trigger is not None and _mentions(s, cue.trigger) and not _performs(s, cue)
            ]
            if cue.trigger is not None and not triggers:
                continue
            doers = [s for s in plan.steps if _performs(s, cue)]
            what = f"{cue.action or 'use'} {cue.subject}"
            if not doers:
                where = ""
                if cue.order != "any" and cue.trigger:
                    where = f" {cue.order} the steps that involve {cue.trigger!r}"
                problems.append(
                    f"the plan breaks the rule {rule}: add a step that does {what!r}{where}"
                )
                continue
            if cue.order == "any" or not triggers:
                continue
            if ancestors is None:
                ancestors = _ancestors(plan)
            if not any(_placed(d, triggers, cue.order, index, ancestors) for d in doers):
                ids = ", ".join(repr(t.id) for t in triggers)
                problems.append(
                    f"the plan breaks the rule {rule}: the step that does {what!r} must come "
                    f"{cue.order} step(s) {ids}; move it {cue.order} them"
                )
    return problems


def _placed(
    doer: PlanStep,
    triggers: Sequence[PlanStep],
    order: str,
    index: Mapping[str, int],
    ancestors: Mapping[str, set[str]],
) -> bool:
    """Whether ``doer`` runs after (or before) every trigger step, in list and dependency order."""
    for t in triggers:
        if order == "after" and (index[doer.id] < index[t.id] or doer.id in ancestors[t.id]):
            return False
        if order == "before" and (index[doer.id] > index[t.id] or t.id in ancestors[doer.id]):
            return False
    return True


def extract_json(text: str) -> tuple[Any, str | None]:
    """Parse a model's JSON answer, tolerating a code fence; (value, None) or (None, error)."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    if not stripped:
        return None, "the answer is empty"
    return parse_json_text(stripped)


def _cycle(plan: Plan) -> list[str] | None:
    deps = {s.id: [d for d in s.depends_on] for s in plan.steps}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in deps.get(node, ()):
            if nxt not in deps:
                continue
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for step in plan.steps:
        if step.id not in state and (found := visit(step.id)):
            return found
    return None


def validate_plan(
    plan_or_raw_text: Plan | str | Mapping[str, Any] | list[Any],
    skills: Sequence[SkillSpec],
    cues: Sequence[Cue] = (),
    *,
    max_steps: int | None = None,
    allow_decompose: bool = True,
    other_ids: Collection[str] = (),
) -> Plan:
    """The plan, checked; :class:`PlanValidationError` lists every problem otherwise.

    ``other_ids`` are the steps already in the task that a step may also depend on (the
    request's ``other_steps``)."""
    value: Any = plan_or_raw_text
    if isinstance(value, str):
        value, error = extract_json(value)
        if error is not None:
            raise PlanValidationError(
                [
                    f"the answer is not JSON ({error}); "
                    'answer with one JSON object {"steps": [...]}'
                ]
            )
    elif not isinstance(value, Plan):
        try:  # a value a backend parsed itself passes the same guard as text
            check_model_value(value)
        except ModelRetry as exc:
            raise PlanValidationError([f"{exc}; answer with one JSON object"]) from None
    if isinstance(value, list):
        value = {"steps": value}  # a bare list of steps is an obvious plan
    if not isinstance(value, Plan):
        if isinstance(value, Mapping) and not value.get("steps") and "steps" in value:
            raise PlanValidationError(["the plan has no steps; give at least one step"])
        try:
            value = Plan.model_validate(value)
        except ValidationError as exc:
            raise PlanValidationError(
                [
                    "the JSON is not a plan ("
                    + format_validation_error(exc)
                    + '); the shape is {"steps": [{"id", "title", "skill", "args", "depends_on"}]}'
                ]
            ) from None
    plan: Plan = value
    if not plan.steps:
        raise PlanValidationError(["the plan has no steps; give at least one step"])
    problems: list[str] = []
    if max_steps is not None and len(plan.steps) > max_steps:
        problems.append(
            f"the plan has {len(plan.steps)} steps, over the limit of {max_steps}; "
            "merge steps or use 'decompose' for a group of steps"
        )
    catalogue = {s.name: s for s in skills}
    seen: set[str] = set()
    for step in plan.steps:
        if step.id in seen:
            problems.append(f"step id {step.id!r} is used twice; give each step its own id")
        seen.add(step.id)
    for step in plan.steps:
        if step.skill == DECOMPOSE:
            if not allow_decompose:
                problems.append(
                    f"step {step.id!r} uses 'decompose', which is not allowed here; use a skill"
                )
            continue
        spec = catalogue.get(step.skill)
        if spec is None:
            known = ", ".join(sorted(catalogue)) or "none"
            problems.append(
                f"step {step.id!r} uses unknown skill {step.skill!r}; available skills: {known}"
                + (", or 'decompose'" if allow_decompose else "")
            )
            continue
        try:
            spec.validate_args(step.args)
        except InvalidSkillArgsError as exc:
            problems.append(f"step {step.id!r}: {exc}")
    for step in plan.steps:
        for dep in step.depends_on:
            if dep == step.id:
                problems.append(
                    f"step {step.id!r} depends on itself; remove {dep!r} from its depends_on"
                )
            elif dep not in seen and dep not in other_ids:
                others = f"; steps already in the task: {', '.join(sorted(other_ids))}"
                problems.append(
                    f"step {step.id!r} depends on {dep!r}, which is not a step id of this plan "
                    f"(ids: {', '.join(sorted(seen))}{others if other_ids else ''})"
                )
    if not problems:
        cycle = _cycle(plan)
        if cycle is not None:
            problems.append(
                f"depends_on forms a cycle: {' -> '.join(cycle)}; remove one of these dependencies"
            )
    if not problems:
        problems.extend(cue_violations(plan, cues))
    if problems:
        raise PlanValidationError(problems)
    return plan
