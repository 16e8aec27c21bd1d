"""The Task Memory Tree: durable, graph-aware task state on SQLAlchemy."""

from trellis.memory._aio import AsyncTaskStore
from trellis.memory._asyncio import run_sync
from trellis.memory._context import PromptContext
from trellis.memory._db import (
    Base,
    DatabaseConfig,
    check_schema,
    current_revisions,
    make_engine,
    make_sessionmaker,
    migration_heads,
    upgrade,
)
from trellis.memory._paths import default_database_url, trellis_home
from trellis.memory._records import (
    EventRecord,
    MemoryConfig,
    NodeRecord,
    NodeSpec,
    NodeStatus,
    TaskRecord,
    TaskStatus,
    replay_events,
)
from trellis.memory._store import UNSET, TaskStore
from trellis.memory.errors import (
    CycleError,
    DuplicateKeyError,
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
    "UNSET",
    "AsyncTaskStore",
    "Base",
    "CycleError",
    "DatabaseConfig",
    "DuplicateKeyError",
    "EventRecord",
    "IllegalTransitionError",
    "MemoryConfig",
    "ModelRetry",
    "NodeRecord",
    "NodeSpec",
    "NodeStatus",
    "NotFoundError",
    "NotSerializableError",
    "PayloadTooLargeError",
    "PromptContext",
    "RuntimeFailure",
    "SchemaMismatchError",
    "StaleWriteError",
    "TaskRecord",
    "TaskStatus",
    "TaskStore",
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
    "replay_events",
    "run_sync",
    "trellis_home",
    "upgrade",
]
