"""Record and replay LLM calls: deterministic re-runs without a model.

:class:`RecordingBackend` wraps any backend and keeps every (request, result) pair;
:class:`ReplayBackend` answers a run from such pairs, in order. A request matches its
recording when adapter, prompt or messages, and JSON schema are the same (sampling and
timeouts may differ); anything else raises :class:`ReplayMismatchError` naming both sides.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence

from trellis.adapters._backend import BackendBase, LLMBackend, LLMRequest, LLMResult
from trellis.adapters.errors import ReplayMismatchError

__all__ = ["RecordingBackend", "ReplayBackend", "describe_request", "request_fingerprint"]


def request_fingerprint(request: LLMRequest) -> str:
    """Hash of what determines the answer: adapter, prompt or messages, and schema."""
    payload = {
        "adapter": request.adapter,
        "prompt": request.prompt,
        "messages": [m.model_dump() for m in request.messages] if request.messages else None,
        "schema": request.json_schema,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def describe_request(request: LLMRequest, limit: int = 80) -> str:
    """A short human-readable summary of a request, for error messages."""
    if request.prompt is not None:
        text = request.prompt
    else:
        text = " | ".join(f"{m.role}: {m.content}" for m in request.messages or ())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    schema = ", with a JSON schema" if request.json_schema is not None else ""
    return f"adapter={request.adapter or 'base'}{schema}: {text!r}"


class ReplayBackend(BackendBase):
    """Answers from recorded results, in order; ``remaining`` counts what is left."""

    def __init__(
        self, recorded: Sequence[tuple[LLMRequest | str, LLMResult]], *, name: str = "replay"
    ) -> None:
        self.name = name
        self._calls: list[tuple[str, str, LLMResult]] = []
        for key, result in recorded:
            if isinstance(key, LLMRequest):
                self._calls.append((request_fingerprint(key), describe_request(key), result))
            else:
                self._calls.append((key, f"fingerprint {key[:12]}", result))
        self._position = 0
        self._lock = asyncio.Lock()

    @property
    def remaining(self) -> int:
        """Recorded calls not replayed yet."""
        return len(self._calls) - self._position

    async def generate(self, request: LLMRequest) -> LLMResult:
        async with self._lock:
            index = self._position
            if index >= len(self._calls):
                raise ReplayMismatchError(
                    f"replay exhausted: {len(self._calls)} calls were recorded, and the run "
                    f"asked for another ({describe_request(request)}); the code or its inputs "
                    "changed since the recording, so record the run again"
                )
            expected_key, expected, result = self._calls[index]
            if request_fingerprint(request) != expected_key:
                raise ReplayMismatchError(
                    f"replay diverged at call {index + 1}: recorded {expected}, got "
                    f"{describe_request(request)}; the code or its inputs changed since the "
                    "recording, so record the run again"
                )
            self._position = index + 1
        return result.model_copy(update={"backend": self.name})


class RecordingBackend(BackendBase):
    """Passes requests to ``inner`` and keeps every (request, result) pair in ``recorded``."""

    def __init__(self, inner: LLMBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.recorded: list[tuple[LLMRequest, LLMResult]] = []

    async def generate(self, request: LLMRequest) -> LLMResult:
        result = await self.inner.generate(request)
        self.recorded.append((request, result))
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()
