"""``trellis data twc ...``: training rows and the place ranker's examples for twc."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from trellis.agent import seed_range, write_jsonl

__all__ = ["app"]

console = Console(stderr=True)
app = typer.Typer(help="Training data for the twc pack (train fold only).", no_args_is_help=True)

# Shared by the twc commands: games spread over 1..N rooms and 1..N objects.
_MAX_LOCATIONS = typer.Option(3, help="Rooms cycle through 1..N.")
_MAX_ITEMS = typer.Option(3, help="Objects cycle through 1..N.")
_DOORS = typer.Option(
    "none", help="Doors between rooms: none, all, or mixed (every other game of a size)."
)


def _doors(text: str) -> bool | None:
    choices: dict[str, bool | None] = {"none": False, "all": True, "mixed": None}
    if text not in choices:
        raise typer.BadParameter(f"--doors takes none, all or mixed, got {text!r}")
    return choices[text]


@app.command("rows")
def rows(
    out: Path = typer.Option(..., help="JSONL file to write."),
    seeds: str = typer.Option("0:200", help="Train-fold seeds START:STOP."),
    max_locations: int = _MAX_LOCATIONS,
    max_items: int = _MAX_ITEMS,
    doors: str = _DOORS,
    recovery: float = typer.Option(
        0.3, help="Chance of a wrong put (and the rows that take it back) before a gold put."
    ),
    expert_noise: float | None = typer.Option(
        None,
        help="Instead of gold paths: noisy play (a random offered action with this chance), "
        "each state labelled with the move of an expert that knows the game.",
    ),
    all_actions: float = typer.Option(
        0.0,
        help="With --expert-noise: the share of games whose rows offer every valid action "
        "(the runtime with the pack's offer rules off).",
    ),
    max_moves: int = typer.Option(24, help="With --expert-noise: moves per game at most."),
) -> None:
    """Act-step rows from twc gold paths (train fold only), with recovery detours."""
    from trellis_twc._datasets import (
        twc_act_examples,
        twc_configs,
        twc_expert_examples,
    )

    configs = twc_configs(
        seed_range(seeds), max_locations=max_locations, max_items=max_items, doors=_doors(doors)
    )
    rows = (
        twc_act_examples(configs, recovery=recovery)
        if expert_noise is None
        else twc_expert_examples(
            configs, noise=expert_noise, unfiltered=all_actions, max_moves=max_moves
        )
    )
    count = write_jsonl(rows, out)
    console.print(f"[green]wrote[/green] {count} rows from {len(configs)} games to {out}")


@app.command("dagger")
def dagger(
    out: Path = typer.Option(..., help="JSONL file to write."),
    seeds: str = typer.Option("400:520", help="Train-fold seeds START:STOP."),
    max_steps: int = typer.Option(14, help="Moves per play (a little over the evaluation's 12)."),
    concurrency: int = typer.Option(4, help="Games played at once (the model batches them)."),
    threads: int | None = typer.Option(None, help="Torch threads (default: torch's)."),
    max_locations: int = _MAX_LOCATIONS,
    max_items: int = _MAX_ITEMS,
    doors: str = _DOORS,
) -> None:
    """Act-step rows from the shipped adapters' own plays, each state labelled by the expert.

    The DAgger step: the agent plays each train-fold game with the adapters it ships, and
    every state it reached (its mistakes included) becomes a row teaching the move an expert
    that knows the game would make there. Slow: the model plays every move.
    """
    import asyncio
    import tempfile

    from trellis.adapters import EmbeddedBackend, EmbeddedConfig
    from trellis.agent import Agent, AgentConfig, default_registry
    from trellis.memory import TaskStore
    from trellis_twc._datasets import (
        twc_configs,
        twc_model_plays,
        twc_trajectory_examples,
    )

    configs = twc_configs(
        seed_range(seeds), max_locations=max_locations, max_items=max_items, doors=_doors(doors)
    )
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/plays.db"
        store = TaskStore.open(url)
        registry = default_registry(store.engine, shipped=True)
        backend = EmbeddedBackend(
            EmbeddedConfig(threads=threads), resolve_adapter_path=registry.path_of
        )
        # Long limits: a batch of games on a busy CPU can queue a while for the model.
        config = AgentConfig(
            database_url=url, max_steps=max_steps, llm_timeout_s=3600, wall_time_s=7200
        )
        agent = Agent(config=config, backend=backend, store=store)

        solved: list[int] = []

        def report(game: Any, result: Any, moves: list[str]) -> None:
            if result.success:
                solved.append(game.seed)
            verdict = "[green]solved[/green]" if result.success else "not solved"
            console.print(f"seed {game.seed}: {verdict} in {len(moves)} moves")

        async def play() -> dict[int, list[str]]:
            try:
                return await twc_model_plays(
                    agent, configs, concurrency=concurrency, on_play=report
                )
            finally:
                agent.close()
                await backend.aclose()

        plays = asyncio.run(play())
    count = write_jsonl(twc_trajectory_examples(configs, plays), out)
    console.print(
        f"[green]wrote[/green] {count} rows from {len(plays)} plays to {out} "
        f"(the shipped adapters solved {len(solved)} of {len(configs)} games)"
    )


@app.command("homes")
def homes(
    out: Path = typer.Option(
        ..., help="JSON file to write (the shipped one: homes.json in this pack)."
    ),
    seeds: str = typer.Option("0:1000", help="Train-fold seeds START:STOP."),
    max_locations: int = _MAX_LOCATIONS,
    max_items: int = _MAX_ITEMS,
    doors: str = _DOORS,
) -> None:
    """Where the train fold's objects belong, and the rooms of those containers, from gold
    paths: the place ranker's examples."""
    import json

    from trellis_twc._datasets import twc_configs
    from trellis_twc._datasets import twc_homes as build_homes

    configs = twc_configs(
        seed_range(seeds), max_locations=max_locations, max_items=max_items, doors=_doors(doors)
    )
    homes = build_homes(configs)
    source = f"twc train fold, seeds {seeds}, 1-{max_locations} rooms, 1-{max_items} objects"
    pairs = ",\n".join("  " + json.dumps(list(pair)) for pair in homes.pairs)  # one a line
    rooms = ",\n".join(f"  {json.dumps(c)}: {json.dumps(r)}" for c, r in homes.rooms.items())
    out.write_text(
        f'{{"source": {json.dumps(source)},\n "homes": [\n{pairs}\n],\n'
        f' "rooms": {{\n{rooms}\n}}}}\n',
        encoding="utf-8",
    )
    console.print(
        f"[green]wrote[/green] {len(homes.pairs)} object homes in {len(homes.rooms)} "
        f"containers from {len(configs)} games to {out}"
    )


@app.command("vectors")
def vectors(
    out: Path = typer.Option(
        ..., help="NPZ file to write (the shipped one: place_vectors.npz in this pack)."
    ),
    seeds: str = typer.Option("0:1000", help="Train-fold seeds START:STOP."),
    dev_seeds: str = typer.Option("0:200", help="Dev-fold seeds START:STOP (names only)."),
    max_locations: int = typer.Option(3, help="Rooms cycle through 1..N."),
    max_items: int = typer.Option(4, help="Objects cycle through 1..N."),
    max_moves: int = typer.Option(40, help="Moves per game at most."),
) -> None:
    """The place ranker's vector table: every object and place name met in noisy expert
    play of these games, embedded ahead of time (a speed artefact: the same vectors the
    sentence model gives at run time, so no choice depends on which games were played)."""
    import numpy as np

    from trellis.adapters import SentenceEmbedder
    from trellis_twc._datasets import twc_configs, twc_expert_examples
    from trellis_twc._places import names_in, place_texts, recorded_place_texts, shipped_homes

    configs = [
        *twc_configs(seed_range(seeds), max_locations=max_locations, max_items=max_items,
                     doors=None),
        *twc_configs(seed_range(dev_seeds), fold="dev", max_locations=max_locations,
                     max_items=max_items, doors=None),
    ]  # fmt: skip
    with recorded_place_texts() as seen:
        games = twc_expert_examples(configs, noise=0.3, max_moves=max_moves, skip_unmade=True)
        for _row in games:
            pass
    things, places = names_in(seen)
    homes = shipped_homes()
    things |= {obj for obj, _home in homes}
    places |= {home for _obj, home in homes}
    texts = place_texts(things, places)
    matrix = SentenceEmbedder().embed(texts)
    np.savez_compressed(out, texts=np.array(texts), vectors=matrix.astype(np.float32))
    console.print(
        f"[green]wrote[/green] {len(texts)} vectors ({len(things)} objects, {len(places)} "
        f"places) from {len(configs)} games to {out}"
    )
