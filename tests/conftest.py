"""Shared fixtures: every storage test runs on SQLite (file and in-memory) and PostgreSQL.

PostgreSQL comes from ``TRELLIS_TEST_POSTGRES_URL`` (default: the local server's ``test``
database as ``postgres``). Each test session creates its own scratch database there and
drops it at the end; each test gets an empty ``public`` schema. Set
``TRELLIS_SKIP_POSTGRES=1`` to skip the PostgreSQL cases on a machine without a server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_ADMIN_URL = os.environ.get(
    "TRELLIS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test writes into the user's real data directory."""
    home = tmp_path_factory.mktemp("trellis-home")
    monkeypatch.setenv("TRELLIS_HOME", str(home))
    monkeypatch.delenv("TRELLIS_DATABASE_URL", raising=False)


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A scratch PostgreSQL database for this test session (dropped afterwards)."""
    if os.environ.get("TRELLIS_SKIP_POSTGRES") == "1":
        pytest.skip("TRELLIS_SKIP_POSTGRES=1")
    admin_url = make_url(POSTGRES_ADMIN_URL)
    name = f"trellis_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # a missing server is a failure, not a skip
        raise RuntimeError(
            f"PostgreSQL at {admin_url.render_as_string(hide_password=True)} is not reachable "
            f"({exc}); start it or set TRELLIS_SKIP_POSTGRES=1"
        ) from exc
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _reset_postgres(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """An empty database of each kind Trellis supports (the conformance parameter)."""
    kind = request.param
    if kind == "sqlite-file":
        return f"sqlite:///{tmp_path}/trellis.db"
    if kind == "sqlite-memory":
        return "sqlite://"
    url: str = request.getfixturevalue("postgres_database_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def postgres_url(postgres_database_url: str) -> str:
    """An empty PostgreSQL database (for tests that need several processes on one server)."""
    _reset_postgres(postgres_database_url)
    return postgres_database_url


@pytest.fixture(scope="session")
def prepared_model() -> Path:
    """The prepared base model's folder. A missing model fails the test that needs it, loudly:
    set-up (``scripts/setup.sh``) prepares it, so its absence is a broken set-up, not a skip."""
    from trellis.adapters import default_model_dir, verify_model

    folder = default_model_dir()
    if not verify_model(folder, full=False):
        pytest.fail(
            f"the base model is not prepared at {folder}: run `trellis model prepare` "
            "(scripts/setup.sh does)"
        )
    return folder
