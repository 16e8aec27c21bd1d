"""App worlds: small worlds written the way an app developer writes them, to measure the
generic path (typed skills, a goal, the user's reminders) judged by each world's own state.

``WORLDS`` lists every world (see :mod:`bench.apps._common`); ``run_reference`` plays a goal's
reference solution without the runtime (:mod:`bench.apps.reference`).
"""

from __future__ import annotations

from typing import Any

from ._common import (
    AppWorld,
    Call,
    Goal,
    Split,
    get_world,
    problems,
    step,
    world_of,
    worlds,
)

__all__ = [
    "WORLDS",
    "AppWorld",
    "Call",
    "Goal",
    "Split",
    "get_world",
    "problems",
    "step",
    "world_of",
    "worlds",
]


def __getattr__(name: str) -> Any:
    if name == "WORLDS":
        from . import _common

        return _common.WORLDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
