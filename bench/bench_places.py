"""How well the twc place ranker finds where an object belongs, with and without examples.

    python bench/bench_places.py [--train-games 300] [--dev-games 50]

Plays the gold path of each game; at every gold ``put X in Y`` it ranks what the runtime
ranks for X (the containers the room offers a put into, and the closed ones it offers to
open) and records the rank of Y. At every state with an object in hand it also asks
``TwcConfig.place_rooms``'s question (is a home next door clearly likelier than every place
here?) and records whether the object stays where its home is and goes where it is next door. Train-fold games are scored with X's own
entries left out of the shipped homes (``agent/twc_homes.json`` is built from the train
fold), so they measure what the examples teach about objects never seen; dev-fold objects
never occur in training at all. The baseline in the same run is the ranker without
examples (sentence similarity of the question and the answer alone); beside it, the examples
compared whatever their condition and (the runtime's default) only within the object's
condition. Prints a table and writes ``bench/results/bench_places.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trellis_twc import (  # noqa: E402
    TwcConfig,
    TwcEnvironment,
    candidate_places,
    room_of,
)
from trellis_twc._datasets import twc_configs  # noqa: E402
from trellis_twc._places import (  # noqa: E402
    HOMES_WEIGHT,
    ROOM_MARGIN,
    PlaceScorer,
    home_is_next_door,
    neighbour_rooms,
    shipped_home_rooms,
    shipped_homes,
)

from trellis.adapters import SentenceEmbedder  # noqa: E402

_ALL_OFFERED = {"avoid_regressions": False, "avoid_idle": False, "place_shortlist": 0}


class Carried(NamedTuple):
    """One gold-path state with an object in hand, as ``TwcConfig.place_rooms`` sees it."""

    thing: str
    places: list[str]
    neighbours: set[str]
    home_here: bool
    home_next_door: bool


def gold_walk(
    configs: list[TwcConfig],
) -> tuple[list[tuple[str, str, list[str]]], list[Carried]]:
    """Along each gold path: (object, its container, what the runtime ranks) at every put,
    and every state with an object in hand."""
    puts = []
    carried: list[Carried] = []
    env = TwcEnvironment()
    try:
        for config in configs:
            state = env.load(config.model_copy(update=_ALL_OFFERED))
            home_room: dict[str, str] = {}
            seen: list[tuple[str, str, list[str], set[str]]] = []
            for action in env.gold_actions():
                if state.done or action not in state.valid_actions:
                    break
                for thing in state.carrying:
                    places = candidate_places(state.valid_actions, thing)
                    seen.append((thing, room_of(state), places, neighbour_rooms(state.look)))
                if action.startswith("put ") and " in " in action:
                    thing, _, place = action.removeprefix("put ").rpartition(" in ")
                    puts.append((thing, place, candidate_places(state.valid_actions, thing)))
                    home_room[thing] = room_of(state)
                state = env.step(action)
            carried += [
                Carried(thing, places, near, home_room[thing] == room, home_room[thing] in near)
                for thing, room, places, near in seen
                if thing in home_room
            ]
    finally:
        env.close()
    return puts, carried


def next_door(carried: list[Carried], scorers: dict[str, PlaceScorer]) -> dict[str, float]:
    """How ``TwcConfig.place_rooms`` decides: the share of states with the home here that
    keep the object here, and of states with the home next door that send it there."""
    rooms = shipped_home_rooms()
    kept = [0, 0]
    sent = [0, 0]
    for item in carried:
        scorer = scorers.get(item.thing, scorers[""])
        away = home_is_next_door(scorer, item.thing, item.places, item.neighbours, rooms)
        if item.home_here:
            kept[0] += not away
            kept[1] += 1
        elif item.home_next_door:
            sent[0] += away
            sent[1] += 1
    return {
        "home here, kept here": round(kept[0] / max(1, kept[1]), 3),
        "states with the home here": kept[1],
        "home next door, sent there": round(sent[0] / max(1, sent[1]), 3),
        "states with the home next door": sent[1],
    }


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
    with_homes = {"": PlaceScorer(embedder, homes, match_condition=False)}
    by_condition = {"": PlaceScorer(embedder, homes)}
    walks = {
        "train (own entry left out)": gold_walk(twc_configs(range(args.train_games), fold="train")),
        "dev": gold_walk(twc_configs(range(args.dev_games), fold="dev")),
    }
    folds = {fold: puts for fold, (puts, _) in walks.items()}
    for thing in {thing for thing, _, _ in folds["train (own entry left out)"]}:
        others = [(obj, home) for obj, home in homes if obj != thing]
        if len(others) < len(homes):
            with_homes[thing] = PlaceScorer(embedder, others, match_condition=False)
            by_condition[thing] = PlaceScorer(embedder, others)
    result: dict[str, object] = {
        "benchmark": "places",
        "homes": len(homes),
        "homes_weight": HOMES_WEIGHT,
        "room_margin": ROOM_MARGIN,
        "train_games": args.train_games,
        "dev_games": args.dev_games,
    }
    print(f"{'fold':28} {'puts':>5} {'ranker':22} {'top1':>6} {'top2':>6} {'top3':>6}")
    for fold, puts in folds.items():
        rows = {
            "similarity only (baseline)": top_k(puts, plain),
            "with train-fold homes": top_k(puts, with_homes),
            "homes, same condition": top_k(puts, by_condition),
        }
        for name, scores in rows.items():
            print(
                f"{fold:28} {len(puts):5} {name:22} "
                + " ".join(f"{v:6.2f}" for v in scores.values())
            )
        result[fold] = {"puts": len(puts), **rows}
    print(f"\nplace_rooms at ROOM_MARGIN {ROOM_MARGIN} (homes, same condition):")
    for fold, (_, carried) in walks.items():
        decided = next_door(carried, by_condition)
        print(f"{fold:28} " + ", ".join(f"{k} {v}" for k, v in decided.items()))
        result[fold] = {**result[fold], "place_rooms": decided}  # type: ignore[dict-item]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
