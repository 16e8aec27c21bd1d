"""The app worlds' smoke test with the real embedded model: the generic path end to end.

An app's own skills, a goal with a reminder, the embedded gemma-3-270m planning and acting
through the runtime (``bench/bench_apps.py``'s runner), and then only the world speaks. How
often goals are achieved is the benchmark's figure (``bench/results/bench_apps.json``); what
is asserted here must hold on every run: the task ends without crashing, within its step
budget, and no call the reminder forbids ever reached the world.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.apps import get_world
from bench.bench_apps import run_goal
from trellis import AgentConfig
from trellis.adapters import EmbeddedBackend
from trellis.memory import TaskStore, run_sync

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prepared_model")]


@pytest.mark.parametrize(
    "goal_id",
    ["kitchen/plate-table", "table/plate-seat-3"],  # "never use the blue plates": train, dev
)
def test_a_goal_with_a_reminder_runs_with_the_real_model_and_the_world_judges(
    goal_id: str, tmp_path: pathlib.Path
) -> None:
    world = get_world(goal_id.split("/")[0])
    goal = next(g for g in world.goals() if g.id == goal_id)
    url = f"sqlite:///{tmp_path}/apps.db"
    store = TaskStore.open(url)
    backend = EmbeddedBackend()
    try:
        row = run_sync(
            run_goal(world, goal, backend, store, AgentConfig(database_url=url, max_steps=6))
        )
    finally:
        run_sync(backend.aclose())
        store.close()
    assert row["runtime_outcome"] in ("success", "failed", "budget_exhausted"), row
    assert row["forbidden"] == [], row  # judged from the world's log, not the runtime's
    assert isinstance(row["achieved"], bool) and row["skill_calls"] <= 6
