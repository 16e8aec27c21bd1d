"""`trellis run`, `resume`, `approve`, `reject`, `tasks` and `tree`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

if TYPE_CHECKING:
    from trellis.agent.runtime import Agent
    from trellis.memory import NodeRecord

console = Console()
errors = Console(stderr=True)

_STYLE = {
    "pending": "dim",
    "ready": "cyan",
    "running": "yellow",
    "done": "green",
    "failed": "red",
    "skipped": "dim",
    "cancelled": "dim",
}


def _node_label(node: NodeRecord) -> Text:
    label = Text()
    label.append(f"[{node.status.value}] ", style=_STYLE.get(node.status.value, ""))
    label.append(node.title or node.key)
    output = node.output if isinstance(node.output, dict) else {}
    result = output.get("result")
    if isinstance(result, dict) and "action" in result:
        label.append(f"  > {result['action']}", style="bold")
    if node.adapter:
        label.append(f"  ({node.adapter})", style="magenta")
    if node.error:
        label.append(f"  {node.error[:120]}", style="red")
    if node.superseded:
        label.stylize("strike")
    return label


def render_tree(agent: Agent, task_id: str, *, last: int | None = 12) -> Tree:
    """A rich tree of the task; with ``last``, only the newest children of each node."""
    view = agent.tree(task_id)
    by_parent: dict[int | None, list[NodeRecord]] = {}
    for node in view.nodes:
        by_parent.setdefault(node.parent_id, []).append(node)
    roots = by_parent.get(None, [])
    if not roots:
        return Tree(view.task.goal)
    tree = Tree(_node_label(roots[0]))

    def add(branch: Tree, parent_id: int) -> None:
        children = by_parent.get(parent_id, [])
        if last is not None and len(children) > last:
            branch.add(Text(f"... {len(children) - last} earlier steps", style="dim"))
            children = children[-last:]
        for child in children:
            add(branch.add(_node_label(child)), child.id)

    add(tree, roots[0].id)
    return tree


def _summary(result: Any) -> Table:
    table = Table(title="summary", show_header=False)
    table.add_row("task", result.task_id)
    style = "green" if result.success else "red"
    table.add_row("outcome", Text(f"{result.outcome} (success={result.success})", style=style))
    table.add_row("reason", result.reason)
    table.add_row("steps", str(result.steps))
    table.add_row("replans", str(result.replans))
    table.add_row("adapters used", ", ".join(result.adapters) or "none (no model call)")
    table.add_row("tokens", f"{result.prompt_tokens} prompt + {result.completion_tokens} generated")
    table.add_row("time", f"{result.elapsed_s:.1f} s in the loop")
    if result.pending_approval:
        table.add_row(
            "waiting for",
            f"approval of {result.pending_approval.get('skill')} "
            f"{result.pending_approval.get('args')}: trellis approve|reject {result.task_id}",
        )
    return table


class RunProfile:
    """Where a run's wall time goes (``trellis run --profile``): marks in the order they
    happen, then a table; the first model call includes loading the model."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: list[tuple[str, float]] = []
        self.first_llm: float | None = None

    def mark(self, name: str) -> None:
        if name not in dict(self.marks):
            self.marks.append((name, time.perf_counter()))

    def on_event(self, event: Any) -> None:
        from trellis.agent.runtime import LLMCall, SkillFinished, TaskFinished, TaskStarted

        if isinstance(event, TaskStarted):
            self.mark("task created (database, environment reset)")
        elif isinstance(event, LLMCall):
            if self.first_llm is None:
                self.first_llm = event.latency_s
            self.mark("first model answer (model load included)")
        elif isinstance(event, SkillFinished):
            self.mark("first skill call done")
        elif isinstance(event, TaskFinished):
            self.mark("task finished")

    def render(self) -> Table:
        import resource

        table = Table(title="where the time went")
        table.add_column("phase")
        table.add_column("seconds", justify="right")
        try:
            import psutil

            before = time.time() - psutil.Process().create_time() - (time.perf_counter() - self.t0)
            table.add_row("interpreter and imports (before the command ran)", f"{before:.2f}")
        except ImportError:  # psutil is optional: the phase is left out
            pass
        last = self.t0
        for name, at in self.marks:
            table.add_row(name, f"{at - last:.2f}")
            last = at
        if self.first_llm is not None:
            table.add_row("  of which the first model call", f"{self.first_llm:.2f}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        table.add_row("peak resident memory (MB)", f"{peak:.0f}")
        return table


async def _show(agent: Agent, events: AsyncIterator[Any], profile: RunProfile | None = None) -> Any:
    from trellis.agent.runtime import LLMCall, TaskFinished, TaskStarted

    task_id: str | None = None
    status = Text("starting")
    started = time.perf_counter()
    finished: TaskFinished | None = None
    with Live(status, console=console, refresh_per_second=4, transient=False) as live:
        async for event in events:
            if profile is not None:
                profile.on_event(event)
            if isinstance(event, TaskStarted):
                task_id = event.task_id
            if isinstance(event, TaskFinished):
                finished = event
                task_id = event.task_id
            line = Text(f"{time.perf_counter() - started:6.1f}s  {event.type}", style="dim")
            if isinstance(event, LLMCall):
                line.append(f"  {event.stage}: {event.completion_tokens} tokens")
            if task_id is not None:
                live.update(Group(render_tree(agent, task_id), line))
    if finished is None or task_id is None:
        raise typer.Exit(1)
    return finished


BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="embedded (the model in this process, default) or vllm (vLLM servers).",
    ),
]
ServerOption = Annotated[
    list[str],
    typer.Option("--server", help="A vLLM server URL (with --backend vllm); repeatable."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", help="Run settings file (TOML or JSON): backend, vllm, database_url, agent."
    ),
]


def _agent(
    database_url: str | None,
    max_steps: int | None,
    *,
    base_only: bool = False,
    backend: str | None = None,
    servers: list[str] | None = None,
    config_file: Path | None = None,
) -> Agent:
    from trellis.agent._run_config import RunSettings, build_agent

    flags: dict[str, Any] = {"backend": backend, "database_url": database_url}
    settings = RunSettings.load(config_file, **flags)
    if servers:
        vllm = settings.vllm.model_copy(update={"servers": list(servers)})
        settings = settings.model_copy(update={"vllm": vllm})
    if servers and settings.backend != "vllm":
        raise typer.BadParameter("--server needs --backend vllm (or backend = vllm in --config)")
    return build_agent(
        settings,
        max_steps=max_steps,
        shipped_adapters=False if base_only else None,
    )


def _finish(agent: Agent, finished: Any, *, strict: bool = False) -> None:
    from trellis.agent.runtime import RunResult

    result = RunResult(
        **finished.model_dump(exclude={"type", "at"}),
        pending_approval=agent.pending_approval(finished.task_id),
    )
    console.print(_summary(result))
    agent.close()
    # A run that reached an outcome is a working command; --strict makes failure an error.
    if strict and not result.success and result.outcome != "interrupted":
        raise typer.Exit(1)


def load_skills(module_name: str) -> list[Any]:
    """Every skill object defined in an importable module (a dotted name, never a path)."""
    from trellis.agent.runtime import skills_from_module
    from trellis.memory.errors import UsageError

    try:
        return list(skills_from_module(module_name))
    except UsageError as exc:
        raise typer.BadParameter(str(exc)) from exc


def run(
    goal: str | None = typer.Argument(
        None, help="What to achieve (default with --env: the game's own task)."
    ),
    reminder: list[str] = typer.Option(
        [], "--reminder", "-r", help="A rule or preference; repeat for several."
    ),
    env: str | None = typer.Option(
        None, help="Environment pack to act in (`trellis envs list` shows them)."
    ),
    seed: int | None = typer.Option(None, help="Episode seed (with --env)."),
    set_: list[str] = typer.Option(
        [], "--set", help="An environment spec field KEY=VALUE (with --env); repeatable."
    ),
    max_steps: int | None = typer.Option(
        None, help="Skill calls allowed (default: the world's own move limit with --env, else 30)."
    ),
    skills: list[str] = typer.Option(
        [], "--skills", help="Python module whose @skill functions the agent may run; repeatable."
    ),
    user: str = typer.Option("default", help="User id the task and its reminders belong to."),
    database_url: str | None = typer.Option(
        None, envvar="TRELLIS_DATABASE_URL", help="Database URL."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit with status 1 when the task does not succeed."
    ),
    base_only: bool = typer.Option(
        False, "--base-only", help="Serve every step with the base model (no shipped adapters)."
    ),
    backend: BackendOption = None,
    server: ServerOption = [],  # noqa: B006 - typer reads the default, it is never mutated
    config_file: ConfigOption = None,
    profile: bool = typer.Option(
        False, "--profile", help="Print where the wall time went (start-up, model, moves)."
    ),
) -> None:
    """Run a goal (or an environment's own task) with a live tree, then print a summary."""
    timing = RunProfile() if profile else None
    if env is None and not goal:
        errors.print("[red]give a GOAL[/red] (or --env KIND to act in an environment)")
        raise typer.Exit(2)
    if env is None and not skills:
        errors.print(
            "[red]no skills to run[/red]: pass --skills MODULE (a module with @skill functions) "
            "or --env KIND"
        )
        raise typer.Exit(2)
    agent = _agent(
        database_url,
        max_steps,
        base_only=base_only,
        backend=backend,
        servers=server,
        config_file=config_file,
    )
    environment = (
        agent.environments.spec_from_options(env, seed=seed, fields=set_)
        if env is not None
        else None
    )
    for module_name in skills:
        for item in load_skills(module_name):
            agent.register(item)
    # The modules are kept with the task: resume, approve and reject register them again.
    labels = {SKILL_MODULES: ",".join(skills)} if skills else None
    stream = agent.stream(goal, reminders=reminder, user_id=user, env=environment, labels=labels)
    if timing is not None:
        timing.mark("agent built (configuration, skills)")
    finished = asyncio.run(_show(agent, stream, timing))
    if timing is not None:
        console.print(timing.render())
    _finish(agent, finished, strict=strict)


SKILL_MODULES = "skill_modules"
"""The task label holding the ``--skills`` modules a task was started with."""


def _task_agent(task_id: str, database_url: str | None) -> Any:
    """An agent for an existing task, with the skill modules it was started with."""
    agent = _agent(database_url, None)
    labels = (agent.store.get_task(task_id).metadata or {}).get("labels") or {}
    for module_name in filter(None, str(labels.get(SKILL_MODULES, "")).split(",")):
        for item in load_skills(module_name):
            if item.name not in agent.skills:
                agent.register(item)
    return agent


def resume(
    task_id: str = typer.Argument(..., help="The task to continue."),
    database_url: str | None = typer.Option(
        None, envvar="TRELLIS_DATABASE_URL", help="Database URL."
    ),
) -> None:
    """Continue a task from its last checkpoint (after a crash or a stop)."""
    agent = _task_agent(task_id, database_url)
    finished = asyncio.run(_show(agent, agent.stream_resume(task_id)))
    _finish(agent, finished)


def _decide(task_id: str, database_url: str | None, approved: bool) -> None:
    from langgraph.types import Command

    from trellis.agent.errors import NoPendingApprovalError

    agent = _task_agent(task_id, database_url)
    if agent.pending_approval(task_id) is None:
        raise NoPendingApprovalError(task_id)
    command: Command[Any] = Command(resume={"approved": approved})
    finished = asyncio.run(_show(agent, agent.stream_resume(task_id, command=command)))
    _finish(agent, finished)


def approve(
    task_id: str = typer.Argument(..., help="The task waiting for approval."),
    database_url: str | None = typer.Option(
        None, envvar="TRELLIS_DATABASE_URL", help="Database URL."
    ),
) -> None:
    """Approve the call a task waits for, and continue it."""
    _decide(task_id, database_url, True)


def reject(
    task_id: str = typer.Argument(..., help="The task waiting for approval."),
    database_url: str | None = typer.Option(
        None, envvar="TRELLIS_DATABASE_URL", help="Database URL."
    ),
) -> None:
    """Reject the call a task waits for (the step fails), and continue it."""
    _decide(task_id, database_url, False)


def tasks(
    limit: int = typer.Option(20, help="How many, newest first."),
    user: str | None = typer.Option(None, help="Only this user's tasks."),
    database_url: str | None = typer.Option(
        None, envvar="TRELLIS_DATABASE_URL", help="Database URL."
    ),
) -> None:
    """List recent tasks."""
    from trellis.memory import TaskStore

    store = TaskStore.open(database_url)
    table = Table()
    table.add_column("task", no_wrap=True, min_width=32)
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("created", no_wrap=True)
    table.add_column("user", no_wrap=True)
    table.add_column("goal", overflow="ellipsis", no_wrap=True)
    for task in store.list_tasks(user_id=user, limit=limit):
        table.add_row(
            task.id,
            Text(task.status.value, style=_STYLE.get(task.status.value, "")),
            task.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            task.user_id,
            task.goal[:80],
        )
    console.print(table)
    store.close()


def tree(
    task_id: str = typer.Argument(..., help="The task to show."),
    all_steps: bool = typer.Option(False, "--all", help="Show every step, not only the newest."),
    database_url: str | None = typer.Option(
        None, envvar="TRELLIS_DATABASE_URL", help="Database URL."
    ),
) -> None:
    """Show a task's tree with statuses, actions, adapters and errors."""
    agent = _agent(database_url, None)
    console.print(render_tree(agent, task_id, last=None if all_steps else 30))
    pending = agent.pending_approval(task_id)
    if pending:
        console.print(
            f"[yellow]waiting for approval[/yellow] of {pending.get('skill')} {pending.get('args')}"
        )
    agent.close()


envs_app = typer.Typer(help="Environment packs: the worlds tasks can act in.", no_args_is_help=True)


@envs_app.command("list")
def envs_list() -> None:
    """The installed environment packs: kind, action skill, shipped adapters, status."""
    from trellis.agent.env import EnvironmentRegistry
    from trellis.memory.errors import TrellisError

    registry = EnvironmentRegistry()
    table = Table()
    for column in ("kind", "description", "action skill", "adapters", "status"):
        table.add_column(column)
    for kind in registry.kinds():
        try:
            pack = registry.get(kind)
        except TrellisError as exc:
            table.add_row(kind, "", "", "", Text(f"broken: {exc}", style="red"))
            continue
        adapters = (
            ", ".join(sorted(p.name for p in pack.adapters_dir.iterdir() if p.is_dir()))
            if pack.adapters_dir is not None and pack.adapters_dir.is_dir()
            else ""
        )
        table.add_row(kind, pack.description, pack.skill_name, adapters, Text("ok", "green"))
    if not registry.kinds():
        console.print("no environment packs are installed (entry-point group trellis.environments)")
        return
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(envs_app, name="envs")
    app.command("run")(run)
    app.command("resume")(resume)
    app.command("approve")(approve)
    app.command("reject")(reject)
    app.command("tasks")(tasks)
    app.command("tree")(tree)
