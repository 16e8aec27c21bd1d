"""The act step: the LLM, through the routed adapter, chooses one concrete skill call.

Output is constrained by a JSON schema, so it is always executable: for an environment
step the action must be one of the environment's current valid actions (an enum); for a
catalogue step the skill name is an enum of registered skills, each with its own argument
schema. :func:`build_act_prompt` is a pure function so that training data is built with
exactly the prompts the runtime uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from trellis.adapters import (
    LLMBackend,
    LLMRequest,
    LLMResult,
    SamplingParams,
    check_model_value,
    clip_text,
)
from trellis.agent.env import Environment, EnvState
from trellis.agent.errors import CueViolation, UnknownSkillError
from trellis.memory import WorldMemory, render_world
from trellis.memory.errors import ModelRetry, RuntimeFailure, TrellisError, UsageError
from trellis.planners import SkillSpec

__all__ = [
    "ChosenCall",
    "act_json_schema",
    "build_act_prompt",
    "choose_call",
    "env_act_prompt_args",
    "offered_actions",
    "world_memory_text",
]

ENV_ACT_STEP = "take the next action"
"""The step text of every environment move (the game's observation carries the rest)."""

_MAX_OBSERVATION_CHARS = 600
_MAX_HISTORY = 6


def build_act_prompt(
    *,
    goal: str,
    step: str,
    skills: Sequence[SkillSpec] = (),
    observation: str | None = None,
    valid_actions: Sequence[str] | None = None,
    history: Sequence[str] = (),
    cues: Sequence[str] = (),
    context: str = "",
    feedback: str | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The act prompt: short, because every prompt token costs time on a small CPU model.

    With ``valid_actions`` the model answers ``{"action": ...}``; otherwise
    ``{"skill": ..., "args": {...}}`` over ``skills``. ``notes`` are state lines an
    environment adds after the observation (room, inventory, score).
    """
    lines = [f"Goal: {goal.strip()}", f"Step: {step.strip()}"]
    if cues:
        lines.append("Rules: " + "; ".join(c.strip() for c in cues))
    if context.strip():
        lines.append(context.strip())
    if history:
        lines.append("Done so far: " + "; ".join(list(history)[-_MAX_HISTORY:]))
    if observation is not None:
        lines.append(f"You see: {_one_line(observation)}")
    lines.extend(_one_line(note) for note in notes)
    if valid_actions is not None:
        lines.append("Actions: " + "; ".join(valid_actions))
        answer = 'Answer with JSON {"action": one of the actions}.'
    else:
        lines.append("Skills:")
        lines.extend(f"- {spec.signature()}" for spec in skills)
        answer = 'Answer with JSON {"skill": name, "args": {...}}.'
    if feedback:
        lines.append(f"Your last answer was wrong: {feedback}")
    lines.append(answer)
    lines.append("JSON:")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > _MAX_OBSERVATION_CHARS:
        return text[:_MAX_OBSERVATION_CHARS] + "..."
    return text


def env_act_prompt_args(
    *,
    goal: str,
    environment: Environment,
    state: EnvState,
    history: Sequence[str],
    cues: Sequence[str],
    memory: str = "",
    part: str | None = None,
) -> dict[str, Any]:
    """Prompt arguments of one environment move; the loop and a pack's training data share
    them: the part of the goal being worked on (as the step), the world memory (what the
    world has shown so far, see :func:`world_memory_text`), the observation, then the pack's
    ``prompt_notes`` for this state."""
    return {
        "goal": goal,
        "step": part or ENV_ACT_STEP,
        "context": f"Memory:\n{memory}" if memory else "",
        "observation": str(state.observation),
        "history": list(history),
        "cues": list(cues),
        "notes": [str(note) for note in environment.prompt_notes(state)],
    }


def world_memory_text(
    memory: WorldMemory,
    environment: Environment,
    state: EnvState,
    *,
    budget_chars: int,
    part: str | None = None,
) -> str:
    """The world memory as an environment move's prompt shows it: subjects that the part,
    the observation or the pack's state lines name come first (what is here, what is
    carried), then the most recently seen, within ``budget_chars``."""
    if budget_chars <= 0 or not memory:
        return ""
    focus = [part or "", str(state.observation), *map(str, environment.prompt_notes(state))]
    return render_world(memory, budget_chars=budget_chars, focus=focus)


def offered_actions(
    environment: Environment, state: EnvState, *, filtered: bool = True
) -> list[str]:
    """The actions an environment move may choose from: the pack's ``offered_actions`` (its
    own filters; ``filtered=False`` skips them), or every valid action when none is left."""
    offered = [str(a) for a in environment.offered_actions(state)] if filtered else []
    return offered or [str(a) for a in state.valid_actions]


def act_json_schema(
    skills: Sequence[SkillSpec] = (), *, valid_actions: Sequence[str] | None = None
) -> dict[str, Any]:
    """The constrained output schema of the act step."""
    if valid_actions is not None:
        return {
            "type": "object",
            "properties": {"action": {"enum": list(valid_actions)}},
            "required": ["action"],
            "additionalProperties": False,
        }
    variants: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for spec in skills:
        args = spec.args_schema()
        defs.update(args.pop("$defs", {}))
        args.setdefault("additionalProperties", False)
        variants.append(
            {
                "type": "object",
                "properties": {"skill": {"const": spec.name}, "args": args},
                "required": ["skill", "args"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


class ChosenCall(BaseModel):
    """What the act step decided, with the model calls it took."""

    model_config = ConfigDict(frozen=True)

    skill: str | None
    """The chosen skill (None when no usable answer came back)."""
    args: dict[str, Any]
    """Its arguments (validated against the skill when ``error`` is None)."""
    error: str | None = None
    """Why no call could be chosen, recorded on the node."""
    error_type: str | None = None
    """The error class name."""
    llm: list[LLMResult] = []
    """Every model result, in order (for token accounting and traces)."""


async def choose_call(
    backend: LLMBackend,
    *,
    prompt_args: dict[str, Any],
    skills: Sequence[SkillSpec],
    adapter: str | None,
    env_skill: str | None = None,
    valid_actions: Sequence[str] | None = None,
    max_tokens: int = 48,
    attempts: int = 2,
    timeout_s: float = 120.0,
    check: Callable[[str, dict[str, Any]], list[str]] | None = None,
) -> ChosenCall:
    """Ask the model for one call; an unusable answer is retried once with feedback.

    ``check`` names what is wrong with a well-formed call (the user's cues it breaks); such a
    call is refused like an unreadable answer: the model is asked again with the problem, and
    when attempts run out the step's error names it.

    ``env_skill`` with ``valid_actions``: the answer is an action for that skill. Whatever
    the model answers, the result is a call or a recorded error: only a failure of the
    backend itself (a ``RuntimeFailure``: a server down, a timeout) is raised.
    """
    catalogue = {s.name: s for s in skills}
    results: list[LLMResult] = []
    feedback: str | None = None
    last_error: TrellisError = ModelRetry("the model was not asked")
    for _attempt in range(max(1, attempts)):
        prompt = build_act_prompt(
            skills=skills, valid_actions=valid_actions, feedback=feedback, **prompt_args
        )
        request = LLMRequest(
            prompt=prompt,
            adapter=adapter,
            json_schema=act_json_schema(skills, valid_actions=valid_actions),
            sampling=SamplingParams(max_tokens=max_tokens, stop=("\n",)),
            timeout_s=timeout_s,
        )
        try:
            result = await backend.generate(request)
        except ModelRetry as exc:
            last_error, feedback = exc, exc.feedback
            continue
        except UsageError as exc:  # the request itself was refused: asking again cannot help
            last_error = exc
            break
        except RuntimeFailure:
            raise  # the backend is down or timed out: the run stops and can be resumed
        except Exception as exc:  # a backend choked on what the model produced
            last_error = ModelRetry(f"the model's answer could not be read ({type(exc).__name__})")
            feedback = last_error.feedback
            continue
        results.append(result)
        try:
            skill, args = _interpret(result, catalogue, env_skill, valid_actions)
            problems = check(skill, args) if check is not None else []
            if problems:
                raise CueViolation("; ".join(problems))
        except ModelRetry as exc:
            last_error = exc
            feedback = exc.feedback
            continue
        return ChosenCall(skill=skill, args=args, llm=results)
    return ChosenCall(
        skill=None,
        args={},
        error=_clip(str(last_error)),
        error_type=type(last_error).__name__,
        llm=results,
    )


def _clip(message: str, limit: int = 1000) -> str:
    return message if len(message) <= limit else message[:limit] + "..."


def _interpret(
    result: LLMResult,
    catalogue: dict[str, SkillSpec],
    env_skill: str | None,
    valid_actions: Sequence[str] | None,
) -> tuple[str, dict[str, Any]]:
    value = result.parsed
    if value is None:
        detail = _clip(result.json_error or "no JSON object", 300)
        raise ModelRetry(f"the answer is not valid JSON ({detail}): {clip_text(result.text)}")
    value = check_model_value(value)  # a backend's own parse: the same limits apply
    if not isinstance(value, dict):
        raise ModelRetry(f"the answer must be a JSON object, got {clip_text(json.dumps(value))}")
    if valid_actions is not None and env_skill is not None:
        action = value.get("action")
        if not isinstance(action, str) or action not in valid_actions:
            raise ModelRetry(
                f"{clip_text(action)} is not one of the valid actions; choose one of: "
                + _clip("; ".join(valid_actions), 2000)
            )
        return env_skill, {"action": action}
    name = value.get("skill")
    if not isinstance(name, str) or name not in catalogue:
        raise UnknownSkillError(str(name), list(catalogue))
    args = value.get("args") or {}
    if not isinstance(args, dict):
        raise ModelRetry(f"args must be a JSON object, got {clip_text(json.dumps(args))}")
    try:
        catalogue[name].validate_args(args)
    except TrellisError as exc:
        raise ModelRetry(_clip(str(exc))) from exc
    return name, dict(args)
