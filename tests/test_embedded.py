"""The embedded backend on the real model: mixed-adapter batches, constraints, stops, limits.

Generations stay short (CPU); the model loads once per process and is shared by the tests.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trellis.adapters import (
    AdapterValidationError,
    BackendTimeoutError,
    DuplicateAdapterError,
    EmbeddedBackend,
    EmbeddedConfig,
    IncompatibleAdapterError,
    LLMRequest,
    Message,
    SamplingParams,
    SchemaCompileError,
    UnknownAdapterError,
    create_lora_adapter,
    default_model_dir,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prepared_model")]

ACTION_SCHEMA = {
    "type": "object",
    "properties": {
        "action": {"enum": ["open", "close", "take"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
    },
    "required": ["action", "count"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    # A larger B scale than the default so that a few greedy tokens already differ.
    return {
        name: create_lora_adapter(default_model_dir(), root / name, seed=seed, scale=0.15)
        for seed, name in enumerate(["alpha", "beta", "gamma"])
    }


@pytest.fixture
async def backend(adapter_dirs: dict[str, Path]) -> AsyncIterator[EmbeddedBackend]:
    # Several backends on one folder share the process-wide model and its adapters.
    backend = EmbeddedBackend(EmbeddedConfig(batch_wait_ms=50.0))
    await backend.start()
    for name, path in adapter_dirs.items():
        await backend.load_adapter(name, path)
    yield backend
    await backend.aclose()


def prompt(text: str, adapter: str | None = None, max_tokens: int = 8, **kw: object) -> LLMRequest:
    sampling = SamplingParams(max_tokens=max_tokens, **kw)  # type: ignore[arg-type]
    return LLMRequest(prompt=text, adapter=adapter, sampling=sampling)


async def test_mixed_batch_rows_equal_single_adapter_runs(backend: EmbeddedBackend) -> None:
    requests = [prompt("The capital of France is", a) for a in (None, "alpha", "beta")]
    before = backend.stats
    batched = await asyncio.gather(*(backend.generate(r) for r in requests))
    after = backend.stats
    assert after.batches == before.batches + 1, "the three requests were not served together"
    assert sorted(after.batch_adapters[-1]) == ["__base__", "alpha", "beta"]
    assert after.mixed_batches == before.mixed_batches + 1

    singles = [await backend.generate(r) for r in requests]
    for one, many in zip(singles, batched, strict=True):
        assert one.text == many.text
        assert one.completion_tokens == many.completion_tokens
    assert [r.adapter for r in batched] == [None, "alpha", "beta"]
    assert len({r.text for r in batched}) > 1, "adapters did not change the output"
    assert all(r.backend.startswith("embedded:") and r.prompt_tokens > 3 for r in batched)


async def test_eight_concurrent_requests_over_three_adapters(backend: EmbeddedBackend) -> None:
    adapters = [None, "alpha", "beta", "gamma", None, "alpha", "beta", "gamma"]
    texts = [f"Item {i}: the best way to clean a" for i in range(8)]
    before = backend.stats
    results = await asyncio.gather(
        *(
            backend.generate(prompt(t, a, max_tokens=6))
            for t, a in zip(texts, adapters, strict=True)
        )
    )
    after = backend.stats
    new_batches = after.batch_adapters[before.batches :]
    assert after.rows - before.rows == 8
    assert len(new_batches) <= 2 and max(len(b) for b in new_batches) >= 4
    served = Counter(name for batch in new_batches for name in batch)
    assert served == Counter({"__base__": 2, "alpha": 2, "beta": 2, "gamma": 2})
    assert [r.adapter for r in results] == adapters
    # Spot-check two rows against single runs: batching must not change any row.
    for index in (1, 4):
        alone = await backend.generate(prompt(texts[index], adapters[index], max_tokens=6))
        assert alone.text == results[index].text


async def test_constrained_output_always_parses_and_matches(backend: EmbeddedBackend) -> None:
    chat = (Message(role="user", content="Say what to do with the fridge, as JSON."),)
    requests = [
        LLMRequest(
            messages=chat, json_schema=ACTION_SCHEMA, sampling=SamplingParams(max_tokens=24)
        ),
        LLMRequest(
            messages=chat,
            json_schema=ACTION_SCHEMA,
            adapter="alpha",
            sampling=SamplingParams(max_tokens=24, temperature=1.0, seed=3),
        ),
        LLMRequest(
            prompt="JSON:",
            json_schema=ACTION_SCHEMA,
            adapter="beta",
            sampling=SamplingParams(max_tokens=24, temperature=1.5, seed=4),
        ),
    ]
    results = await asyncio.gather(*(backend.generate(r) for r in requests))
    for result in results:
        assert result.json_error is None, result.text
        assert result.parsed == json.loads(result.text)
        assert set(result.parsed) == {"action", "count"}
        assert result.parsed["action"] in {"open", "close", "take"}
        assert isinstance(result.parsed["count"], int) and 0 <= result.parsed["count"] <= 9
        assert result.finish_reason == "stop"


async def test_unconstrained_row_beside_a_constrained_one_is_unmasked(
    backend: EmbeddedBackend,
) -> None:
    free = prompt("The capital of France is", max_tokens=6)
    constrained = LLMRequest(
        prompt="The capital of France is", json_schema=ACTION_SCHEMA, sampling=free.sampling
    )
    both = await asyncio.gather(backend.generate(free), backend.generate(constrained))
    alone = await backend.generate(free)
    assert both[0].text == alone.text
    assert both[1].text.startswith('{"')


async def test_seeded_sampling_is_reproducible(backend: EmbeddedBackend) -> None:
    request = prompt("Once upon a time", max_tokens=8, temperature=1.0, seed=11)
    first, second = await asyncio.gather(backend.generate(request), backend.generate(request))
    assert first.text == second.text


async def test_stop_strings_end_generation_and_are_removed(backend: EmbeddedBackend) -> None:
    full = await backend.generate(prompt("One, two, three, four,", max_tokens=10))
    assert " six" in full.text, f"the model did not count on: {full.text!r}"
    stopped = await backend.generate(
        prompt("One, two, three, four,", max_tokens=10, stop=(" six",))
    )
    assert stopped.text == full.text[: full.text.index(" six")]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < full.completion_tokens


async def test_max_tokens_limits_output(backend: EmbeddedBackend) -> None:
    short, longer = await asyncio.gather(
        backend.generate(prompt("The history of Rome", max_tokens=3)),
        backend.generate(prompt("The history of Rome", max_tokens=7)),
    )
    assert (short.completion_tokens, short.finish_reason) == (3, "length")
    assert (longer.completion_tokens, longer.finish_reason) == (7, "length")
    assert longer.text.startswith(short.text)


async def test_unknown_and_unloaded_adapters_are_never_served_by_the_base(
    backend: EmbeddedBackend, tmp_path: Path
) -> None:
    with pytest.raises(UnknownAdapterError, match="'nope'"):
        await backend.generate(prompt("Hi", "nope"))
    extra = create_lora_adapter(default_model_dir(), tmp_path / "extra", seed=9)
    await backend.load_adapter("extra", extra)
    assert "extra" in backend.adapters()
    await backend.load_adapter("extra", extra)  # same folder again: no-op
    with pytest.raises(DuplicateAdapterError):
        await backend.load_adapter(
            "extra", create_lora_adapter(default_model_dir(), tmp_path / "x2")
        )
    ok = await backend.generate(prompt("Hi", "extra", max_tokens=2))
    assert ok.adapter == "extra"
    await backend.unload_adapter("extra")
    assert "extra" not in backend.adapters()
    with pytest.raises(UnknownAdapterError, match="'extra'"):
        await backend.generate(prompt("Hi", "extra", max_tokens=2))
    with pytest.raises(UnknownAdapterError):
        await backend.unload_adapter("extra")


async def test_bad_adapters_and_schemas_are_rejected(
    backend: EmbeddedBackend, tmp_path: Path
) -> None:
    other = create_lora_adapter(
        default_model_dir(), tmp_path / "other", base_model_name="Qwen/Qwen2.5-0.5B"
    )
    with pytest.raises(IncompatibleAdapterError, match="Qwen"):
        await backend.load_adapter("other", other)
    with pytest.raises(AdapterValidationError, match="invalid adapter name"):
        await backend.load_adapter("a.b", other)
    with pytest.raises(SchemaCompileError, match="Invalid type"):
        await backend.generate(LLMRequest(prompt="x", json_schema={"type": "strin"}))
    assert "other" not in backend.adapters()


async def test_timeout_is_a_specific_error(backend: EmbeddedBackend) -> None:
    request = LLMRequest(
        prompt="Write a long story about", sampling=SamplingParams(max_tokens=200), timeout_s=0.3
    )
    with pytest.raises(BackendTimeoutError, match=r"timeout_s=0\.3"):
        await backend.generate(request)
    # The abandoned row stops early, so the next request is served promptly and correctly.
    after = await backend.generate(prompt("The capital of France is", max_tokens=2))
    assert after.completion_tokens == 2


async def test_stream_yields_pieces_that_join_to_the_result(backend: EmbeddedBackend) -> None:
    request = prompt("One, two, three, four,", max_tokens=10, stop=(" six",))
    pieces = [piece async for piece in backend.stream(request)]
    result = await backend.generate(request)
    assert "".join(pieces) == result.text
    assert len(pieces) >= 2, "the text arrived in one piece"
    assert all(pieces)


async def test_adapters_load_on_first_use_through_a_resolver(
    backend: EmbeddedBackend, tmp_path: Path
) -> None:
    folder = create_lora_adapter(default_model_dir(), tmp_path / "lazy", seed=21)
    lazy = EmbeddedBackend(EmbeddedConfig(), resolve_adapter_path={"lazy": folder}.get)
    assert "lazy" not in lazy.adapters()
    result = await lazy.generate(prompt("Hi", "lazy", max_tokens=2))
    assert result.adapter == "lazy" and lazy.adapters()["lazy"] == folder.resolve()
    assert "lazy" in backend.adapters()  # one model per process: the other backend sees it
    with pytest.raises(UnknownAdapterError, match="'missing'"):
        await lazy.generate(prompt("Hi", "missing", max_tokens=2))
    await lazy.unload_adapter("lazy")
