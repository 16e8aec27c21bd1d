"""Route and act: which adapter serves a step, and the call the model chooses for it."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from trellis.adapters import Cue
from trellis.agent.runtime._act import (
    ChosenCall,
    choose_call,
    env_act_prompt_args,
    offered_actions,
    world_memory_text,
)
from trellis.agent.runtime._env_plan import PART_KIND
from trellis.agent.runtime._events import (
    RouteDecided,
)
from trellis.agent.runtime._loop_state import LoopState, registry_error
from trellis.agent.runtime._planning import render_cues
from trellis.agent.runtime._stage_base import StageBase
from trellis.memory import NodeRecord, run_sync, world_memory
from trellis.memory.errors import (
    RuntimeFailure,
    TrellisError,
)
from trellis.planners import call_violations

__all__ = ["ActStages"]


class ActStages(StageBase):
    """Route a step to its adapter and, when the plan did not fix the call, ask the model."""

    def _route(self, state: LoopState, node: NodeRecord) -> tuple[str | None, dict[str, Any]]:
        """The adapter for the step (None: the base model) and the router's record of why."""
        task_id = state["task_id"]
        if self.d.router is None:
            self.emit(RouteDecided(task_id=task_id, node_id=node.id, adapter=None, reason=""))
            return None, {"adapter": None, "reason": "no router configured"}
        from trellis.adapters import StepContext

        context = StepContext(
            text=node.title,
            node_kind=node.kind,
            skill=(node.input or {}).get("skill"),
            task_id=task_id,
            node_id=node.id,
        )
        self.flush(task_id)
        decision = run_sync(self.d.router.route(context))
        self.emit(
            RouteDecided(
                task_id=task_id,
                node_id=node.id,
                adapter=decision.adapter,
                score=decision.score,
                reason=decision.reason,
            )
        )
        return decision.adapter, decision.model_dump(mode="json")

    def _planned_call(self, task_id: str, node: NodeRecord) -> dict[str, Any] | None:
        """The call the plan fixed for the step (or why it cannot run); None when the model
        must choose it."""
        planned = node.input or {}
        name = planned.get("skill")
        args = planned.get("args") or {}
        env = self.environment(task_id)
        if env is not None and name == env[1]:
            return None  # the model picks the game action
        registry = self.d.skills
        if isinstance(name, str) and name in registry and self.d.config.use_plan_args:
            try:
                registry.get(name).spec.validate_args(args)
                return {"skill": name, "args": dict(args)}
            except TrellisError:
                pass  # let the model fill in the arguments
        if isinstance(name, str) and name not in registry:
            return {"skill": name, "args": args, **registry_error(registry, name)}
        return None

    def _cue_problems(self, state: LoopState) -> Callable[[str, dict[str, Any]], list[str]]:
        """What a call breaks of the task's cues (the user's stored cues and the task's
        reminders, as the remind stage merged them); empty when it may run."""
        cues = [Cue.model_validate(c) for c in state.get("cues", [])]
        return lambda skill, args: call_violations(skill, args, cues) if cues else []

    def _part_title(self, node: NodeRecord) -> str | None:
        """The title of the goal part a move works on (None: the move is under the root)."""
        if node.parent_id is None:
            return None
        parent = self.d.store.get_node(node.parent_id)
        return parent.title if parent.kind == PART_KIND else None

    def _ask(self, asking: Coroutine[Any, Any, ChosenCall]) -> ChosenCall:
        """The model's call, or the step's recorded error: nothing the model answers may
        escape the act step (only a backend that is down or timed out stops the run)."""
        try:
            return run_sync(asking)
        except RuntimeFailure:
            raise
        except TrellisError as exc:
            error = str(exc)
        except Exception as exc:
            error = f"the act step could not use the model's answer ({type(exc).__name__})"
        return ChosenCall(skill=None, args={}, error=error[:1000], error_type="ModelRetry", llm=[])

    def _choose(
        self, state: LoopState, node: NodeRecord, adapter: str | None, *, why: str = ""
    ) -> dict[str, Any]:
        """Ask the model for the step's call: the token counts and ``call``; ``why`` is the
        router's reason for ``adapter``."""
        task_id, node_id = state["task_id"], node.id
        self.flush(task_id)
        name = (node.input or {}).get("skill")
        env = self.environment(task_id)
        registry = self.d.skills
        if env is not None and name == env[1]:
            game = env[0].state
            history = [
                str(c.args.get("action")) for c in self.d.calls.calls(task_id) if c.skill == env[1]
            ]
            task = self.d.store.get_task(task_id)
            part = self._part_title(node)
            memory = world_memory_text(
                world_memory(task, self.d.store.nodes(task_id)),
                env[0],
                game,
                budget_chars=self.d.config.world_memory_chars,
                part=part,
            )
            check = self._cue_problems(state)
            offered = offered_actions(env[0], game, filtered=self.d.config.offer_filter)
            # An action a cue forbids is not offered at all; check() still guards the answer.
            allowed = [a for a in offered if not check(env[1], {"action": a})] or offered
            chosen = self._ask(
                choose_call(
                    self.d.backend,
                    prompt_args=env_act_prompt_args(
                        goal=task.goal,
                        environment=env[0],
                        state=game,
                        history=history,
                        cues=render_cues(state.get("cues", [])),
                        memory=memory,
                        part=part,
                    ),
                    skills=[registry.get(env[1]).spec],
                    adapter=adapter,
                    env_skill=env[1],
                    valid_actions=allowed,
                    max_tokens=self.d.config.act_max_tokens,
                    attempts=self.d.config.act_attempts,
                    timeout_s=self.d.config.llm_timeout_s,
                    check=check,
                )
            )
        else:
            specs = [registry.get(name).spec] if isinstance(name, str) else registry.specs()
            context = self.d.store.build_context(node_id, budget_chars=self.d.config.context_chars)
            chosen = self._ask(
                choose_call(
                    self.d.backend,
                    prompt_args={
                        "goal": self.d.store.get_task(task_id).goal,
                        "step": node.title,
                        "cues": render_cues(state.get("cues", [])),
                        "context": str(getattr(context, "text", context)),
                    },
                    skills=specs,
                    adapter=adapter,
                    max_tokens=self.d.config.act_max_tokens,
                    attempts=self.d.config.act_attempts,
                    timeout_s=self.d.config.llm_timeout_s,
                    check=self._cue_problems(state),
                )
            )
        why = f"routed: {why}" if why else "no router: base model"
        update = self._account(state, chosen.llm, stage="act", node_id=node_id, why=why)
        call: dict[str, Any] = {"skill": chosen.skill, "args": chosen.args}
        if chosen.error is not None:
            call.update(error=chosen.error, error_type=chosen.error_type)
        return {**update, "call": call}
