"""The LLM backend protocol: one request/result shape for every way of running a model.

Backends are async (``generate``, ``stream``); :class:`SyncBackend` is the thin sync wrapper.
:class:`FunctionBackend` is a scripted model for tests and fixed procedures: it answers with
a Python function, and goes through the same request/result types as the real backends.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trellis.memory._asyncio import run_sync

__all__ = [
    "BackendBase",
    "FunctionBackend",
    "LLMBackend",
    "LLMRequest",
    "LLMResult",
    "Message",
    "SamplingParams",
    "SyncBackend",
    "count_tokens_approx",
    "parse_json_text",
]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    """Who speaks."""
    content: str
    """What is said."""


class SamplingParams(BaseModel):
    """How tokens are chosen and when generation stops."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(default=256, ge=1, le=32_768)
    """Upper bound on generated tokens."""
    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    """0 means greedy decoding; above 0 samples."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass (only when sampling)."""
    seed: int | None = None
    """Sampling seed, for reproducible sampled runs."""
    stop: tuple[str, ...] = ()
    """Generation ends before any of these strings; they are not part of the text."""


class LLMRequest(BaseModel):
    """What to generate: a prompt or chat messages, through which adapter, under what limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str | None = None
    """Raw completion prompt (exclusive with ``messages``)."""
    messages: tuple[Message, ...] | None = None
    """Chat messages, rendered with the model's chat template (exclusive with ``prompt``)."""
    adapter: str | None = None
    """Registered LoRA adapter name, or None for the base model."""
    sampling: SamplingParams = SamplingParams()
    """Sampling parameters."""
    json_schema: dict[str, Any] | None = None
    """When set, output is constrained to this JSON schema and parsed into ``LLMResult.parsed``."""
    timeout_s: float = Field(default=300.0, gt=0)
    """Wall-clock limit for this request, queueing included."""

    @model_validator(mode="after")
    def _exactly_one_input(self) -> LLMRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt= or messages=")
        if self.messages is not None and not self.messages:
            raise ValueError("messages= must not be empty")
        return self


class LLMResult(BaseModel):
    """What came back, and who produced it."""

    model_config = ConfigDict(extra="forbid")

    text: str
    """Generated text (stop strings removed)."""
    parsed: Any = None
    """The parsed JSON value when the request carried a schema and the text parsed."""
    json_error: str | None = None
    """Why ``text`` did not parse as JSON, when a schema was given and it did not."""
    prompt_tokens: int = 0
    """Tokens in the prompt as the model saw it."""
    completion_tokens: int = 0
    """Tokens generated."""
    latency_s: float = 0.0
    """Wall-clock seconds from submission to result."""
    adapter: str | None = None
    """The adapter that actually served the request (None: the base model)."""
    backend: str = ""
    """Which backend (and server) answered."""
    finish_reason: Literal["stop", "length"] = "stop"
    """``length`` when max_tokens cut the output."""


@runtime_checkable
class LLMBackend(Protocol):
    """Anything that serves LLM requests."""

    name: str

    async def generate(self, request: LLMRequest) -> LLMResult:
        """Serve one request."""
        ...

    def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        """Yield text pieces as they are produced (a backend may yield everything at once)."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and models."""
        ...


class BackendBase:
    """Shared behaviour: ``stream`` falls back to one chunk from ``generate``."""

    name: str = "backend"

    async def generate(self, request: LLMRequest) -> LLMResult:
        raise NotImplementedError

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        result = await self.generate(request)
        yield result.text

    async def aclose(self) -> None:
        return None


def parse_json_text(text: str) -> tuple[Any, str | None]:
    """Parse JSON output; returns (value, None) or (None, a message naming the problem)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        snippet = text[max(0, exc.pos - 20) : exc.pos + 20]
        return (
            None,
            f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg} near {snippet!r}",
        )


def count_tokens_approx(text: str) -> int:
    """Rough token count (about 4 characters a token) for backends without a tokenizer."""
    return max(1, (len(text) + 3) // 4) if text else 0


ScriptFunction = Callable[[LLMRequest], "str | LLMResult | Awaitable[str | LLMResult]"]


class FunctionBackend(BackendBase):
    """A scripted model: ``function(request)`` returns the text (or a full result).

    Use it in tests and for deterministic procedures instead of mocking Trellis code::

        backend = FunctionBackend(lambda request: '{"steps": []}')
    """

    def __init__(self, function: ScriptFunction, *, name: str = "function") -> None:
        self.function = function
        self.name = name
        self.requests: list[LLMRequest] = []

    async def generate(self, request: LLMRequest) -> LLMResult:
        started = time.perf_counter()
        self.requests.append(request)
        answer = self.function(request)
        if inspect.isawaitable(answer):
            answer = await answer
        if isinstance(answer, LLMResult):
            return answer
        text = str(answer)
        for stop in request.sampling.stop:
            if stop in text:
                text = text[: text.index(stop)]
        parsed, json_error = (None, None)
        if request.json_schema is not None:
            parsed, json_error = parse_json_text(text)
        prompt_text = request.prompt or "\n".join(m.content for m in request.messages or ())
        return LLMResult(
            text=text,
            parsed=parsed,
            json_error=json_error,
            prompt_tokens=count_tokens_approx(prompt_text),
            completion_tokens=count_tokens_approx(text),
            latency_s=time.perf_counter() - started,
            adapter=request.adapter,
            backend=self.name,
        )


class SyncBackend:
    """Blocking wrapper over an async backend (for scripts and sync apps)."""

    def __init__(self, backend: LLMBackend) -> None:
        self.backend = backend

    def generate(self, request: LLMRequest) -> LLMResult:
        return run_sync(self.backend.generate(request))

    def close(self) -> None:
        run_sync(self.backend.aclose())
