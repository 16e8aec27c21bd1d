"""``trellis data cookingworld ...``: act rows for a cookingworld adapter (train fold only)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from trellis.agent import seed_range, write_jsonl

__all__ = ["app"]

console = Console(stderr=True)
app = typer.Typer(help="Training data for the cookingworld pack (train fold only).")


@app.command("rows")
def rows(
    out: Path = typer.Option(..., help="JSONL file to write."),
    seeds: str = typer.Option("0:300", help="Train-fold seeds START:STOP."),
    max_locations: int = typer.Option(3, help="Rooms cycle through 1..N."),
    max_ingredients: int = typer.Option(3, help="Ingredients cycle through 1..N."),
    detour: float = typer.Option(0.2, help="Chance of a harmless wrong move before a gold move."),
) -> None:
    """Act-step rows along cookingworld gold paths, with the runtime's exact prompts."""
    from trellis_cookingworld._datasets import cooking_act_examples, cooking_configs

    configs = cooking_configs(
        seed_range(seeds), max_locations=max_locations, max_ingredients=max_ingredients
    )
    count = write_jsonl(cooking_act_examples(configs, detour=detour), out)
    console.print(f"[green]wrote[/green] {count} rows from {len(configs)} games to {out}")
