"""Process plumbing of the service: the database (migrated under a lock) and JSON logs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from sqlalchemy import Engine, text

from agent._service_settings import ServiceSettings
from memory import DatabaseConfig, make_engine, upgrade

__all__ = ["JsonFormatter", "configure_logging", "open_database"]

# Any fixed number works: it only has to be the same in every Trellis process.
_MIGRATION_LOCK = 0x7472656C6C6973


def open_database(settings: ServiceSettings) -> Engine:
    """The engine for the settings' database, migrated when ``settings.migrate``."""
    if settings.database_url is None:
        engine = make_engine(None)
    else:
        # Every loop holds a connection while it claims or settles; leave room for HTTP.
        engine = make_engine(
            DatabaseConfig(url=settings.database_url, pool_size=max(5, settings.workers + 4))
        )
    if settings.migrate:
        migrate_locked(engine)
    return engine


def migrate_locked(engine: Engine) -> None:
    """Apply pending migrations; on PostgreSQL one process at a time (advisory lock)."""
    if engine.url.get_backend_name() != "postgresql":
        upgrade(engine)
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
        connection.commit()
        try:
            upgrade(engine)
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
            connection.commit()


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every ``extra`` field."""

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
