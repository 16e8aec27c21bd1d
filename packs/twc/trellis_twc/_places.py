"""Where a twc object plausibly belongs: containers ranked by sentence similarity.

A small model does not know that a dirty whisk goes in the dishwasher, and twc's objects
on the dev fold never occur in training. The sentence embedder the router already ships
(all-MiniLM-L6-v2) does carry that commonsense: asked "Where does the <object> go?", the
correct container of a train-fold game ranks first among the containers in its room 53% of
the time and within the first three 92% of the time (about six to choose from), so the
environment can offer the few likely places first and leave the rest for later.

It ranks better still with examples: the homes of the train fold's objects, read from their
gold paths (``homes.json`` in this pack, built by ``trellis data twc homes``). A place whose known
objects resemble this one (a dirty whisk and a dirty spoon) scores higher. Blended at 0.3
with the question's similarity, the right container of a train game ranks first in its room
87% of the time with the object's own entry left out (75% without examples).

The embedder hardly tells a clean fork from a dirty one, yet the condition decides the home
(clean cutlery goes in the drawer, dirty cutlery in the dishwasher, a wet shirt in the drier,
a dirty one in the laundry basket). With ``match_condition`` an object is compared only with
known objects in the same condition (:data:`CONDITION_WORDS`, or none). Ranked among all the
places the runtime ranks (the open ones and the closed ones it could open), the right
container then comes first 74% of the time on the train fold (68% without) and 72% on the dev
fold, whose objects never occur in training (59% without; ``bench/bench_places.py``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence, Set
from importlib import resources
from types import MappingProxyType
from typing import Any

import numpy as np

from trellis.adapters import CachedEmbedder, Embedder, SentenceEmbedder

__all__ = [
    "CONDITION_WORDS",
    "HOMES_WEIGHT",
    "ROOM_MARGIN",
    "PlaceScorer",
    "condition_of",
    "home_is_next_door",
    "neighbour_rooms",
    "place_scorer",
    "place_texts",
    "recorded_place_texts",
    "shipped_home_rooms",
    "shipped_homes",
]

_QUESTION = "Where does the {thing} go?"
_ANSWER = "It goes in the {place}."

HOMES_WEIGHT = 0.3
"""Share of a place's score that comes from the known homes of similar objects (chosen on
the train fold with each object's own entry left out: 0.0 gives 75% first-place accuracy,
0.3 87%, 0.5 77%, 1.0 71%, among the open places only; with ``match_condition`` and the
closed places too, 0.3 gives 74% and the first three 90%, 0.5 69% and 78%)."""

ROOM_MARGIN = 0.08
"""How much likelier a container in a neighbouring room must score than every place in this
room before the object is taken there instead (``TwcConfig.place_rooms``). Chosen on the train
fold with each object's own entries left out, asking for every object and room whether its
home is elsewhere: at 0.08, 4% of the objects whose home is in the room are sent away and
88% of those whose home is elsewhere are (0.0: 13% and 100%; 0.15: 1% and 69%)."""

CONDITION_WORDS = frozenset({"clean", "dirty", "rotten", "used", "wet"})
"""Leading words that name an object's condition in twc, which decides where it belongs."""


def condition_of(thing: str) -> str | None:
    """The condition word an object's name starts with ("dirty whisk" -> "dirty"), if any."""
    first = thing.split(maxsplit=1)[0].lower() if thing.strip() else ""
    return first if first in CONDITION_WORDS else None


class PlaceScorer:
    """Ranks places for an object; vectors are cached, so a game embeds each name once.

    ``homes`` are known (object, container) pairs; without them only the question's
    similarity ranks. With ``match_condition`` an object resembles only known objects in the
    same condition (see :func:`condition_of`); without, any known object counts.
    """

    def __init__(
        self,
        embedder: Embedder,
        homes: Sequence[tuple[str, str]] = (),
        *,
        match_condition: bool = True,
    ) -> None:
        self.embedder = embedder
        self.homes = list(homes)
        self.match_condition = match_condition
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
            if missing:
                for text, vector in zip(missing, self.embedder.embed(missing), strict=True):
                    self._vectors[text] = vector
            return np.stack([self._vectors[t] for t in texts])

    def rank(self, thing: str, places: Sequence[str]) -> list[str]:
        """``places`` from the likeliest home of ``thing`` to the least likely (stable)."""
        if len(places) < 2:
            return list(places)
        scores = self.scores(thing, places)
        order = sorted(range(len(places)), key=lambda i: -float(scores[i]))
        return [places[i] for i in order]

    def scores(self, thing: str, places: Sequence[str]) -> np.ndarray:
        """How likely each of ``places`` is the home of ``thing`` (higher is likelier; the
        scale is comparable across calls for one scorer)."""
        if not places:
            return np.zeros(0)
        question = self._embed([_QUESTION.format(thing=thing)])[0]
        answers = self._embed([_ANSWER.format(place=p) for p in places])
        scores = answers @ question
        if self.homes:
            scores = (1.0 - HOMES_WEIGHT) * scores + HOMES_WEIGHT * self._resemblance(thing, places)
        return np.asarray(scores, dtype=np.float64)

    def _resemblance(self, thing: str, places: Sequence[str]) -> np.ndarray:
        """Per place, the similarity of ``thing`` to the likest object known to live there
        (0 for a place with no known objects)."""
        known = self.homes
        if self.match_condition:
            condition = condition_of(thing)
            known = [(obj, home) for obj, home in known if condition_of(obj) == condition]
        if not known:
            return np.zeros(len(places))
        similarity = self._embed([obj for obj, _ in known]) @ self._embed([thing])[0]
        best: dict[str, float] = {}
        for (_, home), value in zip(known, similarity.tolist(), strict=True):
            best[home] = max(best.get(home, -1.0), value)
        return np.array([max(0.0, best.get(place, 0.0)) for place in places])


# "To the West you see the pantry." in a room description names a neighbouring room.
_NEIGHBOUR = re.compile(r"To the (?:North|South|East|West) you see the ([^.]+)\.")


def neighbour_rooms(look: str) -> set[str]:
    """The rooms a twc room description names as next door."""
    return set(_NEIGHBOUR.findall(look))


def home_is_next_door(
    scorer: PlaceScorer,
    thing: str,
    places: Sequence[str],
    neighbours: Set[str],
    home_rooms: Mapping[str, Set[str]],
    *,
    ruled_out: Set[str] = frozenset(),
) -> bool:
    """Whether a home container known to stand in one of ``neighbours`` (and not here, nor
    ``ruled_out``) scores likelier than every one of ``places`` here by :data:`ROOM_MARGIN`."""
    if not neighbours or not places:
        return False
    elsewhere = [
        container
        for container, found_in in home_rooms.items()
        if found_in & neighbours and container not in places and container not in ruled_out
    ]
    if not elsewhere:
        return False
    here = float(scorer.scores(thing, places).max())
    return float(scorer.scores(thing, elsewhere).max()) - here > ROOM_MARGIN


@functools.cache
def _shipped() -> dict[str, Any]:
    text = resources.files("trellis_twc").joinpath("homes.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def shipped_homes() -> list[tuple[str, str]]:
    """The (object, container) pairs of the train fold's gold paths shipped with Trellis."""
    return [(str(obj), str(home)) for obj, home in _shipped()["homes"]]


@functools.cache
def shipped_home_rooms() -> Mapping[str, frozenset[str]]:
    """Container -> the rooms the train fold's gold paths found it in (homes only; read once,
    since every move with an object in hand asks)."""
    rooms = {str(c): frozenset(map(str, found)) for c, found in _shipped()["rooms"].items()}
    return MappingProxyType(rooms)


VECTORS_FILE = "place_vectors.npz"
"""The pack's table of all-MiniLM-L6-v2 vectors for the twc texts the ranker embeds
(``trellis data twc vectors`` builds it): a game whose names are all there never loads the
sentence model (about 370 MB and several seconds)."""


def place_texts(things: Set[str], places: Set[str]) -> list[str]:
    """Every text the ranker embeds for these objects and places, sorted."""
    texts = {_QUESTION.format(thing=t) for t in things} | set(things)
    texts |= {_ANSWER.format(place=p) for p in places}
    return sorted(texts)


@functools.cache
def _shipped_vectors() -> Mapping[str, np.ndarray]:
    table = resources.files("trellis_twc") / VECTORS_FILE
    if not table.is_file():
        return MappingProxyType({})
    with table.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
        texts, vectors = data["texts"].tolist(), np.asarray(data["vectors"], dtype=np.float32)
    return MappingProxyType(dict(zip(texts, vectors, strict=True)))


def _default_embedder() -> Embedder:
    return CachedEmbedder(
        _shipped_vectors(), SentenceEmbedder, name=SentenceEmbedder.name, dim=SentenceEmbedder.dim
    )


_shared: dict[tuple[bool, bool], PlaceScorer] = {}
_shared_lock = threading.Lock()


def place_scorer(*, homes: bool = True, match_condition: bool = True) -> PlaceScorer:
    """The process-wide scorer on the real sentence embedder (the shipped vector table first,
    the model loaded at the first text it lacks), with the shipped homes as examples or (``homes=False``) without; ``match_condition`` as in
    :class:`PlaceScorer`."""
    key = (homes, match_condition)
    with _shared_lock:
        if key not in _shared:
            embedder = next(iter(_shared.values())).embedder if _shared else _default_embedder()
            _shared[key] = PlaceScorer(
                embedder, shipped_homes() if homes else (), match_condition=match_condition
            )
        return _shared[key]


class _RecordingEmbedder:
    """Notes the texts asked for; answers zeros (the names are what is wanted, not ranks)."""

    name = SentenceEmbedder.name
    dim = SentenceEmbedder.dim

    def __init__(self, seen: set[str]) -> None:
        self.seen = seen

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.update(texts)
        return np.zeros((len(texts), self.dim), dtype=np.float32)


@contextlib.contextmanager
def recorded_place_texts() -> Iterator[set[str]]:
    """While open, the shared scorers note every text they embed (into the set yielded)
    instead of embedding it: how ``trellis data twc vectors`` learns the game's names."""
    seen: set[str] = set()
    with _shared_lock:
        saved = dict(_shared)
        _shared.clear()
        _shared[(True, True)] = PlaceScorer(_RecordingEmbedder(seen), shipped_homes())
    try:
        yield seen
    finally:
        with _shared_lock:
            _shared.clear()
            _shared.update(saved)


def names_in(texts: Set[str]) -> tuple[set[str], set[str]]:
    """The objects and the places named by the ranker's texts."""
    question = re.compile(re.escape(_QUESTION).replace(r"\{thing\}", "(.+)"))
    answer = re.compile(re.escape(_ANSWER).replace(r"\{place\}", "(.+)"))
    things: set[str] = set()
    places: set[str] = set()
    for text in texts:
        if found := question.fullmatch(text):
            things.add(found.group(1))
        elif found := answer.fullmatch(text):
            places.add(found.group(1))
        else:
            things.add(text)  # an object's own name (compared with the known homes)
    return things, places
