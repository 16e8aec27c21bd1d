"""How well the twc place ranker finds where an object belongs, with and without examples.

    python bench/bench_places.py [--train-games 300] [--dev-games 50]

Plays the gold path of each game; at every gold ``put X in Y`` it ranks the containers
the room offers for X and records the rank of Y. Train-fold games are scored with X's own
entries left out of the shipped homes (``agent/twc_homes.json`` is built from the train
fold), so they measure what the examples teach about objects never seen; dev-fold objects
never occur in training at all. The baseline in the same run is the ranker without
examples (sentence similarity of the question and the answer alone). Prints a table and
writes ``bench/results/bench_places.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters import SentenceEmbedder  # noqa: E402
from agent._datasets import twc_configs  # noqa: E402
from agent._twc import TwcConfig, TwcEnvironment  # noqa: E402
from agent._twc_places import HOMES_WEIGHT, PlaceScorer, shipped_homes  # noqa: E402

_ALL_OFFERED = {"avoid_regressions": False, "avoid_idle": False, "place_shortlist": 0}


def gold_puts(configs: list[TwcConfig]) -> list[tuple[str, str, list[str]]]:
    """(object, its container, the containers its room offers) at each gold put."""
    puts = []
    env = TwcEnvironment()
    try:
        for config in configs:
            state = env.load(config.model_copy(update=_ALL_OFFERED))
            for action in env.gold_actions():
                if state.done or action not in state.valid_actions:
                    break
                if action.startswith("put ") and " in " in action:
                    thing, _, place = action.removeprefix("put ").rpartition(" in ")
                    prefix = f"put {thing} in "
                    offered = [
                        a.removeprefix(prefix) for a in state.valid_actions if a.startswith(prefix)
                    ]
                    puts.append((thing, place, offered))
                state = env.step(action)
    finally:
        env.close()
    return puts


def top_k(
    puts: list[tuple[str, str, list[str]]], scorers: dict[str, PlaceScorer]
) -> dict[str, float]:
    """Share of puts whose container ranks within the first 1, 2 and 3 of its room."""
    hits = [0, 0, 0]
    for thing, place, offered in puts:
        # Leave the object's own entries out when it has any (the train fold's case).
        scorer = scorers.get(thing, scorers[""])
        rank = scorer.rank(thing, offered).index(place)
        for k in range(3):
            hits[k] += rank <= k
    return {f"top{k + 1}": round(h / max(1, len(puts)), 3) for k, h in enumerate(hits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-games", type=int, default=300)
    parser.add_argument("--dev-games", type=int, default=50)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "bench_places.json"
    )
    args = parser.parse_args()

    embedder = SentenceEmbedder()
    homes = shipped_homes()
    plain = {"": PlaceScorer(embedder)}
    with_homes = {"": PlaceScorer(embedder, homes)}
    folds = {
        "train (own entry left out)": gold_puts(twc_configs(range(args.train_games), fold="train")),
        "dev": gold_puts(twc_configs(range(args.dev_games), fold="dev")),
    }
    for thing in {thing for thing, _, _ in folds["train (own entry left out)"]}:
        others = [(obj, home) for obj, home in homes if obj != thing]
        if len(others) < len(homes):
            with_homes[thing] = PlaceScorer(embedder, others)
    result: dict[str, object] = {
        "benchmark": "places",
        "homes": len(homes),
        "homes_weight": HOMES_WEIGHT,
        "train_games": args.train_games,
        "dev_games": args.dev_games,
    }
    print(f"{'fold':28} {'puts':>5} {'ranker':22} {'top1':>6} {'top2':>6} {'top3':>6}")
    for fold, puts in folds.items():
        rows = {
            "similarity only (baseline)": top_k(puts, plain),
            "with train-fold homes": top_k(puts, with_homes),
        }
        for name, scores in rows.items():
            print(
                f"{fold:28} {len(puts):5} {name:22} "
                + " ".join(f"{v:6.2f}" for v in scores.values())
            )
        result[fold] = {"puts": len(puts), **rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
