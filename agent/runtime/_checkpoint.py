"""LangGraph checkpointers in the Trellis database, and checkpoint retention.

The official ``SqliteSaver`` writes to the same SQLite file as the Task Memory Tree (its
own connection, WAL, the same busy timeout); ``PostgresSaver`` uses the same PostgreSQL
database through a small ``psycopg_pool`` pool whose connections are checked before use,
so a connection the server dropped (a restart, ``pg_terminate_backend``) is replaced
instead of failing every later step. Checkpoint tables otherwise grow without bound, so
:func:`prune_checkpoints` keeps only the latest N checkpoints of a thread (thread id = task
id).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy import Engine

from trellis.agent.errors import EnvironmentFailure
from trellis.memory import retry_budget, retry_transient
from trellis.memory.errors import UsageError

__all__ = ["CheckpointHandle", "open_checkpointer", "prune_checkpoints"]


class CheckpointHandle:
    """A checkpointer and how to close what it holds."""

    def __init__(self, saver: BaseCheckpointSaver[Any], close: Callable[[], None], kind: str):
        self.saver = saver
        self.kind = kind
        self._close = close

    def close(self) -> None:
        self._close()


def open_checkpointer(engine: Engine, *, busy_timeout_ms: int = 30_000) -> CheckpointHandle:
    """The official saver for the database behind ``engine`` (tables created if missing)."""
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        return _open_sqlite(engine, busy_timeout_ms)
    if backend == "postgresql":
        return _open_postgres(engine)
    raise UsageError(
        f"no LangGraph checkpointer for {backend!r} databases; use SQLite or PostgreSQL"
    )


def _open_sqlite(engine: Engine, busy_timeout_ms: int) -> CheckpointHandle:
    from langgraph.checkpoint.sqlite import SqliteSaver

    database = engine.url.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        # An in-memory database exists only on the engine's single shared connection.
        raw = engine.raw_connection()
        connection = raw.driver_connection
        if not isinstance(connection, sqlite3.Connection):
            raise EnvironmentFailure("expected a sqlite3 connection behind the SQLite engine")
        saver = SqliteSaver(connection)
        saver.setup()
        return CheckpointHandle(saver, raw.close, "sqlite")
    path = Path(database).expanduser()
    # Not autocommit: the saver commits each put / put_writes as one transaction (its
    # cursor() commits), so a process killed mid-write never leaves half of a step's writes
    # (a checkpoint whose next step is lost). IMMEDIATE: take the write lock up front.
    connection = sqlite3.connect(
        str(path),
        check_same_thread=False,
        timeout=busy_timeout_ms / 1000,
        isolation_level="IMMEDIATE",
    )
    connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    saver = SqliteSaver(connection)
    saver.setup()
    return CheckpointHandle(saver, connection.close, "sqlite")


_POOL_SIZE = 2
"""Connections per checkpointer: the saver serialises its users behind one lock, so a
second connection only covers the one being replaced after a drop."""
_CONNECT_TIMEOUT_S = 5


def _open_postgres(engine: Engine) -> CheckpointHandle:
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool
    except ImportError as exc:
        raise UsageError(
            "PostgreSQL checkpoints need the postgres extra: pip install 'trellis-agent[postgres]'"
        ) from exc
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    budget = retry_budget(engine)

    class PingedPool(ConnectionPool):
        """Pre-ping on checkout, replacing a dead connection at once (psycopg_pool's own
        ``check`` sleeps a second or more between tries, as if the server were down)."""

        def getconn(self, timeout: float | None = None) -> Any:
            for _ in range(_POOL_SIZE + 1):
                conn = super().getconn(timeout)
                try:
                    ConnectionPool.check_connection(conn)
                except Exception:
                    self.putconn(conn)  # a broken one is discarded and replaced
                    continue
                return conn
            return super().getconn(timeout)  # the caller retries what this raises

    pool: Any = PingedPool(
        url,
        min_size=1,
        max_size=_POOL_SIZE,
        kwargs={
            "autocommit": True,
            "prepare_threshold": 0,
            "row_factory": dict_row,
            "connect_timeout": _CONNECT_TIMEOUT_S,
        },
        # How long a step waits for a connection while the server is unreachable; then
        # PoolTimeout, which the SDK treats like any lost connection (retry, then resume).
        timeout=min(max(1.0, budget), 30.0),
        # Background reconnection gives up quickly (its backoff would outlast a short
        # outage); the next checkout then connects at once.
        reconnect_timeout=1.0,
        open=False,
        name="trellis-checkpoints",
    )
    try:
        pool.open(wait=True, timeout=max(float(_CONNECT_TIMEOUT_S), 5.0))
        saver = PostgresSaver(pool)
        retry_transient(saver.setup, engine=engine)
    except BaseException:
        pool.close()
        raise
    return CheckpointHandle(saver, pool.close, "postgres")


def prune_checkpoints(handle: CheckpointHandle, thread_id: str, keep: int) -> None:
    """Keep only the newest ``keep`` checkpoints of a thread (0 deletes the thread's history)."""
    if keep < 0:
        raise UsageError(f"keep must be 0 or more, got {keep}")
    saver: Any = handle.saver
    if handle.kind == "postgres":
        if keep == 0:
            saver.prune([thread_id], strategy="delete")
        elif keep == 1:
            saver.prune([thread_id], strategy="keep_latest")
        else:
            _prune_postgres_keep(saver, thread_id, keep)
        return
    if keep == 0:
        saver.delete_thread(thread_id)
        return
    # Checkpoint ids are time-ordered UUIDv6 strings: the newest sort last.
    with saver.lock, saver.conn:
        for table in ("writes", "checkpoints"):
            saver.conn.execute(
                f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_id NOT IN ("
                "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? "
                "ORDER BY checkpoint_id DESC LIMIT ?)",
                (thread_id, thread_id, keep),
            )


def _prune_postgres_keep(saver: Any, thread_id: str, keep: int) -> None:
    keep_query = (
        "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s "
        "ORDER BY checkpoint_id DESC LIMIT %s"
    )
    with saver._cursor() as cursor, cursor.connection.transaction():
        for table in ("checkpoint_writes", "checkpoints"):
            cursor.execute(
                f"DELETE FROM {table} WHERE thread_id = %s AND checkpoint_id NOT IN ({keep_query})",
                (thread_id, thread_id, keep),
            )
        # Blobs are shared between checkpoints by channel version: drop the unreferenced ones.
        cursor.execute(
            "DELETE FROM checkpoint_blobs b WHERE b.thread_id = %s AND NOT EXISTS ("
            "SELECT 1 FROM checkpoints c WHERE c.thread_id = b.thread_id "
            "AND c.checkpoint_ns = b.checkpoint_ns "
            "AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)",
            (thread_id,),
        )
