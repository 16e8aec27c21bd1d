"""Transient database failures: telling them apart, retrying them, and waiting them out.

A PostgreSQL server may drop connections (``pg_terminate_backend``, a restart, a failover,
a network cut) or refuse new ones for a while. Pooled connections are pinged before use, so
a dropped idle connection is simply replaced; a call that was using one when it dropped is
tried again with backoff for the engine's ``DatabaseConfig.retry_s``, then fails with
:class:`~trellis.memory.errors.DatabaseUnavailable`. A write whose COMMIT was cut off is
never retried blindly (it may have been applied): it raises with ``commit_unknown`` set.
"""

from __future__ import annotations

import contextlib
import functools
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from trellis.memory.errors import DatabaseUnavailable

__all__ = [
    "describe_db_error",
    "is_transient",
    "retry_budget",
    "retry_transient",
    "retrying_method",
    "set_retry_budget",
    "wait_until_reachable",
    "write_transaction",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


_RETRY_BUDGETS: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()
_DEFAULT_RETRY_S = 30.0
"""``DatabaseConfig.retry_s`` by default (engines made elsewhere get this budget)."""


def set_retry_budget(engine: Engine, seconds: float) -> None:
    """Record the retry budget of an engine (``make_engine`` does, from its config)."""
    _RETRY_BUDGETS[engine] = seconds


def retry_budget(engine: Engine | None) -> float:
    """Seconds of retries the engine's :class:`DatabaseConfig` allows (``retry_s``)."""
    if engine is None:
        return float(_DEFAULT_RETRY_S)
    return _RETRY_BUDGETS.get(engine, float(_DEFAULT_RETRY_S))


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found and len(found) < 20:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a lost or unreachable database connection,
    something that can succeed when tried again: a server that dropped the connection
    (``pg_terminate_backend``, a restart, a network cut), refused or timed out a new one,
    or rolled a transaction back for a conflict. Errors in the query or the data are not."""
    for item in _chain(exc):
        if isinstance(item, DatabaseUnavailable):
            return True
        if isinstance(item, DBAPIError) and item.connection_invalidated:
            return True
        module = type(item).__module__
        if module.startswith(("psycopg", "psycopg_pool")):
            import psycopg

            if isinstance(item, psycopg.OperationalError | psycopg.InterfaceError):
                return True
            if type(item).__name__ in ("PoolTimeout", "PoolClosed", "TooManyRequests"):
                return True
        if module == "sqlite3" and "locked" in str(item):
            return True
    return False


def describe_db_error(exc: BaseException) -> str:
    """A short description of a database failure: the driver's error class and the first
    line of its message (statement parameters are never part of it)."""
    for item in _chain(exc):
        if type(item).__module__.startswith(("psycopg", "sqlite3")):
            first = (str(item).strip().splitlines() or [""])[0]
            return f"{type(item).__name__}: {first[:160]}"
    if isinstance(exc, DatabaseUnavailable):
        return exc.detail
    return type(exc).__name__


_retrying = threading.local()


def retry_transient(
    call: Callable[[], T],
    *,
    budget_s: float | None = None,
    engine: Engine | None = None,
    task_id: str | None = None,
) -> T:
    """``call()``, tried again with exponential backoff (50 ms doubling to 2 s, with jitter)
    while it fails with a transient database error, for up to ``budget_s`` seconds (default:
    the engine's ``retry_s``); then :class:`DatabaseUnavailable`. Nested calls do not retry
    on their own: the outermost one does. A commit whose outcome is unknown is not retried."""
    if getattr(_retrying, "active", False):
        return call()
    budget = retry_budget(engine) if budget_s is None else budget_s
    started = time.monotonic()
    delay = 0.05
    _retrying.active = True
    try:
        while True:
            try:
                return call()
            except Exception as exc:
                if not is_transient(exc) or getattr(exc, "commit_unknown", False):
                    raise
                waited = time.monotonic() - started
                if waited + delay > budget:
                    if isinstance(exc, DatabaseUnavailable):
                        raise
                    raise DatabaseUnavailable(
                        describe_db_error(exc), task_id=task_id, waited_s=waited
                    ) from exc
                time.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)
    finally:
        _retrying.active = False


def wait_until_reachable(
    engine: Engine, *, budget_s: float | None = None, task_id: str | None = None
) -> float:
    """Block until the database answers ``SELECT 1`` (retrying with backoff); the seconds
    waited. :class:`DatabaseUnavailable` when it does not answer within ``budget_s``."""
    started = time.monotonic()

    def ping() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    retry_transient(ping, budget_s=budget_s, engine=engine, task_id=task_id)
    return time.monotonic() - started


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """Like ``engine.begin()``, but a connection lost during COMMIT is told apart from one
    lost before it: only the latter is certainly rolled back and safe to retry, the former
    raises :class:`DatabaseUnavailable` with ``commit_unknown`` set."""
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                transaction.rollback()
            raise
        try:
            transaction.commit()
        except Exception as exc:
            if is_transient(exc):
                raise DatabaseUnavailable(describe_db_error(exc), commit_unknown=True) from exc
            raise


def retrying_method(method: F) -> F:
    """Retry a store method on a dropped or unreachable database (:func:`retry_transient`,
    with the object's ``retry_s`` and ``engine``): reads always, writes when the failure
    came before COMMIT."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        return retry_transient(
            functools.partial(method, self, *args, **kwargs),
            budget_s=getattr(self, "retry_s", None),
            engine=self.engine,
        )

    return wrapper  # type: ignore[return-value]
