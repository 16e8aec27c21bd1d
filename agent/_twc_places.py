"""Where a twc object plausibly belongs: containers ranked by sentence similarity.

A small model does not know that a dirty whisk goes in the dishwasher, and twc's objects
on the dev fold never occur in training. The sentence embedder the router already ships
(all-MiniLM-L6-v2) does carry that commonsense: asked "Where does the <object> go?", the
correct container of a train-fold game ranks first among the containers in its room 53% of
the time and within the first three 92% of the time (about six to choose from), so the
environment can offer the few likely places first and leave the rest for later.

It ranks better still with examples: the homes of the train fold's objects, read from their
gold paths (``agent/twc_homes.json``, built by ``trellis data twc-homes``). A place whose known
objects resemble this one (a dirty whisk and a dirty spoon) scores higher. Blended at 0.3
with the question's similarity, the right container of a train game ranks first in its room
87% of the time with the object's own entry left out (75% without examples).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from importlib import resources

import numpy as np

from adapters import Embedder, SentenceEmbedder

__all__ = ["HOMES_WEIGHT", "PlaceScorer", "place_scorer", "shipped_homes"]

_QUESTION = "Where does the {thing} go?"
_ANSWER = "It goes in the {place}."

HOMES_WEIGHT = 0.3
"""Share of a place's score that comes from the known homes of similar objects (chosen on
the train fold with each object's own entry left out: 0.0 gives 75% first-place accuracy,
0.3 87%, 0.5 77%, 1.0 71%)."""


class PlaceScorer:
    """Ranks places for an object; vectors are cached, so a game embeds each name once.

    ``homes`` are known (object, container) pairs; without them only the question's
    similarity ranks.
    """

    def __init__(self, embedder: Embedder, homes: Sequence[tuple[str, str]] = ()) -> None:
        self.embedder = embedder
        self.homes = list(homes)
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
        question = self._embed([_QUESTION.format(thing=thing)])[0]
        answers = self._embed([_ANSWER.format(place=p) for p in places])
        scores = answers @ question
        if self.homes:
            scores = (1.0 - HOMES_WEIGHT) * scores + HOMES_WEIGHT * self._resemblance(thing, places)
        order = sorted(range(len(places)), key=lambda i: -float(scores[i]))
        return [places[i] for i in order]

    def _resemblance(self, thing: str, places: Sequence[str]) -> np.ndarray:
        """Per place, the similarity of ``thing`` to the likest object known to live there
        (0 for a place with no known objects)."""
        known = self.homes
        similarity = self._embed([obj for obj, _ in known]) @ self._embed([thing])[0]
        best: dict[str, float] = {}
        for (_, home), value in zip(known, similarity.tolist(), strict=True):
            best[home] = max(best.get(home, -1.0), value)
        return np.array([max(0.0, best.get(place, 0.0)) for place in places])


def shipped_homes() -> list[tuple[str, str]]:
    """The (object, container) pairs of the train fold's gold paths shipped with Trellis."""
    text = resources.files("agent").joinpath("twc_homes.json").read_text(encoding="utf-8")
    return [(str(obj), str(home)) for obj, home in json.loads(text)["homes"]]


_shared: dict[bool, PlaceScorer] = {}
_shared_lock = threading.Lock()


def place_scorer(*, homes: bool = True) -> PlaceScorer:
    """The process-wide scorer on the real sentence embedder (loaded on first use), with the
    shipped homes as examples or (``homes=False``) without."""
    with _shared_lock:
        if homes not in _shared:
            embedder = next(iter(_shared.values())).embedder if _shared else SentenceEmbedder()
            _shared[homes] = PlaceScorer(embedder, shipped_homes() if homes else ())
        return _shared[homes]
