"""Sync skills run on reused worker threads; a call that timed out keeps its own worker."""

from __future__ import annotations

import threading
import time

from trellis.agent.runtime import SkillContext, skill


def _workers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "trellis-skill")


def test_calls_reuse_idle_workers() -> None:
    @skill(side_effects=False)
    def echo(text: str) -> str:
        """Say it back."""
        return text

    context = SkillContext(task_id="t", node_id=1)
    assert echo.invoke_sync({"text": "warm"}, context).ok
    before = _workers()
    for n in range(20):
        assert echo.invoke_sync({"text": str(n)}, context).result == str(n)
    assert _workers() == before  # no thread started per call


def test_a_timed_out_call_keeps_running_on_its_own_worker() -> None:
    release = threading.Event()
    ran: list[str] = []

    @skill(side_effects=False, timeout_s=0.2)
    def slow(name: str) -> str:
        """Wait for the test."""
        if name == "stuck":
            release.wait(10)
        ran.append(name)
        return name

    context = SkillContext(task_id="t", node_id=1)
    outcome, run = slow.call_sync({"name": "stuck"}, context)
    assert not outcome.ok and outcome.error_type == "SkillTimeoutError"
    assert run is not None and run.is_alive()
    # Another call is not queued behind the stuck one: it gets a worker of its own.
    started = time.perf_counter()
    assert slow.invoke_sync({"name": "quick"}, context).ok
    assert time.perf_counter() - started < 0.2 and ran == ["quick"]
    release.set()
    run.join(5)
    assert not run.is_alive() and ran == ["quick", "stuck"]
