"""`trellis adapters fit-router | eval-router | coverage | route` commands."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["register_router_commands"]

console = Console()
err = Console(stderr=True, soft_wrap=True)

_DATABASE_HELP = (
    "Database URL (default: $TRELLIS_DATABASE_URL, else the SQLite file in TRELLIS_HOME)."
)
_ADAPTERS_HELP = (
    "JSON file of adapter profiles (name, description, examples, tags) to route among "
    "instead of the registry."
)
_EMBEDDER_HELP = (
    "'minilm' (all-MiniLM-L6-v2, the default) or 'hashing' (no model; word overlap only)."
)


def _router(
    database_url: str | None, adapters_file: Path | None, embedder_name: str, *, log: bool = True
) -> Any:
    from trellis.adapters._embeddings import HashingEmbedder, SentenceEmbedder
    from trellis.adapters._router import Router, RouterConfig
    from trellis.adapters._router_eval import load_profiles_file
    from trellis.memory import make_engine, upgrade
    from trellis.memory.errors import UsageError

    if embedder_name not in ("minilm", "hashing"):
        raise UsageError(f"unknown embedder {embedder_name!r}: use 'minilm' or 'hashing'")
    embedder = SentenceEmbedder() if embedder_name == "minilm" else HashingEmbedder()
    engine = make_engine(database_url)
    upgrade(engine)
    config = RouterConfig(log_uncovered=log)
    if adapters_file is not None:
        profiles = load_profiles_file(adapters_file)
        return Router(profiles, embedder=embedder, engine=engine, config=config)
    from trellis.adapters._registry import AdapterRegistry

    registry = AdapterRegistry(engine, migrate=False)
    return Router(registry=registry, embedder=embedder, engine=engine, config=config)


def _fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2)


def register_router_commands(adapters_app: typer.Typer) -> None:
    """Add the router commands to the `trellis adapters` group."""
    from trellis.memory.errors import TrellisError

    @adapters_app.command("fit-router")
    def fit_router(
        database_url: str | None = typer.Option(None, "--database-url", help=_DATABASE_HELP),
        adapters_file: Path | None = typer.Option(None, "--adapters", help=_ADAPTERS_HELP),
        embedder: str = typer.Option("minilm", help=_EMBEDDER_HELP),
    ) -> None:
        """Fit every adapter's out-of-distribution threshold from its examples and store them."""
        try:
            router = _router(database_url, adapters_file, embedder)
            thresholds = router.fit()
        except TrellisError as exc:
            _fail(exc)
            return
        if not thresholds:
            console.print(
                "no adapters are registered: nothing to fit (the base model serves every step)"
            )
            return
        table = Table(
            "adapter", "examples", "threshold", title=f"router thresholds ({router.embedder.name})"
        )
        for name, value in sorted(thresholds.items()):
            table.add_row(name, str(len(router.profile(name).examples)), f"{value:.3f}")
        console.print(table)

    @adapters_app.command("eval-router")
    def eval_router(
        file: Path = typer.Argument(
            ..., help='JSONL rows {"text": ..., "expected": adapter or null}.'
        ),
        database_url: str | None = typer.Option(None, "--database-url", help=_DATABASE_HELP),
        adapters_file: Path | None = typer.Option(None, "--adapters", help=_ADAPTERS_HELP),
        embedder: str = typer.Option("minilm", help=_EMBEDDER_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the full result as JSON."),
    ) -> None:
        """Route labelled rows: accuracy, confusion matrix, OOD precision and recall."""
        from trellis.adapters._router_eval import evaluate_router, load_eval_rows

        try:
            rows = load_eval_rows(file)
            result = evaluate_router(_router(database_url, adapters_file, embedder), rows)
        except TrellisError as exc:
            _fail(exc)
            return
        if as_json:
            print(json.dumps(result.model_dump(), indent=1))
            return
        console.print(
            f"rows {result.rows}  accuracy {result.accuracy:.3f}  "
            f"in-distribution accuracy {result.in_distribution_accuracy:.3f}  "
            f"OOD precision {result.ood_precision:.3f}  OOD recall {result.ood_recall:.3f}"
        )
        table = Table("expected \\ routed", *result.labels, title="confusion matrix")
        for label in result.labels:
            table.add_row(label, *(str(result.confusion[label][other]) for other in result.labels))
        console.print(table)

    @adapters_app.command("coverage")
    def coverage(
        database_url: str | None = typer.Option(None, "--database-url", help=_DATABASE_HELP),
        limit: int = typer.Option(50, min=1, max=10_000, help="How many recent requests to list."),
    ) -> None:
        """Recent requests that no adapter covered: where a new adapter would pay off."""
        from trellis.adapters._router_store import RouterStore
        from trellis.memory import make_engine, upgrade

        try:
            engine = make_engine(database_url)
            upgrade(engine)
            requests = RouterStore(engine).uncovered(limit=limit)
        except TrellisError as exc:
            _fail(exc)
            return
        if not requests:
            console.print("no uncovered requests recorded: every routed step found an adapter")
            return
        nearest = Counter(r.nearest or "-" for r in requests)
        console.print(
            f"{len(requests)} recent uncovered requests; nearest adapters: "
            + ", ".join(f"{name} ({count})" for name, count in nearest.most_common())
        )
        table = Table("when (UTC)", "nearest", "score", "threshold", "task", "text")
        for r in requests:
            table.add_row(
                r.created.strftime("%Y-%m-%d %H:%M:%S"),
                r.nearest or "-",
                f"{r.score:.3f}",
                "-" if r.threshold is None else f"{r.threshold:.3f}",
                r.task_id or "-",
                r.text[:80],
            )
        console.print(table)

    @adapters_app.command("route")
    def route(
        text: str = typer.Argument(..., help="The step text to route."),
        node_kind: str | None = typer.Option(None, help="Node kind (for rules)."),
        skill: str | None = typer.Option(None, help="Skill (for rules)."),
        database_url: str | None = typer.Option(None, "--database-url", help=_DATABASE_HELP),
        adapters_file: Path | None = typer.Option(None, "--adapters", help=_ADAPTERS_HELP),
        embedder: str = typer.Option("minilm", help=_EMBEDDER_HELP),
    ) -> None:
        """Show which adapter would serve a step, and why (JSON)."""
        from trellis.adapters._router import StepContext

        try:
            # A look-up by hand is not a request: keep it out of the coverage log.
            router = _router(database_url, adapters_file, embedder, log=False)
            decision = router.route_sync(StepContext(text=text, node_kind=node_kind, skill=skill))
        except TrellisError as exc:
            _fail(exc)
            return
        print(json.dumps(decision.model_dump(), indent=1))
