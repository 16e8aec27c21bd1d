"""The Task Memory Tree: durable, graph-aware task state on SQLAlchemy."""

from memory._asyncio import run_sync
from memory._db import (
    Base,
    DatabaseConfig,
    check_schema,
    current_revisions,
    make_engine,
    make_sessionmaker,
    migration_heads,
    upgrade,
)
from memory._paths import default_database_url, trellis_home
from memory.errors import (
    CycleError,
    IllegalTransitionError,
    ModelRetry,
    NotFoundError,
    NotSerializableError,
    PayloadTooLargeError,
    RuntimeFailure,
    SchemaMismatchError,
    StaleWriteError,
    TrellisError,
    UnknownNodeError,
    UnknownTaskError,
    UsageError,
)

__all__ = [
    "Base",
    "CycleError",
    "DatabaseConfig",
    "IllegalTransitionError",
    "ModelRetry",
    "NotFoundError",
    "NotSerializableError",
    "PayloadTooLargeError",
    "RuntimeFailure",
    "SchemaMismatchError",
    "StaleWriteError",
    "TrellisError",
    "UnknownNodeError",
    "UnknownTaskError",
    "UsageError",
    "check_schema",
    "current_revisions",
    "default_database_url",
    "make_engine",
    "make_sessionmaker",
    "migration_heads",
    "run_sync",
    "trellis_home",
    "upgrade",
]
