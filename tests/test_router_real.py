"""The router with the real all-MiniLM-L6-v2 embedder on the benchmark's labelled data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trellis.adapters import Router, SentenceEmbedder, StepContext, evaluate_router, load_eval_rows
from trellis.adapters._router_eval import load_profiles_file

DATA = Path(__file__).resolve().parent.parent / "bench" / "data"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder().load()


def test_sentence_embeddings_are_normalised_and_semantic(embedder: SentenceEmbedder) -> None:
    vectors = embedder.embed(
        ["book a table for dinner", "reserve a restaurant", "reverse a linked list"]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # Paraphrases are closer than unrelated text, with no word in common.
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


async def test_real_router_routes_paraphrases_and_flags_unrelated_steps(
    embedder: SentenceEmbedder,
) -> None:
    router = Router(load_profiles_file(DATA / "router_adapters.json"), embedder=embedder)
    cooking = await router.route(
        StepContext(text="what should I make for supper with eggs and leeks")
    )
    assert cooking.adapter == "cooking" and not cooking.out_of_distribution
    unrelated = await router.route(StepContext(text="who discovered penicillin"))
    assert unrelated.adapter is None and unrelated.out_of_distribution


def test_real_router_meets_the_accuracy_targets_on_the_labelled_set(
    embedder: SentenceEmbedder,
) -> None:
    router = Router(load_profiles_file(DATA / "router_adapters.json"), embedder=embedder)
    result = evaluate_router(router, load_eval_rows(DATA / "router_eval.jsonl"))
    assert result.rows >= 200
    assert result.accuracy >= 0.90
    assert result.ood_recall >= 0.80


POETRY = {
    "name": "poetry",
    "description": "Writes poems, verses and song lyrics in a requested form and mood.",
    "examples": [
        "Write a sonnet about the sea at night",
        "A short poem for my grandmother's 90th birthday",
        "Compose a haiku about the first snow",
        "Write song lyrics about leaving home, folk style",
        "a limerick about a forgetful cat",
        "Turn this memory of a summer holiday into free verse",
        "Write a rhyming poem for a wedding card",
        "An elegy for an old oak tree that was cut down",
    ],
}
POETRY_REQUESTS = [
    "write me a poem about autumn leaves",
    "compose a sonnet for my wife",
    "lyrics for a lullaby about the moon",
    "a haiku about morning coffee",
]


def test_the_background_turns_away_general_requests_but_not_an_adapter_of_their_domain(
    embedder: SentenceEmbedder,
) -> None:
    profiles = load_profiles_file(DATA / "router_adapters.json")
    # General requests that share an adapter's form ("Write a ...") but no adapter's task.
    general = ["Write a haiku about autumn leaves", "what's the capital of Australia"]
    router = Router(profiles, embedder=embedder)
    assert all(d.out_of_distribution for d in (router.route_sync(t) for t in general))
    ood = router.route_sync(general[0])
    assert "general requests" in ood.reason or "threshold" in ood.reason
    # An adapter for poetry, a domain the background touches, still takes its own requests:
    # its examples are closer to them than the background's few poems are.
    with_poetry = Router([*profiles, POETRY], embedder=embedder)
    routed = [with_poetry.route_sync(t).adapter for t in POETRY_REQUESTS]
    assert routed == ["poetry"] * len(POETRY_REQUESTS)
