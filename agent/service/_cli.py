"""``trellis serve`` (HTTP API + workers) and ``trellis worker`` (workers only)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from trellis.agent.service._errors import ServiceConfigError
from trellis.agent.service._settings import ServiceSettings

__all__ = ["register", "run_worker"]

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Settings file (JSON or TOML); TRELLIS_* variables override it."),
]
DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL (postgresql://... for several processes).")
]
SkillsOption = Annotated[
    list[str],
    typer.Option(
        "--skills",
        help="Python module whose @skill functions a profile of that name runs (with the LLM "
        "planner); repeatable. The first becomes the default profile.",
    ),
]
WorkersOption = Annotated[
    int | None, typer.Option("--workers", "-w", help="Concurrent task loops in this process.")
]


def _settings(
    config: Path | None, skills: list[str] | None = None, **overrides: Any
) -> ServiceSettings:
    from trellis.agent.service._profiles import register_profile, skills_profile
    from trellis.memory.errors import UsageError

    try:
        for module_name in skills or []:
            register_profile(skills_profile(module_name), replace=True)
        settings = ServiceSettings.load(config, **overrides)
        if skills:
            allowed = [*skills, *(p for p in settings.profiles if p not in skills)]
            settings = settings.model_copy(
                update={"profiles": allowed, "default_profile": skills[0]}
            )
        settings.user_tokens()
    except (ServiceConfigError, UsageError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return settings


def serve(
    workers: WorkersOption = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
    db: DbOption = None,
    config: ConfigOption = None,
    skills: SkillsOption = [],  # noqa: B006 - typer reads the default, it is never mutated
) -> None:
    """Run the HTTP API and N task loops (several processes may share one PostgreSQL)."""
    import uvicorn

    from trellis.agent.service._http import create_app
    from trellis.agent.service._runtime import configure_logging

    settings = _settings(config, skills, workers=workers, host=host, port=port, database_url=db)
    configure_logging(settings.log_level)
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
    )


def worker(
    workers: WorkersOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
    skills: SkillsOption = [],  # noqa: B006 - typer reads the default, it is never mutated
) -> None:
    """Run N task loops without the HTTP API (scale out on more processes or machines)."""
    from trellis.agent.service._runtime import configure_logging

    settings = _settings(
        config, skills, workers=workers, database_url=db, metrics_port=metrics_port
    )
    configure_logging(settings.log_level)
    asyncio.run(run_worker(settings))


async def run_worker(settings: ServiceSettings) -> list[str]:
    """Run a worker pool until SIGTERM or SIGINT; returns the tasks handed back unfinished."""
    from trellis.agent.service._metrics import ServiceMetrics
    from trellis.agent.service._queue import TaskQueue
    from trellis.agent.service._runtime import open_database
    from trellis.agent.service._worker import WorkerPool

    engine = await asyncio.to_thread(open_database, settings)
    queue = TaskQueue(engine, lease_s=settings.lease_s)
    metrics = ServiceMetrics(queue.counts)
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
    pool = WorkerPool(settings, engine, metrics=metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, pool.stop)
    try:
        return await pool.run()
    finally:
        await pool.close()
        engine.dispose()


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``worker`` to the ``trellis`` command line."""
    app.command("serve")(serve)
    app.command("worker")(worker)


def main() -> None:
    """``python -m trellis.agent.service._cli serve|worker`` (the same commands as ``trellis``)."""
    cli = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
    register(cli)
    cli()


if __name__ == "__main__":
    main()
