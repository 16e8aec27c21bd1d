"""Where a twc object plausibly belongs: containers ranked by sentence similarity.

A small model does not know that a dirty whisk goes in the dishwasher, and twc's objects
on the dev fold never occur in training. The sentence embedder the router already ships
(all-MiniLM-L6-v2) does carry that commonsense: asked "Where does the <object> go?", the
correct container of a train-fold game ranks first among the containers in its room 53% of
the time and within the first three 92% of the time (about six to choose from), so the
environment can offer the few likely places first and leave the rest for later.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from adapters import Embedder, SentenceEmbedder

__all__ = ["PlaceScorer", "place_scorer"]

_QUESTION = "Where does the {thing} go?"
_ANSWER = "It goes in the {place}."


class PlaceScorer:
    """Ranks places for an object; vectors are cached, so a game embeds each name once."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
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
        order = sorted(range(len(places)), key=lambda i: -float(scores[i]))
        return [places[i] for i in order]


_shared: PlaceScorer | None = None
_shared_lock = threading.Lock()


def place_scorer() -> PlaceScorer:
    """The process-wide scorer on the real sentence embedder (loaded on first use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PlaceScorer(SentenceEmbedder())
        return _shared
