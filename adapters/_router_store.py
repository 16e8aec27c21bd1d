"""The router's tables: embedding cache, fitted thresholds, and requests no adapter covered.

Schema changes go through the ``router`` migration branch (``adapters/migrations/versions``);
these declarations must match it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import (
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    delete,
    func,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from trellis.memory import Base, make_sessionmaker

__all__ = ["RouterStore", "StoredThreshold", "UncoveredRequest"]

_MAX_TEXT_CHARS = 2000


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RouterEmbeddingRow(Base):
    __tablename__ = "router_embeddings"

    embedder: Mapped[str] = mapped_column(String(100), primary_key=True)
    adapter: Mapped[str] = mapped_column(String(200), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    rows: Mapped[int] = mapped_column(Integer)
    dim: Mapped[int] = mapped_column(Integer)
    vectors: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class RouterThresholdRow(Base):
    __tablename__ = "router_thresholds"

    embedder: Mapped[str] = mapped_column(String(100), primary_key=True)
    adapter: Mapped[str] = mapped_column(String(200), primary_key=True)
    threshold: Mapped[float] = mapped_column(Float)
    content_hash: Mapped[str] = mapped_column(String(64))
    examples: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(200))
    fitted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class RouterUncoveredRow(Base):
    __tablename__ = "router_uncovered"
    __table_args__ = (Index("ix_router_uncovered_created", "created"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    text: Mapped[str] = mapped_column(Text)
    nearest: Mapped[str | None] = mapped_column(String(200), nullable=True)
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    node_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(200), nullable=True)


@dataclass(frozen=True)
class StoredThreshold:
    """A fitted out-of-distribution threshold as persisted."""

    adapter: str
    threshold: float
    content_hash: str
    examples: int
    method: str
    fitted_at: dt.datetime


@dataclass(frozen=True)
class UncoveredRequest:
    """A routed request that no adapter covered (the base model served it)."""

    id: int
    created: dt.datetime
    text: str
    nearest: str | None
    score: float
    threshold: float | None
    task_id: str | None
    node_id: int | None
    user_id: str | None


class RouterStore:
    """Reads and writes the router tables on an already migrated engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = make_sessionmaker(engine)

    # --- embedding cache ----------------------------------------------------------------

    def load_embeddings(
        self, embedder: str, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], np.ndarray]:
        """Cached vectors for (adapter, content hash) pairs; missing pairs are absent."""
        wanted = set(keys)
        if not wanted:
            return {}
        names = sorted({name for name, _ in wanted})
        found: dict[tuple[str, str], np.ndarray] = {}
        with self._sessions() as session:
            # Chunk the IN list: SQLite limits bound parameters per statement.
            for start in range(0, len(names), 500):
                rows = session.scalars(
                    select(RouterEmbeddingRow).where(
                        RouterEmbeddingRow.embedder == embedder,
                        RouterEmbeddingRow.adapter.in_(names[start : start + 500]),
                    )
                )
                for row in rows:
                    key = (row.adapter, row.content_hash)
                    if key in wanted:
                        vectors = np.frombuffer(row.vectors, dtype=np.float32)
                        found[key] = vectors.reshape(row.rows, row.dim).copy()
        return found

    def save_embeddings(self, embedder: str, items: dict[tuple[str, str], np.ndarray]) -> None:
        """Cache vectors; older entries of the same adapters are replaced."""
        if not items:
            return
        now = _now()
        with self._sessions.begin() as session:
            names = sorted({name for name, _ in items})
            for start in range(0, len(names), 500):
                session.execute(
                    delete(RouterEmbeddingRow).where(
                        RouterEmbeddingRow.embedder == embedder,
                        RouterEmbeddingRow.adapter.in_(names[start : start + 500]),
                    )
                )
            session.add_all(
                RouterEmbeddingRow(
                    embedder=embedder,
                    adapter=name,
                    content_hash=content_hash,
                    rows=int(vectors.shape[0]),
                    dim=int(vectors.shape[1]),
                    vectors=np.ascontiguousarray(vectors, dtype=np.float32).tobytes(),
                    created=now,
                )
                for (name, content_hash), vectors in items.items()
            )

    def forget_embeddings(self, embedder: str, names: Iterable[str]) -> None:
        """Drop cached vectors of removed adapters."""
        names = sorted(set(names))
        if not names:
            return
        with self._sessions.begin() as session:
            for start in range(0, len(names), 500):
                session.execute(
                    delete(RouterEmbeddingRow).where(
                        RouterEmbeddingRow.embedder == embedder,
                        RouterEmbeddingRow.adapter.in_(names[start : start + 500]),
                    )
                )

    # --- thresholds ---------------------------------------------------------------------

    def load_thresholds(self, embedder: str) -> dict[str, StoredThreshold]:
        with self._sessions() as session:
            rows = session.scalars(
                select(RouterThresholdRow).where(RouterThresholdRow.embedder == embedder)
            )
            return {
                row.adapter: StoredThreshold(
                    adapter=row.adapter,
                    threshold=row.threshold,
                    content_hash=row.content_hash,
                    examples=row.examples,
                    method=row.method,
                    fitted_at=row.fitted_at,
                )
                for row in rows
            }

    def save_thresholds(self, embedder: str, thresholds: Iterable[StoredThreshold]) -> None:
        """Replace every threshold of this embedder with the given set (one transaction)."""
        with self._sessions.begin() as session:
            session.execute(
                delete(RouterThresholdRow).where(RouterThresholdRow.embedder == embedder)
            )
            session.add_all(
                RouterThresholdRow(
                    embedder=embedder,
                    adapter=item.adapter,
                    threshold=float(item.threshold),
                    content_hash=item.content_hash,
                    examples=item.examples,
                    method=item.method,
                    fitted_at=item.fitted_at,
                )
                for item in thresholds
            )

    # --- coverage -----------------------------------------------------------------------

    def log_uncovered(self, request: dict[str, Any], *, keep: int) -> None:
        """Record one uncovered request; keeps only the newest ``keep`` rows."""
        with self._sessions.begin() as session:
            row = RouterUncoveredRow(
                created=_now(),
                text=str(request["text"])[:_MAX_TEXT_CHARS],
                nearest=request.get("nearest"),
                score=float(request["score"]),
                threshold=request.get("threshold"),
                task_id=request.get("task_id"),
                node_id=request.get("node_id"),
                user_id=request.get("user_id"),
            )
            session.add(row)
            session.flush()
            # Ids grow monotonically, so everything at or below id - keep is older.
            if row.id > keep:
                session.execute(
                    delete(RouterUncoveredRow).where(RouterUncoveredRow.id <= row.id - keep)
                )

    def uncovered(
        self, *, limit: int = 50, since: dt.datetime | None = None
    ) -> list[UncoveredRequest]:
        """The most recent uncovered requests, newest first."""
        query = select(RouterUncoveredRow).order_by(RouterUncoveredRow.id.desc()).limit(limit)
        if since is not None:
            query = query.where(RouterUncoveredRow.created >= since)
        with self._sessions() as session:
            return [
                UncoveredRequest(
                    id=row.id,
                    created=row.created,
                    text=row.text,
                    nearest=row.nearest,
                    score=row.score,
                    threshold=row.threshold,
                    task_id=row.task_id,
                    node_id=row.node_id,
                    user_id=row.user_id,
                )
                for row in session.scalars(query)
            ]

    def uncovered_count(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(RouterUncoveredRow)) or 0)
