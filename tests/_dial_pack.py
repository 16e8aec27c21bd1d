"""A small pure-Python environment pack for tests: open a combination lock.

It is written the way an app writes its own world against the public contract, and it runs
through the same conformance suite as the installed packs (it needs no Java, no game).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from trellis import EnvironmentPack, EnvSpec, EnvState, Fact
from trellis.agent import Environment, ForbiddenFoldError


class DialSpec(EnvSpec):
    """Which lock to open."""

    kind: ClassVar[str] = "dial"

    code: list[int] = Field(default=[3, 1], min_length=1, max_length=6)
    """The digits to set, in order."""
    fold: Literal["train", "dev"] = "dev"
    """Episode fold (``test`` is held out)."""
    step_limit: int = Field(default=12, ge=1)
    """Moves before the lock jams (the task fails)."""

    @field_validator("fold", mode="before")
    @classmethod
    def _refuse_test(cls, value: object) -> object:
        if value == "test":
            raise ForbiddenFoldError("the dial 'test' fold is held out; use train or dev")
        return value


class Dial(Environment):
    """Turn the dial up or down, press ``set`` to enter the shown digit."""

    def __init__(self, spec: EnvSpec) -> None:
        if not isinstance(spec, DialSpec):
            raise TypeError("Dial takes a DialSpec")
        self.spec = spec
        self._current: EnvState | None = None

    def reset(self) -> EnvState:
        self.digit, self.entered, self.moves = 0, 0, 0
        self._current = self._make("The dial shows 0. Nothing is entered.")
        return self._current

    def step(self, action: str) -> EnvState:
        current = self.state
        if current.done or action not in current.valid_actions:
            self.refuse(action, current)
        self.moves += 1
        if action == "turn up":
            self.digit = (self.digit + 1) % 10
        elif action == "turn down":
            self.digit = (self.digit - 1) % 10
        elif action == "set":
            if self.digit == self.spec.code[self.entered]:
                self.entered += 1
            else:
                self.entered = 0
        self._current = self._make(
            f"The dial shows {self.digit}. {self.entered} of {len(self.spec.code)} entered."
        )
        return self._current

    @property
    def state(self) -> EnvState:
        return self._current if self._current is not None else self.reset()

    def _make(self, observation: str) -> EnvState:
        success = self.entered == len(self.spec.code)
        failure = not success and self.moves >= self.spec.step_limit
        return EnvState(
            observation=observation,
            valid_actions=["turn up", "turn down", "set", "look"],
            task_description="open the lock: set each digit of the code in turn",
            score=self.entered / len(self.spec.code),
            success=success,
            failure=failure,
            done=success or failure,
            moves=self.moves,
        )

    def offered_actions(self, state: EnvState) -> list[str]:
        return [a for a in state.valid_actions if a != "look"]

    def prompt_notes(self, state: EnvState) -> list[str]:
        return [f"Code: {' '.join(str(d) for d in self.spec.code)}"]

    def observed_facts(self, state: EnvState) -> list[Fact]:
        return [Fact(subject="dial", relation="shows", object=str(self.digit))]


PACK = EnvironmentPack(
    spec=DialSpec,
    create=Dial,
    description="a combination lock (tests)",
    examples=lambda: [DialSpec(), DialSpec(code=[2, 2, 1], fold="train")],
    refused_records=({"kind": "dial", "fold": "test"},),
)
