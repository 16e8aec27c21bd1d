"""`trellis data ...`: build adapter training data with the runtime's own prompts."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)
data_app = typer.Typer(
    help="Build training data with the runtime's own prompts.", no_args_is_help=True
)


@data_app.command("reminders")
def reminders(
    out: Path = typer.Option(..., help="JSONL file to write."),
    count: int = typer.Option(1000, help="Rows."),
    seed: int = typer.Option(0, help="Generator seed."),
    held_out: bool = typer.Option(
        False, "--held-out", help="Objects and places that training rows never use (evaluation)."
    ),
) -> None:
    """Reminder-to-cue rows from templated reminders of the three kinds."""
    from trellis.agent._datasets import reminder_cue_examples, write_jsonl

    vocabulary = "held-out" if held_out else "train"
    written = write_jsonl(reminder_cue_examples(count, seed=seed, vocabulary=vocabulary), out)
    console.print(f"[green]wrote[/green] {written} rows to {out}")


def register(app: typer.Typer) -> None:
    """Mount ``trellis data`` with each installed pack's data commands under its kind."""
    from trellis.agent.env import EnvironmentRegistry
    from trellis.agent.errors import EnvironmentPackError

    registry = EnvironmentRegistry()
    for kind in registry.kinds():
        try:
            pack = registry.get(kind)
        except EnvironmentPackError as exc:
            # A broken pack must not take the whole CLI down; using it names the problem.
            console.print(f"[yellow]skipping the data commands of {kind}[/yellow]: {exc}")
            continue
        if pack.cli is not None:
            data_app.add_typer(pack.cli(), name=kind, help=pack.description or None)
    app.add_typer(data_app, name="data")
