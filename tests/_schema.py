"""Shared check that a package's migrations create exactly what its models declare."""

from __future__ import annotations

from collections.abc import Set

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from trellis.memory import Base


def _tables_of(item: object) -> list[str]:
    found: list[str] = []
    stack = [item]
    while stack:
        value = stack.pop()
        if isinstance(value, list | tuple):
            stack.extend(value)
        elif hasattr(value, "table") and getattr(value.table, "name", None):
            found.append(value.table.name)
        elif hasattr(value, "name") and isinstance(value.name, str):
            found.append(value.name)
        elif isinstance(value, str):
            found.append(value)
    return found


def migration_drift(engine: Engine, tables: Set[str]) -> list[object]:
    """Differences between the migrated database and the models, limited to ``tables``."""
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    return [d for d in diff if tables & set(_tables_of(d))]
