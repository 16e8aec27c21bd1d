"""Migrations of the Task Memory Tree, schema checks, and the `trellis db`/`demo` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from _schema import migration_drift
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from trellis.agent.cli import app
from trellis.memory import (
    SchemaMismatchError,
    TaskStore,
    check_schema,
    current_revisions,
    make_engine,
    upgrade,
)

TMT_TABLES = {"tmt_tasks", "tmt_nodes", "tmt_edges", "tmt_events"}


def test_migration_creates_exactly_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        assert "memory_0001" in current_revisions(engine)
        assert set(inspect(engine).get_table_names()) >= TMT_TABLES
        # Only our tables: other packages' drift is theirs to test.
        assert migration_drift(engine, TMT_TABLES) == []
        upgrade(engine)  # idempotent
    finally:
        engine.dispose()


def test_open_without_upgrade_refuses_an_empty_database(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    with pytest.raises(SchemaMismatchError, match="trellis db upgrade"):
        TaskStore.open(url, upgrade=False)
    TaskStore.open(url).close()
    with TaskStore.open(url, upgrade=False) as store:
        assert store.create_task("ok").goal == "ok"


def test_newer_schema_is_refused(database_url: str) -> None:
    store = TaskStore.open(database_url)
    task = store.create_task("written by today's code")
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('memory_9999')"))
    for refuse in (check_schema, upgrade):
        with pytest.raises(SchemaMismatchError, match="newer Trellis") as info:
            refuse(store.engine)
        assert "memory_9999" in str(info.value)
    if database_url != "sqlite://":  # in-memory databases are per engine
        for upgrade_flag in (True, False):
            with pytest.raises(SchemaMismatchError, match="memory_9999"):
                TaskStore.open(database_url, upgrade=upgrade_flag)
    # The refusal changed nothing.
    assert store.get_task(task.id).goal == "written by today's code"
    store.close()


def test_db_commands_and_demo(tmp_path: object) -> None:
    runner = CliRunner()
    url = f"sqlite:///{tmp_path}/cli.db"
    result = runner.invoke(app, ["db", "current", "--url", url])
    assert result.exit_code == 1
    result = runner.invoke(app, ["db", "upgrade", "--url", url])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["db", "current", "--url", url])
    assert result.exit_code == 0 and "status:   current" in result.output
    result = runner.invoke(app, ["demo", "--url", url])
    assert result.exit_code == 0, result.output
    assert "flowchart TD" in result.output and "root done" in result.output
    with TaskStore.open(url) as store:
        (task,) = store.list_tasks(user_id="demo")
        assert all(n.status.value == "done" for n in store.nodes(task.id))


def test_upgrade_waits_for_another_writer_longer_than_the_busy_timeout(tmp_path: Path) -> None:
    import sqlite3
    import threading

    from trellis.memory._db import DatabaseConfig, check_schema, make_engine, upgrade

    path = tmp_path / "shared.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")  # another process migrating: the write lock is taken
    release = threading.Timer(1.5, lambda: holder.execute("COMMIT"))
    release.start()
    engine = make_engine(DatabaseConfig(url=f"sqlite:///{path}", busy_timeout_ms=100))
    try:
        upgrade(engine)  # the 100 ms busy timeout expires many times; the upgrade still lands
        check_schema(engine)  # raises unless every migration was applied
    finally:
        release.join()
        holder.close()
        engine.dispose()
