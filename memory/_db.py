"""Engines, the declarative base shared by every package, and schema migrations.

Every package keeps its tables on :class:`Base` and its Alembic revisions in its own
``<package>/migrations/versions`` folder, as an independent branch labelled with the package
name. :func:`upgrade` applies all heads; :func:`check_schema` refuses a database that is
behind the code (run ``trellis db upgrade``) or ahead of it (upgrade Trellis).
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import DeclarativeBase, sessionmaker
from sqlalchemy.pool import StaticPool

from trellis.memory._paths import default_database_url
from trellis.memory._retry import set_retry_budget
from trellis.memory.errors import SchemaMismatchError, UsageError

__all__ = [
    "Base",
    "DatabaseConfig",
    "check_schema",
    "current_revisions",
    "make_engine",
    "make_sessionmaker",
    "migration_heads",
    "upgrade",
]

# Packages whose migrations make up the schema, in dependency order.
MIGRATION_PACKAGES = (
    "trellis.memory",
    "trellis.adapters",
    "trellis.planners",
    "trellis.agent",
)

_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every Trellis table (one metadata, one database)."""

    metadata = MetaData(naming_convention=_NAMING)


class DatabaseConfig(BaseModel):
    """How to reach the Trellis database."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(default_factory=default_database_url)
    """SQLAlchemy URL. SQLite file by default; ``postgresql://...`` uses psycopg 3."""
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "NORMAL"
    """SQLite ``synchronous`` pragma. NORMAL with WAL is durable across process crashes."""
    busy_timeout_ms: int = Field(default=30_000, ge=0)
    """How long SQLite waits on a locked database before failing."""
    pool_size: int = Field(default=5, ge=1)
    """Connection pool size for server databases (pooled connections are pinged before use,
    so connections the server dropped are replaced instead of failing a call)."""
    connect_timeout_s: float = Field(default=5.0, gt=0, le=300)
    """How long opening a PostgreSQL connection may take before it counts as a failure."""
    idle_in_transaction_timeout_s: float | None = Field(default=60.0, gt=0)
    """PostgreSQL ends a session that sits idle inside a transaction this long (a paused or
    hung process), so the row locks it holds cannot stall everyone else (None: never)."""
    retry_s: float = Field(default=30.0, ge=0, le=3600)
    """How long a call keeps retrying (with backoff) while the database connection drops or
    the server cannot be reached; then it raises DatabaseUnavailable (0: no retries)."""
    echo: bool = False
    """Log every SQL statement (debugging)."""


def normalize_url(url: str) -> str:
    """Map ``postgresql://`` and ``postgres://`` to the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(config: DatabaseConfig | str | None = None) -> Engine:
    """Create an engine with sensible settings for SQLite (WAL, foreign keys) or PostgreSQL."""
    if config is None:
        config = DatabaseConfig()
    elif isinstance(config, str):
        config = DatabaseConfig(url=config)
    url_text = normalize_url(config.url)
    try:
        url = make_url(url_text)
    except Exception as exc:
        raise UsageError(
            f"invalid database URL {config.url!r}: {exc}; use e.g. sqlite:///path/trellis.db "
            "or postgresql://user@host/db"
        ) from exc
    # Parameters stay out of error messages and logs: they carry user text (goals, reminders).
    kwargs: dict[str, Any] = {"echo": config.echo, "future": True, "hide_parameters": True}
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if in_memory:
            # One shared connection, or every connection would see its own empty database.
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": config.busy_timeout_ms / 1000,
            }
        engine = _create(url, kwargs, config.url)
        _install_sqlite_pragmas(engine, config, in_memory=in_memory)
        set_retry_budget(engine, config.retry_s)
        return engine
    kwargs["pool_size"] = config.pool_size
    kwargs["pool_pre_ping"] = True
    if url.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {
            "connect_timeout": max(1, math.ceil(config.connect_timeout_s))
        }
        if config.idle_in_transaction_timeout_s is not None:
            idle_ms = math.ceil(config.idle_in_transaction_timeout_s * 1000)
            connect_args["options"] = f"-c idle_in_transaction_session_timeout={idle_ms}"
        kwargs["connect_args"] = connect_args
    engine = _create(url, kwargs, config.url)
    set_retry_budget(engine, config.retry_s)
    return engine


def _create(url: Any, kwargs: dict[str, Any], text: str) -> Engine:
    try:
        return create_engine(url, **kwargs)
    except (NoSuchModuleError, ArgumentError, ImportError) as exc:
        # An unknown scheme or a driver that is not installed: name the URL and the choices.
        raise UsageError(
            f"cannot open database URL {text!r}: {exc}; Trellis stores tasks in SQLite "
            "(sqlite:///path/trellis.db) or PostgreSQL (postgresql://user@host/db)"
        ) from exc


def _install_sqlite_pragmas(engine: Engine, config: DatabaseConfig, *, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN; take control so that
        # BEGIN IMMEDIATE can be issued for writers (no "database is locked" upgrades).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={config.busy_timeout_ms}")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={config.sqlite_synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(
            "BEGIN IMMEDIATE" if connection.info.get("write", True) else "BEGIN"
        )


def make_sessionmaker(engine: Engine) -> sessionmaker[Any]:
    """A session factory that keeps loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


# --- migrations ----------------------------------------------------------------------------


def _version_locations() -> list[str]:
    locations: list[str] = []
    for package in MIGRATION_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        folder = Path(next(iter(spec.submodule_search_locations))) / "migrations" / "versions"
        if folder.is_dir():
            locations.append(str(folder))
    return locations


def _alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(_version_locations()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migration_heads() -> set[str]:
    """The head revision of every package's migration branch known to this code."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(_alembic_config()).get_heads())


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def current_revisions(engine: Engine) -> set[str]:
    """Revisions recorded in the database (empty for a database never upgraded)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


_MIGRATION_WAIT_S = 600.0
"""How long an upgrade waits for another process that is migrating the same SQLite file."""


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Apply every pending migration of every package (idempotent).

    Several processes may upgrade one database at once: on SQLite the first holds the write
    lock for the whole migration, which on a busy machine can outlast the busy timeout, so
    the others retry until it is done (then find nothing left to apply).
    """
    from alembic import command

    deadline = time.monotonic() + _MIGRATION_WAIT_S
    while True:
        try:
            _refuse_newer(engine)
            with engine.begin() as connection:
                command.upgrade(_alembic_config(connection), revision)
            return
        except OperationalError as exc:
            locked = engine.dialect.name == "sqlite" and "locked" in str(exc.orig)
            if not locked or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# Any constant: PostgreSQL advisory locks are named by a 64-bit key.
_MIGRATION_LOCK_KEY = 0x7472656C6C6973


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Serialise schema upgrades of processes opening one PostgreSQL database at once.

    SQLite needs nothing: the upgrade's ``BEGIN IMMEDIATE`` already admits one writer.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            conn.commit()


def _refuse_newer(engine: Engine) -> None:
    unknown = current_revisions(engine) - _known_revisions()
    if unknown:
        raise SchemaMismatchError(
            f"the database at {engine.url.render_as_string(hide_password=True)} has schema "
            f"revision(s) {sorted(unknown)} that this version of Trellis does not know: it was "
            "written by a newer Trellis. Upgrade Trellis (pip install -U trellis-agent) or use "
            "another database."
        )


def check_schema(engine: Engine) -> None:
    """Fail clearly unless the database schema is exactly what this code expects."""
    _refuse_newer(engine)
    missing = migration_heads() - current_revisions(engine)
    if missing:
        raise SchemaMismatchError(
            f"the database at {engine.url.render_as_string(hide_password=True)} is not at the "
            f"current schema (missing {sorted(missing)}); run `trellis db upgrade`"
        )
