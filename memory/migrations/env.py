"""Alembic environment: runs on the connection handed in by ``memory._db.upgrade``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from trellis.memory._db import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        # `alembic` run from a shell: make our own connection from sqlalchemy.url.
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
        with engine.begin() as own_connection:
            _run(own_connection)
        return
    _run(connection)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode recreates tables.
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
