"""Recording a run with any backend and replaying it without one."""

from __future__ import annotations

import pytest

from trellis.adapters import (
    FunctionBackend,
    LLMRequest,
    LLMResult,
    Message,
    RecordingBackend,
    ReplayBackend,
    ReplayMismatchError,
    SamplingParams,
)


def answer(request: LLMRequest) -> str:
    return '{"n": 1}' if request.json_schema else f"echo {request.adapter}"


async def test_replay_returns_the_recorded_results_in_order() -> None:
    recorder = RecordingBackend(FunctionBackend(answer, name="scripted"))
    requests = [
        LLMRequest(prompt="first", adapter="kitchen"),
        LLMRequest(
            messages=(Message(role="user", content="second"),), json_schema={"type": "object"}
        ),
        LLMRequest(prompt="first", adapter="kitchen"),
    ]
    originals = [await recorder.generate(r) for r in requests]
    replay = ReplayBackend(recorder.recorded)
    assert replay.remaining == 3
    # Sampling and timeouts do not change what was asked, so they may differ on replay.
    changed = requests[0].model_copy(update={"sampling": SamplingParams(max_tokens=5)})
    replayed = [await replay.generate(r) for r in (changed, requests[1], requests[2])]
    assert [r.text for r in replayed] == [r.text for r in originals]
    assert replayed[1].parsed == {"n": 1}
    assert all(r.backend == "replay" for r in replayed)
    assert replay.remaining == 0


async def test_divergence_names_expected_and_got() -> None:
    recorded = [
        (
            LLMRequest(prompt="open the fridge", adapter="kitchen"),
            LLMResult(text="ok", adapter="kitchen"),
        )
    ]
    replay = ReplayBackend(recorded)
    with pytest.raises(ReplayMismatchError, match=r"recorded adapter=kitchen.*got adapter=garden"):
        await replay.generate(LLMRequest(prompt="open the fridge", adapter="garden"))
    with pytest.raises(ReplayMismatchError, match="open the shed"):
        await replay.generate(LLMRequest(prompt="open the shed", adapter="kitchen"))
    assert replay.remaining == 1  # a mismatch does not consume the recording
    await replay.generate(LLMRequest(prompt="open the fridge", adapter="kitchen"))
    with pytest.raises(ReplayMismatchError, match="exhausted"):
        await replay.generate(LLMRequest(prompt="open the fridge", adapter="kitchen"))
