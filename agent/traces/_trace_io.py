"""Writing traces: sinks (a file, fsync'd per event or per batch; memory) and content hashes.

The lines are the format of :mod:`agent._trace`: a header, then one JSON event per line.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from trellis.agent.traces._trace import TraceHeader

__all__ = [
    "MemoryTraceSink",
    "TraceSink",
    "TraceWriter",
    "event_line",
    "file_sha256",
    "folder_sha256",
    "header_line",
    "json_sha256",
]


class TraceSink(Protocol):
    """Where recorded lines go."""

    def write_line(self, line: str) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def _dump(model: BaseModel) -> str:
    return json.dumps(model.model_dump(mode="json"), separators=(",", ":"), ensure_ascii=False)


class TraceWriter:
    """Writes a trace to a file: the header, then one line per event.

    ``fsync="event"`` makes every event durable before the next (a crash loses nothing
    written); ``"batch"`` syncs every ``batch`` events and at close; ``"none"`` leaves it to
    the OS (benchmarks, temporary files).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: Literal["event", "batch", "none"] = "batch",
        batch: int = 64,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self._fsync = fsync
        self._batch = max(1, batch)
        self._pending = 0

    def write_line(self, line: str) -> None:
        self._file.write(line + "\n")
        self._pending += 1
        if self._fsync == "event" or (self._fsync == "batch" and self._pending >= self._batch):
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        if self._fsync != "none":
            os.fsync(self._file.fileno())
        self._pending = 0

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()


class MemoryTraceSink:
    """Keeps the lines in memory (replays, database storage, tests)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_line(self, line: str) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def text(self) -> str:
        """The whole trace as JSONL text."""
        return "".join(line + "\n" for line in self.lines)


def header_line(header: TraceHeader | None = None) -> str:
    """The JSON line of a header."""
    return _dump(header or TraceHeader())


def event_line(event: BaseModel) -> str:
    """The JSON line of an event."""
    return _dump(event)


def file_sha256(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content, hex."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 over the names and contents of a folder's files (adapter folders)."""
    folder = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def json_sha256(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
