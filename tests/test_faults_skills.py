"""Fault drill: side-effecting skills whose outcome is lost (a timeout, a crash), the
idempotency key every call carries, and the app's effect check that settles an unknown call.

The drill's numbers: a payment skill with ``timeout_s=0.3`` that sleeps 0.6 s and then
writes used to be recorded as an ordinary failure, so replanning paid four times.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from trellis.adapters import FunctionBackend
from trellis.agent import Agent, AgentConfig, SkillContext, skill
from trellis.planners import PlannerConfig, ScriptedPlanner

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/faults.db"
    return str(request.getfixturevalue("postgres_url"))


class Ledger:
    """An outside system: payments by idempotency key (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.payments: list[str] = []
        self.keys: list[str] = []

    def pay(self, key: str) -> None:
        with self.lock:
            self.payments.append(key)

    def acted(self, key: str, skill_name: str, args: dict[str, Any]) -> bool:
        with self.lock:
            return key in self.payments


def _retrying_planner(failures: list[str]) -> ScriptedPlanner:
    """Pays once; on a failure it retries the payment unless the outcome is unknown (as the
    failure text tells every planner), then it only checks the world."""

    def plan(request: Any) -> Any:
        if request.failure is None:
            return {"steps": [{"id": "pay", "title": "pay the bill", "skill": "pay", "args": {}}]}
        failures.append(request.failure)
        if "SkillOutcomeUnknown" in request.failure:
            return {"steps": [{"id": "look", "title": "check", "skill": "look", "args": {}}]}
        return {"steps": [{"id": "pay", "title": "pay again", "skill": "pay", "args": {}}]}

    return ScriptedPlanner(plan, config=PlannerConfig(max_replans_per_task=3))


def _agent(url: str, pay: Any, ledger: Ledger, failures: list[str], **extra: Any) -> Agent:
    @skill(side_effects=False)
    def look() -> str:
        """Check the world."""
        return "checked"

    return Agent(
        config=AgentConfig(database_url=url, max_replans=3),
        skills=[pay, look],
        backend=FunctionBackend(lambda request: "{}"),
        planner=_retrying_planner(failures),
        **extra,
    )


def test_a_timed_out_sync_payment_is_unknown_and_never_repeated(url: str) -> None:
    ledger = Ledger()

    @skill(timeout_s=0.3)
    def pay(context: SkillContext) -> str:
        """Pay the bill (slow: acts after its timeout)."""
        time.sleep(0.6)
        ledger.pay(context.idempotency_key)
        return "paid"

    failures: list[str] = []
    agent = _agent(url, pay, ledger, failures)
    try:
        result = agent.run("pay the bill")
        time.sleep(1.0)  # every thread that could still act has acted
        calls = agent.deps.calls.calls(result.task_id)
    finally:
        agent.close()
    assert len(ledger.payments) == 1, ledger.payments
    assert [c.status for c in calls] == ["unknown"]
    assert calls[0].call_key == ledger.payments[0]  # the key the skill saw is the record's
    assert failures and "SkillOutcomeUnknown" in failures[0] and "not run again" in failures[0]


def test_the_effect_check_settles_a_timed_out_call(url: str) -> None:
    ledger = Ledger()
    asked: list[str] = []

    @skill(timeout_s=0.3)
    def pay(context: SkillContext) -> str:
        """Pay the bill (slow: acts after its timeout)."""
        time.sleep(0.6)
        ledger.pay(context.idempotency_key)
        return "paid"

    def check(key: str, skill_name: str, args: dict[str, Any]) -> bool:
        asked.append(key)
        return ledger.acted(key, skill_name, args)

    failures: list[str] = []
    agent = _agent(url, pay, ledger, failures, effect_check=check)
    try:
        result = agent.run("pay the bill")
        calls = agent.deps.calls.calls(result.task_id)
    finally:
        agent.close()
    assert result.success, result.reason
    assert failures == []  # settled before the planner had to decide
    assert ledger.payments == asked == [calls[0].call_key]
    assert [c.status for c in calls] == ["finished"]


def test_the_effect_check_saying_no_makes_a_retry_safe(url: str) -> None:
    ledger = Ledger()
    tries: list[str] = []

    @skill(timeout_s=0.2)
    async def pay(context: SkillContext) -> str:
        """Pay the bill (the first try hangs before acting)."""
        tries.append(context.idempotency_key)
        if len(tries) == 1:
            await asyncio.sleep(5)
        ledger.pay(context.idempotency_key)
        return "paid"

    failures: list[str] = []
    agent = _agent(url, pay, ledger, failures, effect_check=ledger.acted)
    try:
        result = agent.run("pay the bill")
    finally:
        agent.close()
    time.sleep(0.5)
    assert result.success, result.reason
    assert len(tries) == 2 and tries[0] != tries[1]  # a retry has its own key
    assert ledger.payments == [tries[1]]
    assert failures and "SkillDidNotAct" in failures[0]


def test_a_timed_out_async_skill_is_cancelled(url: str) -> None:
    ledger = Ledger()

    @skill(timeout_s=0.2)
    async def pay(context: SkillContext) -> str:
        """Pay the bill (slow)."""
        await asyncio.sleep(0.5)
        ledger.pay(context.idempotency_key)
        return "paid"

    failures: list[str] = []
    agent = _agent(url, pay, ledger, failures)
    try:
        result = agent.run("pay the bill")
        time.sleep(0.8)
        calls = agent.deps.calls.calls(result.task_id)
    finally:
        agent.close()
    assert ledger.payments == []  # cancelled at its await: it never paid
    assert [c.status for c in calls] == ["unknown"]


def test_keys_are_stable_per_attempt() -> None:
    seen: list[tuple[str, int, str]] = []

    @skill
    def step(context: SkillContext) -> str:
        """Do one thing."""
        seen.append((context.task_id, context.node_id or 0, context.idempotency_key))
        if len(seen) == 1:
            raise RuntimeError("flaky")
        return "ok"

    def plan(request: Any) -> Any:
        return {"steps": [{"id": "a", "title": "do it", "skill": "step", "args": {}}]}

    agent = Agent(
        config=AgentConfig(database_url="sqlite://", max_replans=2),
        skills=[step],
        backend=FunctionBackend(lambda request: "{}"),
        planner=ScriptedPlanner(plan),
    )
    try:
        result = agent.run("do it")
    finally:
        agent.close()
    assert result.success
    (task, first_node, first_key), (_, second_node, second_key) = seen
    assert first_key == f"{task}:{first_node}:1"
    assert second_key == f"{task}:{second_node}:1" and second_key != first_key


CRASH = textwrap.dedent(
    '''
    import os
    import sys
    from trellis.adapters import FunctionBackend
    from trellis.agent import Agent, AgentConfig, SkillContext, skill
    from trellis.planners import ScriptedPlanner

    url, ledger = sys.argv[1], sys.argv[2]

    @skill
    def pay(context: SkillContext) -> str:
        """Pay the bill, then the process dies before the result is recorded."""
        with open(ledger, "a") as handle:
            handle.write(context.idempotency_key + "\\n")
        os._exit(3)

    plan = {"steps": [{"id": "pay", "title": "pay the bill", "skill": "pay", "args": {}}]}
    agent = Agent(config=AgentConfig(database_url=url), skills=[pay],
                  backend=FunctionBackend(lambda request: "{}"),
                  planner=ScriptedPlanner(lambda request: plan))
    agent.run("pay the bill")
    '''
)


def test_the_effect_check_settles_a_call_cut_by_a_crash(url: str, tmp_path: Path) -> None:
    script, ledger = tmp_path / "crash.py", tmp_path / "ledger.txt"
    script.write_text(CRASH)
    done = subprocess.run(
        [sys.executable, str(script), url, str(ledger)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert done.returncode == 3, done.stderr[-2000:]
    key = ledger.read_text().split()[0]
    task_id = key.split(":")[0]
    asked: list[str] = []

    def check(call_key: str, skill_name: str, args: dict[str, Any]) -> bool:
        asked.append(call_key)
        return call_key in ledger.read_text().split()

    @skill
    def pay() -> str:
        """Never called again."""
        raise AssertionError("a call cut off by a crash ran again")

    agent = Agent(
        config=AgentConfig(database_url=url),
        skills=[pay],
        backend=FunctionBackend(lambda request: "{}"),
        planner=ScriptedPlanner(lambda request: {"steps": []}),
        effect_check=check,
    )
    try:
        result = agent.resume(task_id)
    finally:
        agent.close()
    assert asked == [key]
    assert result.success, result.reason
    assert ledger.read_text().split() == [key]
