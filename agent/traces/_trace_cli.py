"""``trellis replay``, ``trellis eval`` and ``trellis compare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from trellis.agent.errors import TraceFormatError
from trellis.memory.errors import TrellisError

__all__ = ["register"]

console = Console()
errors = Console(stderr=True)


def _load(trace: str, database_url: str | None) -> Any:
    from trellis.agent.traces._trace import read_trace

    if trace.startswith("db:"):
        from trellis.agent.traces._trace_store import TraceStore
        from trellis.memory import make_engine, upgrade

        engine = make_engine(database_url)
        upgrade(engine)
        return TraceStore(engine).load(trace[3:])
    return read_trace(trace)


def replay(
    trace: str = typer.Argument(..., help="Trace file (.jsonl), or db:ID for a stored trace."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    check: bool = typer.Option(
        False,
        "--check",
        help="Fast check instead: re-derive plans, calls and statuses from the recorded "
        "answers without running the loop (prompts are not rebuilt).",
    ),
    database_url: str | None = typer.Option(
        None, envvar="TRELLIS_DATABASE_URL", help="Database holding db:ID traces."
    ),
) -> None:
    """Re-run a recorded task with its recorded answers; report the first divergence."""
    from trellis.agent.traces._replay import replay_sync
    from trellis.agent.traces._replay_check import check_trace

    try:
        recorded = _load(trace, database_url)
    except TrellisError as exc:
        errors.print(f"[red]cannot replay:[/red] {exc}")
        raise typer.Exit(2) from None
    result = check_trace(recorded) if check else replay_sync(recorded)
    if as_json:
        console.print_json(json.dumps(result.model_dump(mode="json")))
    elif result.ok:
        console.print(
            f"[green]{'check passes' if check else 'replay matches'}[/green]: {result.events} events in {result.duration_s:.3f} s "
            f"({result.events_per_s:,.0f} events/s)"
        )
    else:
        if result.divergence is not None:
            console.print(result.divergence.describe(), style="red", markup=False)
        if result.error:
            console.print(f"replay error: {result.error}", markup=False)
    if not result.ok:
        raise typer.Exit(1)


class _BaseOnlyRouter:
    """Routes every step to the base model (``--adapters none``)."""

    async def route(self, context: Any) -> Any:
        from trellis.adapters import RouteDecision

        return RouteDecision(
            adapter=None, score=0.0, policy="empty", reason="adapters disabled (--adapters none)"
        )


def _backend(kind: str, vllm_url: str | None) -> Any:
    if kind == "embedded":
        from trellis.agent.runtime import default_backend

        return default_backend()
    if kind == "vllm":
        from trellis.adapters import VLLMBackend, VLLMConfig

        servers = [vllm_url] if vllm_url else VLLMConfig().servers
        return VLLMBackend(VLLMConfig(servers=servers))
    raise typer.BadParameter(f"unknown backend {kind!r}; use embedded or vllm")


def _router(adapters: str | None, engine: Any, backend: Any) -> Any:
    if adapters is None:
        from trellis.agent.runtime import default_router

        return default_router(engine, backend) or _BaseOnlyRouter()
    if adapters.strip().lower() == "none":
        return _BaseOnlyRouter()
    from trellis.adapters import AdapterRegistry, Router

    wanted = [a.strip() for a in adapters.split(",") if a.strip()]
    records = {r.name: r for r in AdapterRegistry(engine).list()}
    missing = [a for a in wanted if a not in records]
    if missing:
        raise typer.BadParameter(
            f"unknown adapter(s) {', '.join(missing)}; registered: {', '.join(sorted(records)) or 'none'}"
        )
    return Router([records[a] for a in wanted], engine=engine, backend=backend)


def eval_command(
    traces: list[Path] = typer.Argument(..., help="Trace files or folders of *.jsonl traces."),
    backend: str = typer.Option("embedded", help="Backend under test: embedded or vllm."),
    adapters: str | None = typer.Option(
        None,
        help="Comma-separated adapters the router may use, or 'none' (default: all registered).",
    ),
    vllm_url: str | None = typer.Option(None, help="vLLM server URL (with --backend vllm)."),
    out: Path = typer.Option(Path("eval-out"), help="Folder for run.json, traces and the report."),
    name: str | None = typer.Option(None, help="Run name (default: backend and adapters)."),
    database_url: str | None = typer.Option(
        None, envvar="TRELLIS_DATABASE_URL", help="Database (adapter registry, task trees)."
    ),
) -> None:
    """Re-run recorded tasks live against another backend or adapter set; write a report."""
    from trellis.agent.runtime import Agent, AgentConfig, default_planner
    from trellis.agent.traces._eval import evaluate_sync
    from trellis.agent.traces._report import write_report
    from trellis.agent.traces._trace import iter_trace_files, read_trace
    from trellis.memory import TaskStore

    try:
        loaded = [read_trace(p) for p in iter_trace_files(traces)]
    except TrellisError as exc:
        errors.print(f"[red]cannot evaluate:[/red] {exc}")
        raise typer.Exit(2) from None
    if not loaded:
        errors.print("[red]no traces found[/red] in the given paths")
        raise typer.Exit(2)
    model = _backend(backend, vllm_url)
    store = TaskStore.open(database_url)
    router = _router(adapters, store.engine, model)
    run_name = name or f"{backend}:{adapters or 'registered'}"

    def factory(recorder: Any, trace: Any) -> Any:
        config = AgentConfig.model_validate({**trace.start.config, "database_url": database_url})
        wrapped = recorder.backend(model)
        return Agent(
            config=config,
            backend=wrapped,
            planner=recorder.planner(default_planner(wrapped)),
            router=router,
            store=TaskStore.open(database_url),
        )

    run = evaluate_sync(
        loaded,
        factory,
        name=run_name,
        config={"backend": backend, "adapters": adapters or "registered"},
        out_dir=out / "traces",
    )
    run.save(out / "run.json")
    paths = write_report(run, out)
    _print_summary(run)
    console.print(f"results: {out / 'run.json'}; report: {paths['html']}")


def _print_summary(run: Any) -> None:
    s = run.summary()
    table = Table(title=f"eval {run.name}")
    for column in ("tasks", "ran", "skipped", "success", "steps", "replans", "routing", "tokens"):
        table.add_column(column)
    agreement = "n/a" if s.routing_agreement is None else f"{s.routing_agreement:.0%}"
    table.add_row(
        str(s.tasks), str(s.ran), str(s.skipped), f"{s.success_rate:.0%}",
        f"{s.mean_steps:.1f}", f"{s.mean_replans:.1f}", agreement,
        str(s.prompt_tokens + s.completion_tokens),
    )  # fmt: skip
    console.print(table)
    for task in run.tasks:
        if task.status == "skipped":
            console.print(f"skipped {task.task}: {task.reason}", markup=False)


def compare(
    run_a: Path = typer.Argument(..., help="Run A (before): eval run.json or a trace folder."),
    run_b: Path = typer.Argument(..., help="Run B (after): eval run.json or a trace folder."),
    out: Path | None = typer.Option(None, help="Write a Markdown/HTML report of B here."),
) -> None:
    """Positive and negative flips between two runs (MUSCLE definition)."""
    from trellis.agent.traces._eval import compare_runs, load_run
    from trellis.agent.traces._report import write_report

    try:
        a = load_run(run_a)
        b = load_run(run_b)
    except (TrellisError, TraceFormatError) as exc:
        errors.print(f"[red]cannot compare:[/red] {exc}")
        raise typer.Exit(2) from None
    result = compare_runs(a, b)
    console.print(
        f"{result.common} common tasks; successes {result.success_a} -> {result.success_b}; "
        f"positive flips {len(result.positive_flips)}, negative flips "
        f"{len(result.negative_flips)} (NFR {result.negative_flip_rate:.1%})",
        markup=False,
    )
    for task in result.negative_flips:
        console.print(f"  negative flip: {task}", markup=False)
    for task in result.positive_flips:
        console.print(f"  positive flip: {task}", markup=False)
    if out is not None:
        paths = write_report(b, out, comparison=result)
        console.print(f"report: {paths['html']}")


def record(
    goal: str | None = typer.Argument(
        None, help="What to achieve (default with --env: the game's own task)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Trace file to write (.jsonl)."),
    reminder: list[str] = typer.Option([], "--reminder", "-r", help="A rule; repeat for several."),
    env: str | None = typer.Option(
        None, help="Environment pack to act in (`trellis envs list` shows them)."
    ),
    seed: int | None = typer.Option(None, help="Episode seed (with --env)."),
    set_: list[str] = typer.Option(
        [], "--set", help="An environment spec field KEY=VALUE (with --env); repeatable."
    ),
    max_steps: int | None = typer.Option(None, help="Skill calls allowed."),
    family: str | None = typer.Option(None, help="Task family label for reports."),
    save: bool = typer.Option(False, help="Also store the trace in the database."),
    database_url: str | None = typer.Option(
        None, envvar="TRELLIS_DATABASE_URL", help="Database URL."
    ),
) -> None:
    """Run a goal (or a game) with the embedded defaults and record it as a trace."""
    from trellis.agent.runtime import Agent, AgentConfig
    from trellis.agent.traces._trace_record import record_run
    from trellis.agent.traces._trace_store import TraceStore
    from trellis.memory import run_sync

    options: dict[str, Any] = {"database_url": database_url}
    if max_steps is not None:
        options["max_steps"] = max_steps
    agent = Agent(config=AgentConfig(**options))
    environment = None
    if env is not None:
        environment = agent.environments.spec_from_options(env, seed=seed, fields=set_)
    elif not goal:
        errors.print("give a GOAL (or --env KIND to act in an environment)", markup=False)
        raise typer.Exit(2)
    try:
        # The same path as ``Agent.run(..., trace=out)``, with the family label added.
        result = run_sync(
            record_run(
                agent,
                out,
                goal,
                reminders=reminder,
                env=environment,
                metadata={"family": family} if family else {},
            )
        )
        if save:
            trace_id = TraceStore(agent.store.engine).save(out.read_text().splitlines())
            console.print(f"stored as db:{trace_id}")
    finally:
        agent.close()
    console.print(
        f"{result.outcome}: {result.steps} steps, {result.replans} replans; trace: {out}",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    """Add the trace commands to the ``trellis`` app."""
    app.command("record")(record)
    app.command("replay")(replay)
    app.command("eval")(eval_command)
    app.command("compare")(compare)
