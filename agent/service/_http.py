"""The HTTP API of ``trellis serve`` (FastAPI), with the process's workers in its lifespan.

Every endpoint but ``/healthz``, ``/readyz`` and the published ``/openapi.json`` needs
``Authorization: Bearer <token>``; the token decides the user, and a user only ever sees
their own tasks, trees, events, reminders and task counts (another user's task is a plain
404; adapter folders and everyone's counts are for administrators). Bodies are limited in
size before they are parsed; user text is stored and shown, never executed nor logged;
text with NUL characters and ids out of range are refused with a 4xx; every error has the
shape ``{"error": {"type", "message"}}``; adapter paths must lie under the configured roots.
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
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Engine, text
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.exceptions import HTTPException as StarletteHTTPException

from trellis.adapters import AdapterRecord, AdapterRegistry
from trellis.agent.service._http_io import (
    MAX_ID,
    AdapterInfo,
    AdapterName,
    AdapterSubmission,
    BodyLimit,
    ReminderSubmission,
    TaskId,
    TaskSubmission,
    error,
    status_of,
    unavailable,
)
from trellis.agent.service._metrics import CONTENT_TYPE, ServiceMetrics
from trellis.agent.service._profiles import available_profiles, get_profile
from trellis.agent.service._queue import TERMINAL, QueuedTask, QueueState, TaskQueue
from trellis.agent.service._queue_log import EventLog, Reminder, ReminderBook
from trellis.agent.service._runtime import open_database
from trellis.agent.service._settings import ServiceSettings
from trellis.agent.service._worker import WorkerPool
from trellis.memory import (
    DatabaseUnavailable,
    TaskStatus,
    TaskStore,
    check_schema,
    is_transient,
)
from trellis.memory.errors import TrellisError, UsageError

__all__ = ["TaskSubmission", "create_app"]

log = logging.getLogger("trellis.service")

_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
_SSE_KEEPALIVE_S = 10.0
_HTTP_RETRY_S = 2.0
"""A request retries a dropped connection this long, then answers 503 (workers wait longer)."""


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
        self.store = TaskStore(engine, retry_s=_HTTP_RETRY_S)
        self.metrics = ServiceMetrics(self.queue.counts)
        # Adapter folders are confined to TRELLIS_ADAPTER_ROOTS (default TRELLIS_HOME/adapters).
        self.adapters = AdapterRegistry(engine, migrate=False)
        self.pool: WorkerPool | None = None


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
        return error(401, "unauthorized", str(exc), **{"WWW-Authenticate": "Bearer"})

    @api.exception_handler(_Forbidden)
    async def _forbidden(_request: Request, exc: _Forbidden) -> JSONResponse:
        return error(403, "forbidden", str(exc))

    @api.exception_handler(TrellisError)
    async def _trellis(_request: Request, exc: TrellisError) -> JSONResponse:
        if isinstance(exc, DatabaseUnavailable):
            log.warning("request failed: database unavailable", extra={"error": exc.detail})
            return unavailable()
        status, kind = status_of(exc)
        if status >= 500:
            log.exception("request failed", exc_info=exc)
        return error(status, kind, str(exc) if status < 500 else "internal error")

    @api.exception_handler(StarletteHTTPException)
    async def _httperror(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}
        kind = kinds.get(exc.status_code, "invalid" if exc.status_code < 500 else "internal")
        message = str(exc.detail) if exc.status_code < 500 else "internal error"
        return error(exc.status_code, kind, message, **dict(exc.headers or {}))

    @api.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error(400, "malformed_json", "the request body is not valid JSON")
        # The offending input is left out: it is the client's own data.
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in errors]
        return JSONResponse(
            {"error": {"type": "invalid", "message": "invalid request", "details": details}},
            status_code=422,
        )

    @api.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):
            log.warning("request failed: database unavailable", extra={"error": type(exc).__name__})
            return unavailable()
        log.exception("unexpected error", exc_info=exc)
        return error(500, "internal", "internal error")

    # --- operations ------------------------------------------------------------------------

    @api.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @api.get("/readyz", tags=["operations"], response_model=None)
    async def readyz(services: Services) -> dict[str, str] | JSONResponse:
        """The database answers and has the current schema (and this process's workers
        reach it)."""

        def check() -> None:
            with services.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            check_schema(services.engine)

        try:
            await asyncio.to_thread(check)
        except Exception as exc:
            return error(503, "not_ready", f"database not ready: {type(exc).__name__}")
        if services.pool is not None and services.pool.database_down_since is not None:
            return error(503, "not_ready", "the workers cannot reach the database yet")
        return {"status": "ready"}

    @api.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics(services: Services, who: User) -> Response:
        """Prometheus metrics: my tasks by state and queue depth (everyone's for
        administrators), this process's latencies and router decisions."""
        scope = None if who in services.settings.admin_users else who
        body = await asyncio.to_thread(services.metrics.render, scope)
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
    async def status(task_id: TaskId, services: Services, who: User) -> QueuedTask:
        """A task's status."""
        return await asyncio.to_thread(services.queue.get, task_id, user_id=who)

    @api.get("/v1/tasks/{task_id}/tree", tags=["tasks"])
    async def tree(task_id: TaskId, services: Services, who: User) -> dict[str, Any]:
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
    async def cancel(task_id: TaskId, services: Services, who: User) -> QueuedTask:
        """Cancel a task (a running one stops when its current run ends)."""

        def run() -> QueuedTask:
            task = services.queue.cancel(task_id, user_id=who)
            if task.state is QueueState.CANCELLED:
                services.store.set_task_status(task_id, TaskStatus.CANCELLED, cause="cancelled")
            return task

        return await asyncio.to_thread(run)

    @api.post("/v1/tasks/{task_id}/approve", tags=["tasks"], response_model=QueuedTask)
    async def approve(task_id: TaskId, services: Services, who: User) -> QueuedTask:
        """Approve the call the task waits for; a worker continues it."""
        return await asyncio.to_thread(services.queue.decide, task_id, user_id=who, approved=True)

    @api.post("/v1/tasks/{task_id}/reject", tags=["tasks"], response_model=QueuedTask)
    async def reject(task_id: TaskId, services: Services, who: User) -> QueuedTask:
        """Reject the call the task waits for (the step fails; the planner may repair)."""
        return await asyncio.to_thread(services.queue.decide, task_id, user_id=who, approved=False)

    @api.get("/v1/tasks/{task_id}/events", tags=["tasks"], response_class=EventSourceResponse)
    async def events(
        task_id: TaskId,
        services: Services,
        who: User,
        after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventSourceResponse:
        """Server-Sent Events of a task, from ``after`` (or ``Last-Event-ID``) on."""
        await asyncio.to_thread(services.queue.get, task_id, user_id=who)
        if last_event_id is not None and last_event_id.isdigit() and len(last_event_id) < 30:
            after = min(max(after, int(last_event_id)), MAX_ID)
        return EventSourceResponse(
            _event_stream(services, task_id, after),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            ping=_SSE_KEEPALIVE_S,
            ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
            sep="\n",
        )

    # --- profiles, adapters, reminders -----------------------------------------------------

    @api.get("/v1/profiles", tags=["profiles"])
    async def profiles(services: Services, _user: User) -> list[str]:
        """Profiles this service runs."""
        return available_profiles(services.settings)

    @api.get(
        "/v1/adapters", tags=["adapters"], response_model=list[AdapterRecord] | list[AdapterInfo]
    )
    async def list_adapters(
        services: Services, who: User
    ) -> list[AdapterRecord] | list[AdapterInfo]:
        """Registered adapters (their folders for administrators only)."""
        records = await asyncio.to_thread(services.adapters.list)
        if who in services.settings.admin_users:
            return records
        return [AdapterInfo.of(r) for r in records]

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
    async def remove_adapter(name: AdapterName, services: Services, who: User) -> AdapterRecord:
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
    async def remove_reminder(
        reminder_id: Annotated[int, Path(ge=1, le=MAX_ID)], services: Services, who: User
    ) -> Response:
        """Delete one of my reminders."""
        await asyncio.to_thread(services.reminders.remove, who, reminder_id)
        return Response(status_code=204)

    api.add_middleware(BodyLimit, limit=settings.max_body_bytes)
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
    # Reminders stored before NUL was refused are left out rather than failing every task.
    stored = [r.text for r in services.reminders.list(who) if "\x00" not in r.text]
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


async def _event_stream(
    services: _Services, task_id: str, after: int
) -> AsyncIterator[ServerSentEvent]:
    """The task's logged events from ``after`` on, at the client's pace (each send waits
    while its socket buffer is full), then ``event: end`` once the task settled."""
    settings = services.settings
    deadline = time.monotonic() + settings.sse_max_s
    while time.monotonic() < deadline:
        batch = await asyncio.to_thread(services.events.read, task_id, after=after, limit=100)
        for event in batch:
            after = event.id
            data = json.dumps(event.payload, separators=(",", ":"))
            yield ServerSentEvent(data=data, event=event.type, id=str(event.id), sep="\n")
        if batch:
            continue
        task = await asyncio.to_thread(services.queue.get, task_id)
        if task.state in TERMINAL or task.state is QueueState.AWAITING_APPROVAL:
            tail = await asyncio.to_thread(services.events.read, task_id, after=after, limit=1)
            if not tail:
                yield ServerSentEvent(
                    data=json.dumps({"state": task.state.value}), event="end", sep="\n"
                )
                return
            continue
        await asyncio.sleep(settings.sse_poll_s)
