"""Where Trellis keeps its files: one data directory, overridable with ``TRELLIS_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

__all__ = ["default_database_url", "trellis_home"]


def trellis_home() -> Path:
    """The data directory: ``$TRELLIS_HOME`` if set, else the platform's user data dir.

    On Linux that is ``~/.local/share/trellis``. The database, the prepared model, router
    caches and traces live below it; nothing else on disk is written.
    """
    configured = os.environ.get("TRELLIS_HOME")
    home = (
        Path(configured).expanduser() if configured else Path(platformdirs.user_data_dir("trellis"))
    )
    return home


def default_database_url() -> str:
    """``$TRELLIS_DATABASE_URL`` if set, else a SQLite file ``trellis.db`` in :func:`trellis_home`."""
    configured = os.environ.get("TRELLIS_DATABASE_URL")
    if configured:
        return configured
    return f"sqlite:///{trellis_home() / 'trellis.db'}"
