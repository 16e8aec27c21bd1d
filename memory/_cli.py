"""`trellis db upgrade|current` and `trellis demo` (a small Task Memory Tree, run and drawn)."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True)

db_app = typer.Typer(help="Create, migrate and inspect the Trellis database.", no_args_is_help=True)

URL_HELP = "SQLAlchemy URL (default: $TRELLIS_DATABASE_URL, else trellis.db in TRELLIS_HOME)."


@db_app.command("upgrade")
def upgrade_command(url: str | None = typer.Option(None, help=URL_HELP)) -> None:
    """Apply every pending migration of every package (idempotent)."""
    from trellis.memory._db import DatabaseConfig, current_revisions, make_engine, upgrade

    engine = make_engine(DatabaseConfig() if url is None else DatabaseConfig(url=url))
    try:
        upgrade(engine)
        revisions = ", ".join(sorted(current_revisions(engine)))
    finally:
        engine.dispose()
    err.print(f"[green]database is current[/green] ({revisions})")


@db_app.command("current")
def current_command(url: str | None = typer.Option(None, help=URL_HELP)) -> None:
    """Print the database's schema revisions and whether it matches this code."""
    from trellis.memory._db import (
        DatabaseConfig,
        check_schema,
        current_revisions,
        make_engine,
        migration_heads,
    )
    from trellis.memory.errors import SchemaMismatchError

    engine = make_engine(DatabaseConfig() if url is None else DatabaseConfig(url=url))
    try:
        revisions = sorted(current_revisions(engine))
        console.print(f"url:      {engine.url.render_as_string(hide_password=True)}")
        console.print(f"database: {', '.join(revisions) or '(empty)'}")
        console.print(f"code:     {', '.join(sorted(migration_heads()))}")
        try:
            check_schema(engine)
        except SchemaMismatchError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
        console.print("status:   current")
    finally:
        engine.dispose()


def demo(
    url: str | None = typer.Option(None, help=URL_HELP),
    mermaid: bool = typer.Option(True, help="Print the tree as a Mermaid flowchart."),
) -> None:
    """Build a small task tree, run it step by step, and render it."""
    from trellis.memory._records import NodeSpec, NodeStatus
    from trellis.memory._store import TaskStore

    with TaskStore.open(url) as store:
        task = store.create_task("make a cup of tea", user_id="demo")
        root = store.root(task.id)
        store.transition(root.id, NodeStatus.RUNNING, cause="demo: plan the goal")
        store.add_children(
            task.id,
            root.id,
            [
                NodeSpec(key="boil", title="boil water", input={"litres": 0.3}),
                NodeSpec(key="cup", title="fetch a cup"),
                NodeSpec(
                    key="brew",
                    title="brew the tea",
                    depends_on=["boil", "cup"],
                    children=[
                        NodeSpec(key="bag", title="put a tea bag in the cup"),
                        NodeSpec(key="pour", title="pour the water", depends_on=["bag"]),
                    ],
                ),
                NodeSpec(key="serve", title="serve", depends_on=["brew"]),
            ],
            cause="demo: plan v1",
        )
        steps = 0
        while ready := store.ready_nodes(task.id):
            node = ready[0]
            store.transition(node.id, NodeStatus.RUNNING, cause="demo: act")
            if store.children(node.id):
                continue  # a parent runs while its children do the work
            store.transition(node.id, NodeStatus.DONE, output={"ok": True}, cause="demo: observe")
            steps += 1
            # Close parents whose children are all finished.
            parent_id = node.parent_id
            while parent_id is not None:
                kids = store.children(parent_id)
                if not all(k.is_terminal for k in kids):
                    break
                store.transition(parent_id, NodeStatus.DONE, cause="demo: children finished")
                parent_id = store.get_node(parent_id).parent_id
            console.print(f"step {steps}: {node.title} -> done")
        last = store.nodes(task.id)[-1]
        console.print("\n[bold]Context for the last step[/bold]")
        console.print(store.build_context(last.id, budget_chars=400), markup=False)
        if mermaid:
            console.print("\n[bold]Tree[/bold]")
            console.print(store.to_mermaid(task.id), markup=False)
        console.print(
            f"task {task.id}: {len(store.nodes(task.id))} nodes, "
            f"{len(store.events(task.id))} events, root {store.root(task.id).status.value}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
    app.command("demo")(demo)
