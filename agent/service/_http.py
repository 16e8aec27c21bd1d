"""The HTTP API of ``trellis serve`` (FastAPI), with the process's workers in its lifespan.

Every endpoint but ``/healthz``, ``/readyz`` and the published ``/openapi.json`` needs
``Authorization: Bearer <token>``; the token decides the user, and a user only ever sees
their own tasks, trees, events and reminders (another user's task is a plain 404). Bodies
are limited in size before they are parsed; user text is stored and shown, never executed;
adapter paths must lie under the configured roots.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, text

from trellis.adapters import AdapterRecord, AdapterRegistry
from trellis.adapters.errors import DuplicateAdapterError, UnknownAdapterError
from trellis.agent.errors import NoPendingApprovalError
from trellis.agent.service._errors import TaskStateError, UnknownProfileError
from trellis.agent.service._metrics import CONTENT_TYPE, ServiceMetrics
from trellis.agent.service._profiles import available_profiles, get_profile
from trellis.agent.service._queue import TERMINAL, QueuedTask, QueueState, TaskQueue
from trellis.agent.service._queue_log import EventLog, Reminder, ReminderBook
from trellis.agent.service._runtime import open_database
from trellis.agent.service._settings import ServiceSettings
from trellis.agent.service._worker import WorkerPool
from trellis.memory import NotFoundError, TaskStatus, TaskStore, check_schema
from trellis.memory.errors import PayloadTooLargeError, RuntimeFailure, TrellisError, UsageError

__all__ = ["TaskSubmission", "create_app"]

log = logging.getLogger("trellis.service")

_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
_SSE_KEEPALIVE_S = 10.0


class TaskSubmission(BaseModel):
    """A task to run."""

    model_config = ConfigDict(extra="forbid")

    goal: str = Field(default="", max_length=100_000)
    """What to achieve (may be empty for environment profiles that set their own goal)."""
    reminders: list[Annotated[str, Field(max_length=10_000)]] = Field(
        default_factory=list, max_length=1000
    )
    """Reminders for this task, added to the user's stored ones."""
    profile: str | None = Field(default=None, max_length=64)
    """Skill/environment profile; None: the service default."""
    idempotency_key: str | None = Field(default=None, max_length=200)
    """Client key: resubmitting with it returns the first task instead of a new one."""


class AdapterSubmission(BaseModel):
    """An adapter folder to register."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    """Adapter name."""
    path: str = Field(max_length=4096)
    """PEFT folder; must lie under one of the service's adapter roots."""
    description: str = Field(max_length=2000)
    """What the adapter is for."""
    examples: list[Annotated[str, Field(max_length=2000)]] = Field(max_length=200)
    """Example step texts it handles well."""
    tags: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=50)
    """Free-form labels."""


class ReminderSubmission(BaseModel):
    """A standing reminder."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=10_000)
    """What to remember for every task."""


class _AuthError(Exception):
    pass


class _Services:
    """What the endpoints use; built in the lifespan."""

    def __init__(self, settings: ServiceSettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.tokens = settings.user_tokens()
        self.queue = TaskQueue(engine, lease_s=settings.lease_s, max_attempts=settings.max_attempts)
        self.events = EventLog(engine)
        self.reminders = ReminderBook(engine, max_chars=settings.max_reminder_chars)
        self.store = TaskStore(engine)
        self.metrics = ServiceMetrics(self.queue.counts)
        # Adapter folders are confined to TRELLIS_ADAPTER_ROOTS (default TRELLIS_HOME/adapters).
        self.adapters = AdapterRegistry(engine, migrate=False)
        self.pool: WorkerPool | None = None


def _error(status: int, kind: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers or None
    )


def _status_of(exc: TrellisError) -> tuple[int, str]:
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


class _BodyLimit:
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
        limit = self.limit
        too_large = _error(413, "too_large", f"request body over {limit} bytes")
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


def services_of(request: Request) -> _Services:
    services: _Services = request.app.state.services
    return services


def user(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    services = services_of(request)
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _AuthError("missing bearer token")
    found: str | None = None
    for known, owner in services.tokens.items():
        # Compare against every token so timing says nothing about which one is close.
        if hmac.compare_digest(known.encode(), token.strip().encode()):
            found = owner
    if found is None:
        raise _AuthError("invalid token")
    return found


User = Annotated[str, Depends(user)]
Services = Annotated[_Services, Depends(services_of)]


def create_app(
    settings: ServiceSettings, *, engine: Engine | None = None, run_workers: bool = True
) -> FastAPI:
    """The ASGI app: the API, and ``settings.workers`` task loops when ``run_workers``."""
    settings.user_tokens()  # refuse to build an open service

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = engine if engine is not None else await asyncio.to_thread(open_database, settings)
        services = await asyncio.to_thread(_Services, settings, db)
        app.state.services = services
        runner: asyncio.Task[list[str]] | None = None
        if run_workers and settings.workers > 0:
            services.pool = WorkerPool(settings, db, metrics=services.metrics)
            runner = asyncio.create_task(services.pool.run())
        log.info("service started", extra={"workers": settings.workers if runner else 0})
        try:
            yield
        finally:
            if services.pool is not None and runner is not None:
                services.pool.stop()
                await runner
                await services.pool.close()
            log.info("service stopped")

    api = FastAPI(
        title="Trellis",
        version="1",
        summary="Agentic task planning: submit goals, follow their Task Memory Tree.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    @api.exception_handler(_AuthError)
    async def _auth(_request: Request, exc: _AuthError) -> JSONResponse:
        return _error(401, "unauthorized", str(exc), **{"WWW-Authenticate": "Bearer"})

    @api.exception_handler(_Forbidden)
    async def _forbidden(_request: Request, exc: _Forbidden) -> JSONResponse:
        return _error(403, "forbidden", str(exc))

    @api.exception_handler(TrellisError)
    async def _trellis(_request: Request, exc: TrellisError) -> JSONResponse:
        status, kind = _status_of(exc)
        if status >= 500:
            log.exception("request failed", exc_info=exc)
        return _error(status, kind, str(exc) if status < 500 else "internal error")

    @api.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, "malformed_json", "the request body is not valid JSON")
        # The offending input is left out: it is the client's own data.
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in errors]
        return JSONResponse(
            {"error": {"type": "invalid", "message": "invalid request", "details": details}},
            status_code=422,
        )

    @api.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return _error(500, "internal", "internal error")

    # --- operations ------------------------------------------------------------------------

    @api.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["operations"], response_model=None)
    async def readyz(services: Services) -> dict[str, str] | JSONResponse:
        """The database answers and has the current schema."""

        def check() -> None:
            with services.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            check_schema(services.engine)

        try:
            await asyncio.to_thread(check)
        except Exception as exc:
            return _error(503, "not_ready", f"database not ready: {type(exc).__name__}")
        return {"status": "ready"}

    @api.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics(services: Services, _user: User) -> Response:
        """Prometheus metrics (tasks by state, queue depth, latencies, router decisions)."""
        body = await asyncio.to_thread(services.metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    # --- tasks -----------------------------------------------------------------------------

    @api.post("/v1/tasks", tags=["tasks"], status_code=201, response_model=QueuedTask)
    async def submit(
        submission: TaskSubmission,
        services: Services,
        who: User,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Any:
        """Submit a task; an idempotency key already used returns the first task (200)."""
        key = submission.idempotency_key or idempotency_key
        result = await asyncio.to_thread(_submit, services, who, submission, key)
        task, created = result
        return JSONResponse(jsonable_encoder(task), status_code=201 if created else 200)

    @api.get("/v1/tasks", tags=["tasks"], response_model=list[QueuedTask])
    async def list_tasks(
        services: Services,
        who: User,
        state: QueueState | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[QueuedTask]:
        """My tasks, newest first."""
        return await asyncio.to_thread(services.queue.list, who, state=state, limit=limit)

    @api.get("/v1/tasks/{task_id}", tags=["tasks"], response_model=QueuedTask)
    async def status(task_id: str, services: Services, who: User) -> QueuedTask:
        """A task's status."""
        return await asyncio.to_thread(services.queue.get, task_id, user_id=who)

    @api.get("/v1/tasks/{task_id}/tree", tags=["tasks"])
    async def tree(task_id: str, services: Services, who: User) -> dict[str, Any]:
        """A task's Task Memory Tree: every node, superseded ones marked."""

        def read() -> dict[str, Any]:
            task = services.queue.get(task_id, user_id=who)
            nodes = services.store.nodes(task_id, include_superseded=True)
            return {
                "task": jsonable_encoder(task),
                "nodes": [jsonable_encoder(dataclasses.asdict(n)) for n in nodes],
            }

        return await asyncio.to_thread(read)

    @api.post("/v1/tasks/{task_id}/cancel", tags=["tasks"], response_model=QueuedTask)
    async def cancel(task_id: str, services: Services, who: User) -> QueuedTask:
        """Cancel a task (a running one stops when its current run ends)."""

        def run() -> QueuedTask:
            task = services.queue.cancel(task_id, user_id=who)
            if task.state is QueueState.CANCELLED:
                services.store.set_task_status(task_id, TaskStatus.CANCELLED, cause="cancelled")
            return task

        return await asyncio.to_thread(run)

    @api.post("/v1/tasks/{task_id}/approve", tags=["tasks"], response_model=QueuedTask)
    async def approve(task_id: str, services: Services, who: User) -> QueuedTask:
        """Approve the call the task waits for; a worker continues it."""
        return await asyncio.to_thread(services.queue.decide, task_id, user_id=who, approved=True)

    @api.post("/v1/tasks/{task_id}/reject", tags=["tasks"], response_model=QueuedTask)
    async def reject(task_id: str, services: Services, who: User) -> QueuedTask:
        """Reject the call the task waits for (the step fails; the planner may repair)."""
        return await asyncio.to_thread(services.queue.decide, task_id, user_id=who, approved=False)

    @api.get("/v1/tasks/{task_id}/events", tags=["tasks"], response_class=StreamingResponse)
    async def events(
        task_id: str,
        services: Services,
        who: User,
        after: Annotated[int, Query(ge=0)] = 0,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-Sent Events of a task, from ``after`` (or ``Last-Event-ID``) on."""
        await asyncio.to_thread(services.queue.get, task_id, user_id=who)
        if last_event_id is not None and last_event_id.isdigit():
            after = max(after, int(last_event_id))
        return StreamingResponse(
            _event_stream(services, task_id, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # --- profiles, adapters, reminders -----------------------------------------------------

    @api.get("/v1/profiles", tags=["profiles"])
    async def profiles(services: Services, _user: User) -> list[str]:
        """Profiles this service runs."""
        return available_profiles(services.settings)

    @api.get("/v1/adapters", tags=["adapters"], response_model=list[AdapterRecord])
    async def list_adapters(services: Services, _user: User) -> list[AdapterRecord]:
        """Registered adapters."""
        return await asyncio.to_thread(services.adapters.list)

    @api.post("/v1/adapters", tags=["adapters"], status_code=201, response_model=AdapterRecord)
    async def add_adapter(
        submission: AdapterSubmission, services: Services, who: User
    ) -> AdapterRecord:
        """Register an adapter folder from under the adapter roots (admins only)."""
        _require_admin(services, who)
        if "\x00" in submission.path:
            raise UsageError("the adapter path contains a NUL byte")
        return await asyncio.to_thread(
            services.adapters.add,
            submission.name,
            submission.path,
            description=submission.description,
            examples=submission.examples,
            tags=submission.tags,
        )

    @api.delete("/v1/adapters/{name}", tags=["adapters"], response_model=AdapterRecord)
    async def remove_adapter(name: str, services: Services, who: User) -> AdapterRecord:
        """Unregister an adapter (admins only; its folder is left alone)."""
        _require_admin(services, who)
        return await asyncio.to_thread(services.adapters.remove, name)

    @api.get("/v1/reminders", tags=["reminders"], response_model=list[Reminder])
    async def my_reminders(services: Services, who: User) -> list[Reminder]:
        """My standing reminders."""
        return await asyncio.to_thread(services.reminders.list, who)

    @api.post("/v1/reminders", tags=["reminders"], status_code=201, response_model=Reminder)
    async def add_reminder(
        submission: ReminderSubmission, services: Services, who: User
    ) -> Reminder:
        """Add a standing reminder (applied to every task I submit from now on)."""
        return await asyncio.to_thread(services.reminders.add, who, submission.text)

    @api.delete("/v1/reminders/{reminder_id}", tags=["reminders"], status_code=204)
    async def remove_reminder(reminder_id: int, services: Services, who: User) -> Response:
        """Delete one of my reminders."""
        await asyncio.to_thread(services.reminders.remove, who, reminder_id)
        return Response(status_code=204)

    api.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    return api


class _Forbidden(Exception):
    pass


def _require_admin(services: _Services, who: str) -> None:
    if who not in services.settings.admin_users:
        raise _Forbidden("adapter management is for administrators (TRELLIS_ADMIN_USERS)")


def _submit(
    services: _Services, who: str, submission: TaskSubmission, key: str | None
) -> tuple[QueuedTask, bool]:
    settings = services.settings
    if key is not None and not _KEY.match(key):
        raise UsageError("idempotency_key must be 1-200 characters of letters, digits and . _ : -")
    if key is not None:
        existing = services.queue.find(who, key)
        if existing is not None:
            return existing, False
    profile = get_profile(submission.profile or settings.default_profile, settings)
    goal, extra = profile.prepare(submission.goal.strip())
    if not goal or len(goal) > settings.max_goal_chars:
        raise UsageError(f"the goal must be 1 to {settings.max_goal_chars} characters")
    stored = [r.text for r in services.reminders.list(who)]
    reminders = stored + [r.strip() for r in submission.reminders if r.strip()]
    if len(reminders) > settings.max_reminders:
        raise UsageError(
            f"{len(reminders)} reminders (stored and given) exceed the limit of "
            f"{settings.max_reminders}; delete some or send fewer"
        )
    for reminder in reminders:
        if len(reminder) > settings.max_reminder_chars:
            raise UsageError(f"a reminder is over {settings.max_reminder_chars} characters")
    metadata = {"reminders": reminders, "profile": profile.name, **extra}
    record = services.store.create_task(goal, user_id=who, metadata=metadata)
    task, created = services.queue.enqueue(
        record.id,
        user_id=who,
        goal=goal,
        profile=profile.name,
        reminders=reminders,
        idempotency_key=key,
    )
    if not created:
        # Lost a race with the same key: the tree made for this request is not needed.
        services.store.delete_task(record.id)
    return task, created


async def _event_stream(services: _Services, task_id: str, after: int) -> AsyncIterator[bytes]:
    settings = services.settings
    deadline = time.monotonic() + settings.sse_max_s
    last_sent = time.monotonic()
    while time.monotonic() < deadline:
        batch = await asyncio.to_thread(services.events.read, task_id, after=after, limit=100)
        for event in batch:
            after = event.id
            data = json.dumps(event.payload, separators=(",", ":"))
            # The client's pace sets ours: this await waits while its socket buffer is full.
            yield f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()
            last_sent = time.monotonic()
        if batch:
            continue
        task = await asyncio.to_thread(services.queue.get, task_id)
        if task.state in TERMINAL or task.state is QueueState.AWAITING_APPROVAL:
            tail = await asyncio.to_thread(services.events.read, task_id, after=after, limit=1)
            if not tail:
                yield f"event: end\ndata: {json.dumps({'state': task.state.value})}\n\n".encode()
                return
            continue
        if time.monotonic() - last_sent > _SSE_KEEPALIVE_S:
            yield b": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(settings.sse_poll_s)
