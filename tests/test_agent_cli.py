"""The `trellis run/resume/tasks/tree/approve` commands (scripted runs made through the SDK)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from trellis.adapters import FunctionBackend
from trellis.agent import Agent, AgentConfig, skill
from trellis.agent.cli import app
from trellis.planners import ScriptedPlanner

runner = CliRunner()


@skill(needs_approval=True)
def ship(item: str) -> str:
    """Ship an item (needs approval)."""
    return f"shipped {item}"


def _agent(url: str) -> Agent:
    plans = {
        "ship it": {
            "steps": [
                {
                    "id": "a",
                    "title": "ship the box",
                    "skill": "ship",
                    "args": {"item": "box"},
                    "depends_on": [],
                }
            ]
        }
    }
    return Agent(
        config=AgentConfig(database_url=url),
        skills=[ship],
        backend=FunctionBackend(lambda request: "{}"),
        planner=ScriptedPlanner(plans),
    )


def test_tasks_tree_and_approve(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    agent = _agent(url)
    result = agent.run("ship it")
    agent.close()
    assert result.outcome == "interrupted"

    listed = runner.invoke(app, ["tasks", "--database-url", url])
    assert listed.exit_code == 0, listed.output
    assert result.task_id in listed.output and "running" in listed.output

    shown = runner.invoke(app, ["tree", result.task_id, "--database-url", url])
    assert shown.exit_code == 0, shown.output
    assert "ship the box" in shown.output and "waiting for approval" in shown.output

    # A command-line approve needs the skill registered in this process: the SDK approves.
    again = _agent(url)
    done = again.approve(result.task_id)
    again.close()
    assert done.success

    resumed = runner.invoke(app, ["resume", result.task_id, "--database-url", url])
    assert resumed.exit_code == 0, resumed.output
    assert "success" in resumed.output

    no_pending = runner.invoke(app, ["approve", result.task_id, "--database-url", url])
    assert no_pending.exit_code != 0
    assert "not waiting for an approval" in str(no_pending.exception)


def test_approve_registers_the_skill_modules_the_task_was_started_with(tmp_path: Path) -> None:
    """A task started with ``--skills MODULE`` keeps the module: approve (and resume, reject)
    in a new process find its skills without being told again."""
    url = f"sqlite:///{tmp_path}/labels.db"
    agent = _agent(url)
    result = agent.run("ship it", labels={"skill_modules": "test_agent_cli"})
    agent.close()
    assert result.outcome == "interrupted"
    approved = runner.invoke(app, ["approve", result.task_id, "--database-url", url])
    assert approved.exit_code == 0, approved.output
    assert "success" in approved.output


def test_run_refuses_bad_input(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    nothing = runner.invoke(app, ["run", "--database-url", url])
    assert nothing.exit_code == 2 and "GOAL" in nothing.output
    no_skills = runner.invoke(app, ["run", "tidy up", "--database-url", url])
    assert no_skills.exit_code == 2 and "--skills" in no_skills.output
    bad_module = runner.invoke(
        app, ["run", "tidy up", "--skills", "../etc/passwd", "--database-url", url]
    )
    assert bad_module.exit_code == 2 and "not a module name" in bad_module.output
    test_fold = runner.invoke(
        app, ["run", "--env", "twc", "--set", "fold=test", "--database-url", url]
    )
    assert test_fold.exit_code != 0
    assert "held-out" in str(test_fold.exception)
    unknown = runner.invoke(app, ["run", "--env", "alfworld", "--database-url", url])
    assert "unknown environment kind 'alfworld'" in str(unknown.exception)
    assert "twc" in str(unknown.exception)  # the known kinds are named
    bad_field = runner.invoke(
        app, ["run", "--env", "twc", "--set", "num_rooms=2", "--database-url", url]
    )
    assert "does not validate" in str(bad_field.exception)
    assert "num_rooms" in str(bad_field.exception)


def test_data_twc_homes_writes_the_homes_and_the_rooms_of_their_containers(
    tmp_path: Path,
) -> None:
    out = tmp_path / "homes.json"
    result = runner.invoke(app, ["data", "twc", "homes", "--out", str(out), "--seeds", "0:3"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    homes = [tuple(pair) for pair in data["homes"]]
    assert homes and data["source"].startswith("twc train fold, seeds 0:3")
    # Every home container has its rooms, read where the gold path put something in it.
    assert set(data["rooms"]) == {home for _, home in homes}
    assert all(rooms and rooms == sorted(rooms) for rooms in data["rooms"].values())


def test_run_profile_marks_the_phases_in_order() -> None:
    from rich.console import Console

    from trellis.agent._cli import RunProfile
    from trellis.agent.runtime import LLMCall, SkillFinished, TaskFinished, TaskStarted

    profile = RunProfile()
    profile.mark("agent built (configuration, skills)")
    events = [
        TaskStarted(task_id="t", goal="g"),
        LLMCall(
            task_id="t",
            node_id=None,
            stage="plan",
            adapter=None,
            prompt_tokens=3,
            completion_tokens=2,
            latency_s=1.5,
        ),
        LLMCall(
            task_id="t",
            node_id=1,
            stage="act",
            adapter=None,
            prompt_tokens=3,
            completion_tokens=2,
            latency_s=0.1,
        ),
        SkillFinished(task_id="t", node_id=1, skill="ship", ok=True),
        TaskFinished(
            task_id="t",
            outcome="success",
            success=True,
            steps=1,
            replans=0,
            adapters=[],
            prompt_tokens=6,
            completion_tokens=4,
            elapsed_s=0.2,
        ),
    ]
    for event in events:
        profile.on_event(event)
    assert [name for name, _ in profile.marks] == [
        "agent built (configuration, skills)",
        "task created (database, environment reset)",
        "first model answer (model load included)",
        "first skill call done",
        "task finished",
    ]
    assert profile.first_llm == 1.5  # the first call, not the last
    console = Console(record=True, width=120)
    console.print(profile.render())
    text = console.export_text()
    assert "of which the first model call" in text and "peak resident memory" in text


def test_the_console_script_keeps_exit_codes_output_and_exit_handlers(tmp_path: Path) -> None:
    """The command leaves without the interpreter's teardown: its exit code, everything it
    printed and the exit handlers (which stop child processes) are kept."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRELLIS_HOME": str(tmp_path)}
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('handler ran', file=sys.stderr))\n"
        "from trellis.agent.cli import main\n"
        "sys.argv = ['trellis', *sys.argv[1:]]\n"
        "main()\n"
    )

    def trellis(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    listed = trellis("envs", "list")
    assert listed.returncode == 0, listed.stderr
    assert "twc" in listed.stdout and "cookingworld" in listed.stdout
    assert "handler ran" in listed.stderr
    refused = trellis("run", "--env", "nosuch")
    assert refused.returncode == 2
    assert "unknown environment kind 'nosuch'" in refused.stderr and "handler ran" in refused.stderr
    assert trellis("run", "--no-such-flag").returncode == 2
