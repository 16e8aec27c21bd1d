"""Process plumbing of the service: the database (migrated under a lock) and JSON logs."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
import time
import traceback
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, text

from trellis.agent.service._settings import ServiceSettings
from trellis.memory import DatabaseConfig, make_engine, upgrade

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "database_lock",
    "migrate_locked",
    "open_database",
]

# Any fixed number works: it only has to be the same in every Trellis process.
_SETUP_LOCK = 0x7472656C6C6973


def open_database(settings: ServiceSettings) -> Engine:
    """The engine for the settings' database, migrated when ``settings.migrate``."""
    if settings.database_url is None:
        engine = make_engine(None)
    else:
        # Every loop holds a connection while it claims or settles; leave room for HTTP.
        engine = make_engine(
            DatabaseConfig(
                url=settings.database_url,
                pool_size=max(5, settings.workers + 4),
                retry_s=settings.db_retry_s,
                # A paused worker's open transaction must not hold rows past its lease.
                idle_in_transaction_timeout_s=max(5.0, 2 * settings.lease_s),
            )
        )
    if settings.migrate:
        migrate_locked(engine)
    return engine


@contextlib.contextmanager
def database_lock(engine: Engine) -> Iterator[None]:
    """One process at a time across the cluster (a PostgreSQL advisory lock; no-op on SQLite).

    Schema set-up (our migrations, LangGraph's checkpointer tables) is not safe to run from
    several processes at once, and every worker process does it when it starts.
    """
    if engine.url.get_backend_name() != "postgresql":
        yield
        return
    # Autocommit and polling: a session waiting inside a transaction (or a blocked
    # statement) would hold a snapshot, and LangGraph's CREATE INDEX CONCURRENTLY in the
    # lock holder waits for every such snapshot: a deadlock PostgreSQL does not detect.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        while not connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": _SETUP_LOCK}
        ).scalar_one():
            time.sleep(0.1)
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SETUP_LOCK})


def migrate_locked(engine: Engine) -> None:
    """Apply pending migrations, one process at a time."""
    with database_lock(engine):
        upgrade(engine)


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every ``extra`` field.

    An exception is logged as its class and traceback frames without its message: messages
    may quote what users wrote (a goal, a reminder, a model's answer), and logs never carry
    user text. Statement parameters never reach messages either (``hide_parameters``).
    """

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        _kind, exc, _tb = ei
        if exc is None:
            return ""
        lines: list[str] = []
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            frames = traceback.extract_tb(current.__traceback__)
            lines.append("".join(traceback.format_list(frames)).rstrip())
            lines.append(f"{type(current).__module__}.{type(current).__qualname__}")
            current = current.__cause__ or current.__context__
            if current is not None:
                lines.append("caused by:")
        return "\n".join(line for line in lines if line)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send every log record to stderr as JSON lines (uvicorn's loggers included)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
