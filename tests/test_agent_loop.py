"""The agent loop end to end with a scripted model and planner, on every supported database."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from trellis_twc import TwcConfig

from trellis.adapters import FunctionBackend, LLMRequest
from trellis.agent import (
    Agent,
    AgentConfig,
    ApprovalPendingError,
    NodeStatusChanged,
    NoPendingApprovalError,
    SkillCalled,
    SkillFinished,
    TaskFinished,
    skill,
)
from trellis.memory import NodeStatus, TaskStatus, run_sync
from trellis.memory.errors import RuntimeFailure
from trellis.planners import ScriptedPlanner

LOG: list[str] = []


@skill
def wash(item: str) -> dict[str, str]:
    """Wash one item."""
    LOG.append(f"wash {item}")
    return {"washed": item}


@skill(side_effects=False)
def look(room: str) -> str:
    """Describe a room."""
    return f"{room}: a mug and a plate"


@skill
def explode(item: str) -> None:
    """Always fails."""
    raise ValueError(f"cannot handle {item}")


@skill(timeout_s=0.3, side_effects=False)
def hang(seconds: float) -> None:
    """Sleeps too long."""
    time.sleep(seconds)


@skill(side_effects=False)
def weird() -> Any:
    """Returns something that is not JSON."""
    return {1, 2, 3}


@skill(needs_approval=True)
def pay(amount: int) -> dict[str, int]:
    """Pay an amount (a human must approve)."""
    LOG.append(f"pay {amount}")
    return {"paid": amount}


@skill(side_effects=False)
def huge() -> str:
    """Returns more than a node may store."""
    return "x" * 2_000_000


SKILLS = [wash, look, explode, hang, weird, pay, huge]


def step(sid: str, skill_name: str, args: dict[str, Any], deps: list[str] | None = None) -> dict:
    title = f"{skill_name} {' '.join(str(v) for v in args.values())}".strip()
    return {"id": sid, "title": title, "skill": skill_name, "args": args, "depends_on": deps or []}


@pytest.fixture(autouse=True)
def _clear_log() -> Iterator[None]:
    LOG.clear()
    yield
    LOG.clear()


def make_agent(
    url: str,
    plans: Any,
    answer: Callable[[LLMRequest], str] | None = None,
    **config: Any,
) -> Agent:
    backend = FunctionBackend(answer or (lambda request: "{}"), name="scripted")
    return Agent(
        config=AgentConfig(database_url=url, **config),
        skills=SKILLS,
        backend=backend,
        planner=ScriptedPlanner(plans),
    )


def checkpoint_count(agent: Agent, task_id: str) -> int:
    table = "checkpoints"
    with agent.store.engine.connect() as conn:
        return int(
            conn.execute(
                text(f"SELECT count(*) FROM {table} WHERE thread_id = :t"), {"t": task_id}
            ).scalar_one()
        )


def test_scripted_run_end_to_end(database_url: str) -> None:
    plans = {
        "tidy the kitchen": {
            "steps": [
                step("a", "look", {"room": "kitchen"}),
                step("b", "wash", {"item": "mug"}, ["a"]),
                step("c", "wash", {"item": "plate"}, ["a"]),
            ]
        }
    }
    agent = make_agent(database_url, plans)
    try:
        events: list[Any] = []

        async def collect() -> None:
            async for event in agent.stream("tidy the kitchen"):
                events.append(event)

        run_sync(collect())
        finished = events[-1]
        assert isinstance(finished, TaskFinished)
        assert finished.success and finished.outcome == "success"
        assert finished.steps == 3 and finished.replans == 0
        assert LOG == ["wash mug", "wash plate"]
        view = agent.tree(finished.task_id)
        assert view.task.status is TaskStatus.DONE
        by_key = {n.key: n for n in view.nodes}
        assert by_key["root"].status is NodeStatus.DONE
        assert by_key["a"].output == {"skill": "look", "result": "kitchen: a mug and a plate"}
        assert by_key["b"].status is NodeStatus.DONE
        # Events: every skill call is announced and finished; node statuses are streamed.
        called = [e.skill for e in events if isinstance(e, SkillCalled)]
        assert called == ["look", "wash", "wash"]
        assert all(e.ok for e in events if isinstance(e, SkillFinished))
        statuses = [(e.node_id, e.status) for e in events if isinstance(e, NodeStatusChanged)]
        assert (by_key["b"].id, "running") in statuses and (by_key["b"].id, "done") in statuses
        # Retention: a finished task keeps only its latest checkpoint.
        assert checkpoint_count(agent, finished.task_id) == 1
        # Resuming a finished task does not run anything again.
        again = agent.resume(finished.task_id)
        assert again.success and LOG == ["wash mug", "wash plate"]
    finally:
        agent.close()


def test_planner_inventing_a_skill_fails_clearly(tmp_path: Path) -> None:
    plans = {"fly": {"steps": [step("a", "levitate", {})]}}
    agent = make_agent(f"sqlite:///{tmp_path}/t.db", plans)
    try:
        result = agent.run("fly")
        assert result.outcome == "failed"
        assert "planning failed" in result.reason and "levitate" in result.reason
        assert agent.tree(result.task_id).task.status is TaskStatus.FAILED
    finally:
        agent.close()


@pytest.mark.parametrize(
    ("bad_step", "error_type"),
    [
        (step("a", "explode", {"item": "vase"}), "SkillFailedError"),
        (step("a", "hang", {"seconds": 5}), "SkillTimeoutError"),
        (step("a", "weird", {}), "SkillResultNotSerializableError"),
        (step("a", "huge", {}), "PayloadTooLargeError"),
    ],
)
def test_bad_skills_are_recorded_then_replanned(
    tmp_path: Path, bad_step: dict, error_type: str
) -> None:
    plans = {
        "risky": {"steps": [bad_step, step("b", "wash", {"item": "cup"}, ["a"])]},
        bad_step["title"]: {"steps": [step("alt", "look", {"room": "hall"})]},
    }
    agent = make_agent(f"sqlite:///{tmp_path}/t.db", plans)
    try:
        started = time.perf_counter()
        result = agent.run("risky")
        assert time.perf_counter() - started < 4  # the hang was cut at its timeout
        assert result.success and result.replans == 1
        assert LOG == ["wash cup"]
        node = next(n for n in agent.tree(result.task_id).nodes if n.key == "a")
        history = agent.store.events(result.task_id, node_id=node.id)
        assert any(e.field == "error" and error_type in str(e.new) for e in history)
    finally:
        agent.close()


def test_replan_budget_exhausted(tmp_path: Path) -> None:
    plans = {
        "doomed": {"steps": [step("a", "explode", {"item": "x"})]},
        "explode x": {"steps": [step("again", "explode", {"item": "y"})]},
    }
    agent = make_agent(f"sqlite:///{tmp_path}/t.db", plans, max_replans=1)
    try:
        result = agent.run("doomed")
        assert result.outcome == "failed" and result.replans == 1
        assert "max_replans" in result.reason
    finally:
        agent.close()


def test_step_budget_exhausted(tmp_path: Path) -> None:
    plans = {"many": {"steps": [step(f"s{i}", "wash", {"item": f"i{i}"}) for i in range(5)]}}
    agent = make_agent(f"sqlite:///{tmp_path}/t.db", plans, max_steps=2)
    try:
        result = agent.run("many")
        assert result.outcome == "budget_exhausted" and not result.success
        assert result.steps == 2 and len(LOG) == 2
        assert agent.tree(result.task_id).task.status is TaskStatus.FAILED
    finally:
        agent.close()


def test_wall_time_budget(tmp_path: Path) -> None:
    plans = {"slow": {"steps": [step(f"s{i}", "hang", {"seconds": 0.2}) for i in range(4)]}}
    agent = make_agent(f"sqlite:///{tmp_path}/t.db", plans, wall_time_s=0.3)
    try:
        result = agent.run("slow")
        assert result.outcome == "budget_exhausted" and "wall time" in result.reason
        assert result.steps < 4
    finally:
        agent.close()


def test_approval_approve_and_reject(database_url: str) -> None:
    plans = {
        "pay the bill": {"steps": [step("a", "pay", {"amount": 30})]},
        "pay 30": {"steps": [step("b", "look", {"room": "office"})]},
    }
    agent = make_agent(database_url, plans)
    try:
        first = agent.run("pay the bill")
        assert first.outcome == "interrupted"
        assert first.pending_approval is not None
        assert first.pending_approval["skill"] == "pay" and first.pending_approval["args"] == {
            "amount": 30
        }
        assert LOG == []
        # A pending interrupt cannot be silently resumed past.
        with pytest.raises(ApprovalPendingError, match="approve"):
            agent.resume(first.task_id)
        done = agent.approve(first.task_id)
        assert done.success and LOG == ["pay 30"]
        with pytest.raises(NoPendingApprovalError):
            agent.approve(first.task_id)

        second = agent.run("pay the bill")
        assert second.outcome == "interrupted"
        rejected = agent.reject(second.task_id)
        assert LOG == ["pay 30"]  # the rejected call never ran
        assert rejected.success and rejected.replans == 1  # the planner found another way
        node = next(n for n in agent.tree(second.task_id).nodes if n.key == "a")
        history = agent.store.events(second.task_id, node_id=node.id)
        assert any(e.field == "error" and "rejected" in str(e.new) for e in history)
    finally:
        agent.close()


def test_reminders_become_cues_for_the_planner(tmp_path: Path) -> None:
    seen: list[Any] = []

    def plans(request: Any) -> dict:
        seen.append(request)
        return {"steps": [step("a", "wash", {"item": "white plate"})]}

    agent = Agent(
        config=AgentConfig(database_url=f"sqlite:///{tmp_path}/t.db"),
        skills=SKILLS,
        backend=FunctionBackend(lambda request: "{}"),
        planner=ScriptedPlanner(plans),
    )
    try:
        result = agent.run("wash up", reminders=["never use the blue plates"])
        assert result.success
        cues = seen[0].cues
        assert len(cues) == 1 and cues[0].polarity == "forbid"
        assert "blue plates" in cues[0].subject
    finally:
        agent.close()


def test_database_removed_mid_run(tmp_path: Path) -> None:
    database = tmp_path / "gone.db"

    @skill(name="remove_db", side_effects=False)
    def remove_db() -> str:
        """Deletes the database file (simulates an operator mistake)."""
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{database}{suffix}")
            if path.exists():
                os.remove(path)
        return "removed"

    plans = {
        "oops": {"steps": [step("a", "remove_db", {}), step("b", "wash", {"item": "x"}, ["a"])]}
    }
    agent = make_agent(f"sqlite:///{database}", plans)
    agent.register(remove_db)
    try:
        with pytest.raises(RuntimeFailure, match="was removed while the task ran"):
            agent.run("oops")
        assert LOG == []  # nothing ran after the database disappeared
    finally:
        agent.close()


def test_events_are_json_round_trippable(tmp_path: Path) -> None:
    from pydantic import TypeAdapter

    from trellis.agent import AgentEvent

    plans = {"peek": {"steps": [step("a", "look", {"room": "attic"})]}}
    agent = make_agent(f"sqlite:///{tmp_path}/t.db", plans)
    try:
        events: list[Any] = []

        async def collect() -> None:
            async for event in agent.stream("peek"):
                events.append(event)

        run_sync(collect())
        adapter: TypeAdapter[Any] = TypeAdapter(AgentEvent)
        for event in events:
            again = adapter.validate_json(json.dumps(event.model_dump(mode="json")))
            assert type(again) is type(event)
    finally:
        agent.close()


def test_checkpoint_retention_is_configurable(tmp_path: Path) -> None:
    plans = {"two": {"steps": [step("a", "look", {"room": "a"}), step("b", "look", {"room": "b"})]}}
    keep_all = make_agent(
        f"sqlite:///{tmp_path}/all.db", plans, keep_checkpoints=None, keep_checkpoints_running=None
    )
    delete = make_agent(f"sqlite:///{tmp_path}/none.db", plans, keep_checkpoints=0)
    try:
        kept = keep_all.run("two")
        # Every superstep: the input, remind, plan, one per step, the last select, finish.
        assert checkpoint_count(keep_all, kept.task_id) >= 7
        gone = delete.run("two")
        assert checkpoint_count(delete, gone.task_id) == 0
        # The tree is the durable record: still complete without checkpoints.
        assert delete.tree(gone.task_id).task.status is TaskStatus.DONE
        assert delete.resume(gone.task_id).outcome == "success"
    finally:
        keep_all.close()
        delete.close()


def test_one_reminder_given_as_a_string_is_one_reminder(tmp_path: Path) -> None:
    plans = {"clean": {"steps": [step("a", "wash", {"item": "pan"})]}}
    agent = make_agent(f"sqlite:///{tmp_path}/t.db", plans)
    try:
        result = agent.run("clean", reminders="never wash the plates")
        assert result.success
        task = agent.tree(result.task_id).task
        assert task.metadata["reminders"] == ["never wash the plates"]
    finally:
        agent.close()


def test_decompose_steps_are_planned_when_reached(tmp_path: Path) -> None:
    plans = {
        "host dinner": {
            "steps": [
                {
                    "id": "prep",
                    "title": "prepare the table",
                    "skill": "decompose",
                    "args": {},
                    "depends_on": [],
                },
                step("serve", "wash", {"item": "pan"}, ["prep"]),
            ]
        },
        "prepare the table": {"steps": [step("p1", "wash", {"item": "plates"})]},
    }
    agent = make_agent(f"sqlite:///{tmp_path}/t.db", plans)
    try:
        result = agent.run("host dinner")
        assert result.success and LOG == ["wash plates", "wash pan"]
        nodes = {n.key: n for n in agent.tree(result.task_id).nodes}
        assert nodes["p1"].parent_id == nodes["prep"].id
        assert nodes["prep"].status is NodeStatus.DONE
    finally:
        agent.close()


def test_checkpoints_per_step(tmp_path: Path) -> None:
    """A step whose call the plan fixed is one superstep (one checkpoint); a call the model
    chose is checkpointed before it runs, so that step is two."""

    def washes(n: int) -> dict:
        return {"steps": [step(f"s{i}", "wash", {"item": f"i{i}"}) for i in range(n)]}

    plans = {"two": washes(2), "five": washes(5)}
    answer = '{"skill": "wash", "args": {"item": "cup"}}'
    keep = {"keep_checkpoints": None, "keep_checkpoints_running": None}
    fixed = make_agent(f"sqlite:///{tmp_path}/fixed.db", plans, **keep)
    chosen = make_agent(
        f"sqlite:///{tmp_path}/chosen.db", plans, lambda r: answer, use_plan_args=False, **keep
    )
    try:
        counts: dict[tuple[str, str], int] = {}
        for name, agent in (("fixed", fixed), ("chosen", chosen)):
            for goal in ("two", "five"):
                result = agent.run(goal)
                assert result.success and result.steps == len(plans[goal]["steps"])
                counts[name, goal] = checkpoint_count(agent, result.task_id)
                # Every side-effecting call has its exactly-once row, completed with its step.
                calls = agent.deps.calls.calls(result.task_id)
                assert [c.status for c in calls] == ["finished"] * result.steps
        assert counts["fixed", "five"] - counts["fixed", "two"] == 3
        assert counts["chosen", "five"] - counts["chosen", "two"] == 6
    finally:
        fixed.close()
        chosen.close()


def test_concurrent_runs_on_an_in_memory_database_take_turns() -> None:
    def first_offered(request: LLMRequest) -> str:
        actions = (request.json_schema or {})["properties"]["action"]["enum"]
        return json.dumps({"action": actions[0]})

    agent = Agent(
        config=AgentConfig(database_url="sqlite://", max_steps=2),
        backend=FunctionBackend(first_offered),
        planner=ScriptedPlanner({}),
    )
    order: list[tuple[str, str]] = []

    async def game(seed: int) -> Any:
        result = None
        async for event in agent.stream(env=TwcConfig(seed=seed, fold="dev")):
            order.append((event.task_id, event.type))
            if isinstance(event, TaskFinished):
                result = event
        return result

    async def both() -> list[Any]:
        return await asyncio.gather(game(1), game(2))

    try:
        first, second = asyncio.run(both())
        assert first.steps == 2 and second.steps == 2
        # One connection: the second run started only once the first had finished.
        tasks = [task for task, _type in order]
        assert tasks == sorted(tasks, key=tasks.index)
        assert len({t for t in tasks}) == 2 and len(agent.tasks()) == 2
    finally:
        agent.close()


def test_a_stream_left_early_finishes_before_the_next_run_on_an_in_memory_database() -> None:
    """An in-memory database is one connection: a run whose consumer stopped reading goes
    on in the background, and the next run waits for it instead of sharing the connection."""
    calls: list[int] = []

    def slow(i: int) -> int:
        """Takes a while."""
        time.sleep(0.05)
        calls.append(i)
        return i

    plan = {"steps": [{"id": f"s{i}", "title": f"step {i}", "skill": "slow", "args": {"i": i},
                       "depends_on": [f"s{i - 1}"] if i else []} for i in range(4)]}  # fmt: skip
    agent = Agent(
        config=AgentConfig(database_url="sqlite://"),
        skills=[slow],
        backend=FunctionBackend(lambda request: "{}"),
        planner=ScriptedPlanner({"go": plan}),
    )

    async def first_move() -> str:
        async for event in agent.stream("go"):
            if isinstance(event, SkillCalled):
                return event.task_id  # stops reading here
        raise AssertionError("no skill was called")

    try:
        tasks = [run_sync(first_move()) for _ in range(3)]
        assert agent.run("go").success  # after the last one left early, too
        assert [agent.store.get_task(t).status for t in tasks] == [TaskStatus.DONE] * 3
        assert calls == [0, 1, 2, 3] * 4
    finally:
        agent.close()
