"""Run coroutines from synchronous code: the thin sync wrappers over the async core use this.

A single background event loop per process serves every sync call, so objects bound to a
loop (HTTP connection pools, model schedulers) keep working across calls, and sync wrappers
also work when the caller is already inside a running loop (Jupyter, an async app).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="trellis-sync-loop", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


def run_sync(coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coroutine`` on the shared background loop and wait for its result."""
    future = asyncio.run_coroutine_threadsafe(coroutine, _background_loop())
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise
