"""The LLM backend protocol: one request/result shape for every way of running a model.

Backends are async (``generate``, ``stream``); :class:`SyncBackend` is the thin sync wrapper.
:class:`FunctionBackend` is a scripted model for tests and fixed procedures: it answers with
a Python function, and goes through the same request/result types as the real backends.

Every model answer is parsed behind one guard, :func:`parse_model_json` (and
:func:`check_model_value` for an already parsed value): the size is checked before parsing,
nesting depth and number length are bounded, NaN, infinities, NUL characters and lone
surrogates are refused, and every failure is a :class:`ModelRetry` with a short reason
(model text in messages is clipped by :func:`clip_text`). Nothing a model says can raise
anything else.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trellis.memory import run_sync
from trellis.memory.errors import ModelRetry

__all__ = [
    "BackendBase",
    "FunctionBackend",
    "LLMBackend",
    "LLMRequest",
    "LLMResult",
    "Message",
    "SamplingParams",
    "SyncBackend",
    "check_model_value",
    "clip_text",
    "count_tokens_approx",
    "parse_json_text",
    "parse_model_json",
]

MAX_ANSWER_CHARS = 200_000
"""Longest model answer parsed as JSON (a plan or a call is a few hundred characters)."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in an answer."""
MAX_NUMBER_CHARS = 40
"""Longest number literal accepted (Python refuses integers over 4,300 digits anyway)."""


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


def clip_text(text: object, limit: int = 120) -> str:
    """``repr`` of (model) text, cut to about ``limit`` characters for messages and records."""
    value = text if isinstance(text, str) else str(text)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def parse_json_text(text: str) -> tuple[Any, str | None]:
    """Parse JSON output; returns (value, None) or (None, a message naming the problem).

    Never raises: the checks of :func:`parse_model_json` apply."""
    try:
        return parse_model_json(text), None
    except ModelRetry as exc:
        return None, str(exc)


class _Refused(ValueError):
    pass


def _number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(literal: str) -> Any:
        if len(literal) > MAX_NUMBER_CHARS:
            raise _Refused(f"a number of {len(literal)} characters (at most {MAX_NUMBER_CHARS})")
        value = kind(literal)
        if isinstance(value, float) and not math.isfinite(value):
            raise _Refused(f"a number out of range ({literal[:20]})")
        return value

    return parse


def _constant(name: str) -> Any:
    raise _Refused(f"{name}, which is not a JSON number")


_BRACKETS = re.compile(r'[\[\]{}"\\]')


def _depth(text: str) -> int:
    """Deepest nesting of arrays and objects outside strings (a scan, no recursion)."""
    depth = deepest = 0
    in_string = False
    skip = -1  # a backslash in a string escapes the next character, whatever it is
    for match in _BRACKETS.finditer(text):
        at = match.start()
        if at < skip:
            continue
        char = match.group()
        if in_string:
            if char == "\\":
                skip = at + 2
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_model_json(
    text: str, *, max_chars: int = MAX_ANSWER_CHARS, max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """A model's JSON answer, parsed behind limits; :class:`ModelRetry` with a short reason
    (never another exception) when it is too long, too deep, not JSON, or holds what cannot
    be stored (NaN, infinities, huge numbers, NUL characters, lone surrogates)."""
    if not isinstance(text, str):
        raise ModelRetry(f"the answer is not text but {type(text).__name__}")
    if len(text) > max_chars:
        raise ModelRetry(
            f"the answer is {len(text)} characters, over the limit of {max_chars}; answer "
            "with one short JSON object"
        )
    deepest = _depth(text)
    if deepest > max_depth:
        raise ModelRetry(f"the answer nests {deepest} levels deep (at most {max_depth})")
    try:
        value = json.loads(
            text,
            parse_int=_number(int),
            parse_float=_number(float),
            parse_constant=_constant,
        )
    except _Refused as exc:
        raise ModelRetry(f"the answer holds {exc}") from None
    except json.JSONDecodeError as exc:
        snippet = text[max(0, exc.pos - 20) : exc.pos + 20]
        raise ModelRetry(
            f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg} near {snippet!r}"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ModelRetry(f"the answer cannot be parsed ({type(exc).__name__})") from None
    return check_model_value(value, max_depth=max_depth)


def check_model_value(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``value`` when it is plain JSON data that can be stored (see :func:`parse_model_json`),
    else :class:`ModelRetry` with a short reason. For values a backend parsed itself."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise ModelRetry(f"the answer nests more than {max_depth} levels deep")
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if item.bit_length() > 128:
                raise ModelRetry("the answer holds a number too large to use")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ModelRetry("the answer holds NaN or an infinity, which JSON cannot store")
        elif isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise ModelRetry("the answer has an object key that is not a string")
                _check_text(key)
                stack.append((inner, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((inner, depth + 1) for inner in item)
        else:
            raise ModelRetry(f"the answer holds a {type(item).__name__}, which is not JSON data")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise ModelRetry("the answer holds a NUL character; use plain text")
    if _SURROGATE.search(text):
        raise ModelRetry("the answer holds a lone surrogate (invalid Unicode); use plain text")


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
