"""Row-level helpers shared by the store modules: tables, payload checks, snapshot building."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, Connection, DateTime, RowMapping, Table, select

from trellis.memory._models import EdgeRow, EventRow, NodeRow, TaskRow
from trellis.memory._records import EventRecord, NodeRecord, NodeStatus, TaskRecord, TaskStatus
from trellis.memory.errors import NotSerializableError, PayloadTooLargeError, UsageError

NODES: Table = NodeRow.__table__  # type: ignore[assignment]
TASKS: Table = TaskRow.__table__  # type: ignore[assignment]
EDGES: Table = EdgeRow.__table__  # type: ignore[assignment]
EVENTS: Table = EventRow.__table__  # type: ignore[assignment]

# Bound parameters per IN list: well under SQLite's 32766 and PostgreSQL's 65535.
CHUNK = 5_000

T = TypeVar("T")

# One configured encoder: json.dumps with options builds a new encoder on every call.
ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything Trellis stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def one_of(column: Any, values: Sequence[Any]) -> Any:
    """``column IN values``; ``column = value`` for one value, which SQLAlchemy's statement
    cache serves whole (an IN list is re-rendered at every execution), and most of the
    loop's reads ask about one node."""
    return column == values[0] if len(values) == 1 else column.in_(values)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_json(field: str, value: Any, limit: int) -> Any:
    """Validate a JSON payload before any write; return it as it will read back."""
    return check_json_text(field, value, limit)[0]


def check_json_text(field: str, value: Any, limit: int) -> tuple[Any, JsonText | None]:
    """:func:`check_json`, also returning the serialised text."""
    text = encode_checked(field, value, limit)
    if text is None:
        return None, None
    # Tuples become lists and non-string keys become strings: return what a read gives back.
    return json.loads(text), text


def encode_checked(field: str, value: Any, limit: int) -> JsonText | None:
    """The checks of :func:`check_json_text` without reading the text back (batch callers
    parse many texts in one :func:`json.loads`)."""
    if value is None:
        return None
    try:
        text = ENCODER.encode(value)
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except (TypeError, ValueError) as exc:  # ValueError: NaN, circular, lone surrogates
        raise NotSerializableError(field, str(exc)) from exc
    if "\\u0000" in text:
        raise NotSerializableError(field, "it contains a NUL character, which PostgreSQL rejects")
    if size > limit:
        raise PayloadTooLargeError(field, size, limit)
    return JsonText(text)


def check_text(field: str, value: Any, limit: int, *, max_chars: int | None = None) -> str:
    """Validate a text column (title, goal, error)."""
    if not isinstance(value, str):
        raise UsageError(f"{field} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise NotSerializableError(field, "it contains a NUL character, which PostgreSQL rejects")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise NotSerializableError(field, str(exc)) from exc
    if max_chars is not None and len(value) > max_chars:
        raise PayloadTooLargeError(field, size, max_chars)
    if size > limit:
        raise PayloadTooLargeError(field, size, limit)
    return value


def task_record(row: RowMapping) -> TaskRecord:
    return TaskRecord(
        id=row["id"],
        goal=row["goal"],
        user_id=row["user_id"],
        status=TaskStatus(row["status"]),
        metadata=row["metadata"],
        root_id=row["root_id"],
        created_at=aware(row["created_at"]),  # type: ignore[arg-type]
        updated_at=aware(row["updated_at"]),  # type: ignore[arg-type]
        version=row["version"],
    )


def node_record(row: RowMapping, depends_on: Iterable[int] = ()) -> NodeRecord:
    return NodeRecord(
        id=row["id"],
        task_id=row["task_id"],
        parent_id=row["parent_id"],
        key=row["key"],
        kind=row["kind"],
        title=row["title"],
        status=NodeStatus(row["status"]),
        input=row["input"],
        output=row["output"],
        error=row["error"],
        adapter=row["adapter"],
        route=row["route"],
        attempts=row["attempts"],
        position=row["position"],
        depth=row["depth"],
        superseded=bool(row["superseded"]),
        created_at=aware(row["created_at"]),  # type: ignore[arg-type]
        updated_at=aware(row["updated_at"]),  # type: ignore[arg-type]
        started_at=aware(row["started_at"]),
        finished_at=aware(row["finished_at"]),
        version=row["version"],
        depends_on=tuple(sorted(depends_on)),
    )


def event_record(row: RowMapping) -> EventRecord:
    return EventRecord(
        id=row["id"],
        task_id=row["task_id"],
        node_id=row["node_id"],
        field=row["field"],
        old=row["old"],
        new=row["new"],
        cause=row["cause"],
        at=aware(row["at"]),  # type: ignore[arg-type]
    )


def dependencies_of(conn: Connection, node_ids: Sequence[int]) -> dict[int, list[int]]:
    """``node id -> ids it depends on`` for the given nodes."""
    found: dict[int, list[int]] = {}
    for part in chunks(list(node_ids)):
        rows = conn.execute(
            select(EDGES.c.node_id, EDGES.c.depends_on_id).where(one_of(EDGES.c.node_id, part))
        )
        for node_id, dep_id in rows:
            found.setdefault(node_id, []).append(dep_id)
    return found


def records_for(conn: Connection, rows: Sequence[RowMapping]) -> list[NodeRecord]:
    """Snapshots of ``rows`` with their dependency lists (one extra query)."""
    deps = dependencies_of(conn, [r["id"] for r in rows])
    return [node_record(r, deps.get(r["id"], ())) for r in rows]


def fetch_node_rows(conn: Connection, node_ids: Sequence[int]) -> dict[int, RowMapping]:
    found: dict[int, RowMapping] = {}
    for part in chunks(list(node_ids)):
        for row in conn.execute(select(NODES).where(one_of(NODES.c.id, part))).mappings():
            found[row["id"]] = row
    return found


def event_row(
    task_id: str,
    node_id: int | None,
    field: str,
    old: Any,
    new: Any,
    cause: str | None,
    at: datetime,
) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "node_id": node_id,
        "field": field,
        "old": old,
        "new": new,
        "cause": cause,
        "at": at,
    }


class JsonText(str):
    """JSON already serialised (by :func:`check_json`): :func:`bulk_insert` passes it as is."""


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, JsonText):
        return value
    return ENCODER.encode(value)


def bulk_insert(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, batch: int = CHUNK
) -> None:
    """Insert many rows (dicts with the same keys) through the driver's executemany."""
    if not rows:
        return
    columns = list(rows[0])
    converters = [_converter(conn, table.c[name]) for name in columns]
    pairs = list(zip(columns, converters, strict=True))
    tuples = [tuple(convert(row[name]) for name, convert in pairs) for row in rows]
    bulk_insert_tuples(conn, table, columns, tuples, batch=batch)


def bulk_insert_tuples(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    batch: int = CHUNK,
    copy: bool = False,
) -> None:
    """Insert driver-ready tuples: JSON as :class:`JsonText` (or None), timestamps through
    :func:`driver_value`.

    SQLAlchemy's per-value bind processing dominates large batched inserts; this path
    serialises each value once and hands plain tuples to the driver. ``copy``: on
    PostgreSQL through psycopg, stream the rows with one ``COPY`` instead.
    """
    if not rows:
        return
    dialect = conn.dialect
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    postgres = dialect.name == "postgresql"
    quote = dialect.identifier_preparer.quote
    if copy and postgres and dialect.driver == "psycopg":
        raw = conn.connection.driver_connection
        if raw is not None:
            # Same rows and constraints as the INSERT, several times faster: one command,
            # no per-row statement round trip. Runs inside the caller's transaction.
            sql = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
            with raw.cursor() as cursor, cursor.copy(sql) as stream:
                for row in rows:
                    stream.write_row(row)
            return
    placeholders = [
        f"CAST({mark} AS JSONB)" if postgres and isinstance(table.c[c].type, JSON) else mark
        for c in columns
    ]
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join(placeholders)})"
    )
    # One prepared statement per batch: SQLite loops in C; psycopg pipelines the rows.
    for part in chunks(rows, batch):
        conn.exec_driver_sql(sql, list(part))


def driver_value(conn: Connection, column: Any, value: Any) -> Any:
    """``value`` as the driver expects it for ``column`` (SQLite stores timestamps as text)."""
    return _converter(conn, column)(value)


def _identity(value: Any) -> Any:
    return value


def _converter(conn: Connection, column: Any) -> Callable[[Any], Any]:
    column_type = column.type
    if isinstance(column_type, JSON):
        return _json_text
    if isinstance(column_type, DateTime):
        impl = column_type.dialect_impl(conn.dialect)
        return _memoized(impl.bind_processor(conn.dialect))
    return _identity


def _memoized(process: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """Convert a timestamp once per distinct value (a batch shares one)."""
    last: list[Any] = [object(), None]

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if value is not last[0]:
            last[0], last[1] = value, (process(value) if process else value)
        return last[1]

    return convert
