"""End to end with the real embedded model on a twc game (slow: loads gemma-3-270m)."""

from __future__ import annotations

from pathlib import Path

import pytest
from trellis_twc import TwcConfig

from trellis.adapters import default_model_dir, verify_model
from trellis.agent import Agent, AgentConfig, LLMCall, TaskFinished
from trellis.memory import NodeStatus, run_sync


@pytest.mark.slow
def test_embedded_default_plays_twc(tmp_path: Path) -> None:
    if not verify_model(default_model_dir(), full=False):
        pytest.fail("the prepared model is missing: run `trellis model prepare` (scripts/setup.sh)")
    agent = Agent(config=AgentConfig(database_url=f"sqlite:///{tmp_path}/t.db", max_steps=3))
    try:
        events: list[object] = []

        async def collect() -> None:
            async for event in agent.stream(env=TwcConfig(seed=1, fold="dev")):
                events.append(event)

        run_sync(collect())
        finished = events[-1]
        assert isinstance(finished, TaskFinished)
        assert finished.outcome in ("success", "budget_exhausted")
        assert 1 <= finished.steps <= 3
        # The shipped twc-act adapter serves every move by default.
        assert finished.adapters == ["twc-act"] and finished.completion_tokens > 0
        calls = [e for e in events if isinstance(e, LLMCall)]
        assert calls and all(c.stage == "act" for c in calls)
        moves = [n for n in agent.tree(finished.task_id).nodes if n.kind == "env"]
        # Constrained decoding over the valid actions: every chosen action was executable.
        assert moves and all(n.status is NodeStatus.DONE for n in moves)
        assert all(isinstance(n.output["result"]["action"], str) for n in moves)
    finally:
        agent.close()
