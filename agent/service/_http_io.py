"""What the HTTP API reads and answers: request models (plain text only), the adapter view
for users who are not administrators, the one error shape, and the body-size limit."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Path
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from trellis.adapters import AdapterRecord
from trellis.adapters.errors import DuplicateAdapterError, UnknownAdapterError
from trellis.agent.errors import NoPendingApprovalError
from trellis.agent.service._errors import TaskStateError, UnknownProfileError
from trellis.memory import NotFoundError
from trellis.memory.errors import PayloadTooLargeError, RuntimeFailure, TrellisError, UsageError

__all__ = [
    "MAX_ID",
    "AdapterInfo",
    "AdapterName",
    "AdapterSubmission",
    "BodyLimit",
    "ReminderSubmission",
    "TaskId",
    "TaskSubmission",
    "error",
    "status_of",
    "unavailable",
]

MAX_ID = 2**31 - 1  # the largest id an Integer column (reminders, events) holds
_SURROGATES = re.compile("[\ud800-\udfff]")


def _plain(value: str) -> str:
    if "\x00" in value or _SURROGATES.search(value):
        raise ValueError("must be plain text: NUL characters and invalid Unicode are refused")
    return value


Text = Annotated[str, AfterValidator(_plain)]
TaskId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
AdapterName = Annotated[str, Path(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class TaskSubmission(BaseModel):
    """A task to run."""

    model_config = ConfigDict(extra="forbid")

    goal: Text = Field(default="", max_length=100_000)
    """What to achieve (may be empty for environment profiles that set their own goal)."""
    reminders: list[Annotated[Text, Field(max_length=10_000)]] = Field(
        default_factory=list, max_length=1000
    )
    """Reminders for this task, added to the user's stored ones."""
    profile: Text | None = Field(default=None, max_length=64)
    """Skill/environment profile; None: the service default."""
    idempotency_key: Text | None = Field(default=None, max_length=200)
    """Client key: resubmitting with it returns the first task instead of a new one."""


class AdapterSubmission(BaseModel):
    """An adapter folder to register."""

    model_config = ConfigDict(extra="forbid")

    name: Text = Field(max_length=64)
    """Adapter name."""
    path: Text = Field(max_length=4096)
    """PEFT folder; must lie under one of the service's adapter roots."""
    description: Text = Field(max_length=2000)
    """What the adapter is for."""
    examples: list[Annotated[Text, Field(max_length=2000)]] = Field(max_length=200)
    """Example step texts it handles well."""
    tags: list[Annotated[Text, Field(max_length=100)]] = Field(default_factory=list, max_length=50)
    """Free-form labels."""


class ReminderSubmission(BaseModel):
    """A standing reminder."""

    model_config = ConfigDict(extra="forbid")

    text: Text = Field(max_length=10_000)
    """What to remember for every task."""


class AdapterInfo(BaseModel):
    """A registered adapter as users who are not administrators see it (no folder)."""

    model_config = ConfigDict(frozen=True)

    name: str
    """Adapter name (requests select it by this)."""
    base_model: str
    """The base model it was trained for (a folder's name only)."""
    rank: int
    """LoRA rank."""
    description: str
    """What the adapter is for."""
    examples: tuple[str, ...]
    """Example step texts it handles well."""
    tags: tuple[str, ...] = ()
    """Free-form labels."""

    @classmethod
    def of(cls, record: AdapterRecord) -> AdapterInfo:
        base = record.base_model
        if "/" in base and (base.startswith(("/", "~", ".")) or "\\" in base):
            base = base.rstrip("/").rsplit("/", 1)[-1]
        return cls(
            name=record.name,
            base_model=base,
            rank=record.rank,
            description=record.description,
            examples=record.examples,
            tags=record.tags,
        )


def error(status: int, kind: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers or None
    )


_UNAVAILABLE = "the database is unavailable; retry shortly"


def unavailable() -> JSONResponse:
    return error(503, "unavailable", _UNAVAILABLE, **{"Retry-After": "5"})


def status_of(exc: TrellisError) -> tuple[int, str]:
    if isinstance(exc, NotFoundError | UnknownAdapterError):
        return 404, "not_found"
    if isinstance(exc, TaskStateError | NoPendingApprovalError | DuplicateAdapterError):
        return 409, "conflict"
    if isinstance(exc, PayloadTooLargeError):
        return 413, "too_large"
    if isinstance(exc, UnknownProfileError | UsageError):
        return 422, "invalid"
    if isinstance(exc, RuntimeFailure):
        return 503, "unavailable"
    return 500, "internal"


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes before anything parses them."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
            nul = error(400, "invalid", "NUL characters are not allowed in URLs")
            await nul(scope, receive, send)
            return
        limit = self.limit
        too_large = error(413, "too_large", f"request body over {limit} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    await too_large(scope, receive, send)
                    return
        seen = 0
        started = False
        refused = False

        async def limited_receive() -> MutableMapping[str, Any]:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if not started and not refused:
                        refused = True
                        await too_large(scope, receive, send)
                    # The app sees a client that went away and stops reading.
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent; drop whatever the app answers
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
