"""`trellis cues add|list|history`: a user's reminders as structured cues, from the shell."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from trellis.planners._cues import CueStore

console = Console()
err = Console(stderr=True)

cues_app = typer.Typer(
    help="Turn reminders into cues and list a user's cues.", no_args_is_help=True
)

URL_HELP = "SQLAlchemy URL (default: $TRELLIS_DATABASE_URL, else trellis.db in TRELLIS_HOME)."


def _store(url: str | None) -> CueStore:
    from trellis.memory import DatabaseConfig, make_engine, upgrade
    from trellis.planners._cues import CueStore

    engine = make_engine(DatabaseConfig() if url is None else DatabaseConfig(url=url))
    upgrade(engine)
    return CueStore(engine)


@cues_app.command("add")
def add_command(
    user: str = typer.Argument(..., help="User the reminder belongs to."),
    reminder: str = typer.Argument(..., help='The reminder, e.g. "never use the blue plates".'),
    task: str | None = typer.Option(None, help="Limit the cue to this task id."),
    model: bool = typer.Option(
        False, help="Ask the embedded model for forms the rules do not know (slower)."
    ),
    url: str | None = typer.Option(None, help=URL_HELP),
) -> None:
    """Extract cues from a reminder and record them (later conflicting cues win)."""
    from trellis.adapters import ReminderAdapter, ReminderConfig
    from trellis.memory import TrellisError

    store = _store(url)
    backend = None
    if model:
        from trellis.adapters import EmbeddedBackend

        backend = EmbeddedBackend()
    adapter = ReminderAdapter(backend, config=ReminderConfig(mode="hybrid" if model else "rules"))
    try:
        result = store.add_reminder_sync(user, reminder, adapter, task_id=task)
    except TrellisError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    for cue in result.cues:
        line = f"#{cue.id} [{cue.polarity}] {cue.subject} ({cue.kind}, via {result.method})"
        console.print(line, markup=False)
    for problem in result.errors:
        err.print(f"[yellow]note:[/yellow] {problem}")


@cues_app.command("list")
def list_command(
    user: str = typer.Argument(..., help="User whose cues to show."),
    task: str | None = typer.Option(None, help="Include the cues of this task."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    url: str | None = typer.Option(None, help=URL_HELP),
) -> None:
    """The cues in force for a user (and task), highest priority first."""
    store = _store(url)
    cues = store.active_cues(user, task_id=task)
    if as_json:
        console.print_json(json.dumps([c.model_dump(mode="json") for c in cues]))
        return
    table = Table("id", "polarity", "kind", "subject", "scope", "rule")
    for cue in cues:
        table.add_row(str(cue.id), cue.polarity, cue.kind, cue.subject, cue.scope, cue.constraint)
    console.print(table)


@cues_app.command("history")
def history_command(
    user: str = typer.Argument(..., help="User whose cue history to show."),
    url: str | None = typer.Option(None, help=URL_HELP),
) -> None:
    """Every cue ever recorded for a user, with what superseded it."""
    store = _store(url)
    table = Table("id", "polarity", "subject", "rule", "superseded by")
    for entry in store.history(user):
        cue = entry["cue"]
        by = entry["superseded_by"]
        table.add_row(str(cue.id), cue.polarity, cue.subject, cue.constraint, str(by or ""))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(cues_app, name="cues")
