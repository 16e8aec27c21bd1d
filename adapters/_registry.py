"""The adapter registry: PEFT LoRA folders recorded in the Trellis database, validated.

Registration checks the folder before anything is written: it must lie under one of the
configured adapter roots (symlinks resolved first), hold a parseable ``adapter_config.json``
for a LoRA adapter of the configured base model, with a rank within ``max_rank``, and
complete weights. Routing needs a description and example prompts, so both are required.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import os
import re
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, DateTime, Engine, Integer, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from trellis.adapters._lora import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAMES
from trellis.adapters._model import DEFAULT_BASE_MODEL
from trellis.adapters.errors import (
    AdapterPathError,
    AdapterValidationError,
    DuplicateAdapterError,
    IncompatibleAdapterError,
    UnknownAdapterError,
)
from trellis.memory import Base, make_engine, make_sessionmaker, trellis_home, upgrade

__all__ = [
    "BASE_ADAPTER_NAME",
    "AdapterInfo",
    "AdapterRecord",
    "AdapterRegistry",
    "check_adapter_name",
    "default_adapter_roots",
    "inspect_adapter",
]

BASE_ADAPTER_NAME = "__base__"
"""What peft calls "no adapter" in a mixed batch; never a valid adapter name."""

# peft module names cannot contain "."; keep names safe in URLs, paths and metrics too.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


SHIPPED_ADAPTERS_DIR = Path(__file__).resolve().parent / "shipped"
"""The adapters that ship with Trellis (always an allowed root; see ``adapters._shipped``)."""

_shipped_folders: list[Path] = [SHIPPED_ADAPTERS_DIR]


def add_shipped_folder(folder: Path | str) -> None:
    """Treat ``folder`` as shipped adapters too: an installed package's own adapters (an
    environment pack's), always allowed, registered with the runtime's shipped ones."""
    resolved = Path(folder).resolve()
    if resolved not in _shipped_folders:
        _shipped_folders.append(resolved)


def shipped_folders() -> tuple[Path, ...]:
    """Every folder of shipped adapters: Trellis's own, then those added by packages."""
    return tuple(_shipped_folders)


def is_shipped(path: Path | str) -> bool:
    """Whether an adapter folder is one of the shipped ones."""
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(folder) for folder in _shipped_folders)


def default_adapter_roots() -> tuple[Path, ...]:
    """``$TRELLIS_ADAPTER_ROOTS`` (``os.pathsep``-separated) if set, else ``<home>/adapters``."""
    configured = os.environ.get("TRELLIS_ADAPTER_ROOTS")
    if configured:
        return tuple(Path(p).expanduser() for p in configured.split(os.pathsep) if p)
    return (trellis_home() / "adapters",)


def check_adapter_name(name: str) -> str:
    """Return ``name`` if it is a valid adapter name, else raise AdapterValidationError."""
    if not isinstance(name, str) or not _NAME.match(name) or name == BASE_ADAPTER_NAME:
        raise AdapterValidationError(
            f"invalid adapter name {name!r}: use 1-64 letters, digits, '_' or '-', starting "
            "with a letter or digit (no dots, slashes or spaces)"
        )
    return name


class AdapterInfo(BaseModel):
    """What an adapter folder declares (read from adapter_config.json and the weights)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    """The folder, symlinks resolved."""
    base_model: str
    """``base_model_name_or_path`` from adapter_config.json."""
    rank: int
    """LoRA rank ``r``."""
    target_modules: tuple[str, ...]
    """Modules the adapter modifies."""
    weights_file: str
    """Name of the weights file in the folder."""


class AdapterRecord(BaseModel):
    """One registered adapter (an immutable snapshot of its row)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Unique name; requests select the adapter by it."""
    base_model: str
    """The base model the adapter was trained for."""
    path: Path
    """PEFT folder (resolved, inside an adapter root)."""
    rank: int
    """LoRA rank."""
    target_modules: tuple[str, ...]
    """Modules the adapter modifies."""
    description: str
    """What the adapter is for (the router embeds it)."""
    examples: tuple[str, ...]
    """Example prompts the adapter handles well (the router embeds them)."""
    tags: tuple[str, ...] = ()
    """Free-form labels."""
    created: dt.datetime
    """When it was registered (UTC)."""


class AdapterRow(Base):
    __tablename__ = "adapters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_model: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    rank: Mapped[int] = mapped_column(Integer)
    target_modules: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text)
    examples: Mapped[list[str]] = mapped_column(JSON)
    tags: Mapped[list[str]] = mapped_column(JSON)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    def record(self) -> AdapterRecord:
        created = self.created
        if created.tzinfo is None:  # SQLite drops the zone; we always store UTC
            created = created.replace(tzinfo=dt.UTC)
        return AdapterRecord(
            name=self.name,
            base_model=self.base_model,
            path=Path(self.path),
            rank=self.rank,
            target_modules=tuple(self.target_modules),
            description=self.description,
            examples=tuple(self.examples),
            tags=tuple(self.tags),
            created=created,
        )


def _same_model(declared: str, expected: str) -> bool:
    # adapter_config.json may record a hub id ("google/gemma-3-270m") or a local folder;
    # the model's own name is the last path component.
    def last(text: str) -> str:
        return text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()

    return bool(declared) and last(declared) == last(expected)


def _check_safetensors(path: Path) -> None:
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            raw = handle.read(8)
            if len(raw) < 8:
                raise ValueError("file shorter than its 8-byte header length")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > min(size - 8, _MAX_HEADER_BYTES):
                raise ValueError(f"header length {header_len} exceeds the file")
            header = json.loads(handle.read(header_len))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise AdapterValidationError(
            f"adapter weights {path} are corrupt ({exc}); re-save the adapter with save_pretrained"
        ) from exc
    if not any(".lora_A." in k for k in tensors) or not any(".lora_B." in k for k in tensors):
        raise AdapterValidationError(
            f"adapter weights {path} hold no lora_A/lora_B tensors; is this a LoRA adapter?"
        )
    if 8 + header_len + end != size:
        raise AdapterValidationError(
            f"adapter weights {path} are truncated or padded ({size} bytes on disk, header "
            f"says {8 + header_len + end}); copy the file again"
        )


def inspect_adapter(
    path: Path | str,
    *,
    base_model: str | None = DEFAULT_BASE_MODEL,
    max_rank: int | None = None,
    roots: Sequence[Path] | None = None,
) -> AdapterInfo:
    """Validate a PEFT LoRA folder and return what it declares.

    ``base_model``, ``max_rank`` and ``roots`` are checked when given. Each problem raises a
    specific :class:`AdapterValidationError` subclass naming the problem and the fix.
    """
    given = Path(path).expanduser()
    try:
        folder = given.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise AdapterValidationError(f"adapter folder {given} does not exist") from exc
    if roots is not None:
        resolved_roots = [Path(r).expanduser().resolve() for r in roots]
        if not any(folder == r or folder.is_relative_to(r) for r in resolved_roots):
            allowed = ", ".join(str(r) for r in resolved_roots) or "(none configured)"
            raise AdapterPathError(
                f"adapter folder {given} resolves to {folder}, outside the allowed adapter "
                f"roots {allowed}; move it under a root or add its parent with "
                "TRELLIS_ADAPTER_ROOTS"
            )
    if not folder.is_dir():
        raise AdapterValidationError(f"{given} is not a folder; give the PEFT adapter folder")
    config_path = folder / ADAPTER_CONFIG_NAME
    if not config_path.is_file():
        raise AdapterValidationError(
            f"{given} has no {ADAPTER_CONFIG_NAME}; give a folder written by PEFT save_pretrained"
        )
    try:
        config: Any = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AdapterValidationError(
            f"{config_path} is not parseable JSON ({exc}); re-save the adapter"
        ) from exc
    if not isinstance(config, dict):
        raise AdapterValidationError(f"{config_path} must hold a JSON object")
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise AdapterValidationError(
            f"{config_path} declares peft_type {peft_type}; only LoRA adapters are supported"
        )
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise AdapterValidationError(f"{config_path} has no valid rank 'r' (got {rank!r})")
    declared = config.get("base_model_name_or_path")
    declared_text = declared if isinstance(declared, str) else ""
    if base_model is not None and not _same_model(declared_text, base_model):
        raise IncompatibleAdapterError(
            f"adapter {given} was made for base model {declared!r}, but this registry serves "
            f"{base_model!r}; use an adapter trained on {base_model}"
        )
    if max_rank is not None and rank > max_rank:
        raise IncompatibleAdapterError(
            f"adapter {given} has rank {rank}, above the maximum rank {max_rank} the backends "
            "are configured for; retrain with a lower rank or raise max_rank (and the vLLM "
            "server's --max-lora-rank)"
        )
    modules_raw = config.get("target_modules")
    if isinstance(modules_raw, str):
        modules: tuple[str, ...] = (modules_raw,)
    elif isinstance(modules_raw, list) and all(isinstance(m, str) for m in modules_raw):
        modules = tuple(sorted(modules_raw))
    else:
        raise AdapterValidationError(f"{config_path} has no valid target_modules")
    weights = next((folder / n for n in ADAPTER_WEIGHTS_NAMES if (folder / n).is_file()), None)
    if weights is None:
        raise AdapterValidationError(
            f"{given} has no weights ({' or '.join(ADAPTER_WEIGHTS_NAMES)}); copy the whole "
            "adapter folder"
        )
    if weights.suffix == ".safetensors":
        _check_safetensors(weights)
    elif weights.stat().st_size == 0:
        raise AdapterValidationError(f"adapter weights {weights} are empty")
    return AdapterInfo(
        path=folder,
        base_model=declared_text,
        rank=rank,
        target_modules=modules,
        weights_file=weights.name,
    )


def _clean_texts(values: Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        raise AdapterValidationError(f"{what} must be a list of strings, not one string")
    cleaned = tuple(v.strip() for v in values if isinstance(v, str) and v.strip())
    return cleaned


class AdapterRegistry:
    """Adapters recorded in the Trellis database.

    ``engine`` is an Engine or a database URL; the schema is migrated on construction
    unless ``migrate=False``. ``roots`` defaults to :func:`default_adapter_roots`.
    """

    def __init__(
        self,
        engine: Engine | str | None = None,
        *,
        base_model: str = DEFAULT_BASE_MODEL,
        roots: Sequence[Path | str] | None = None,
        max_rank: int = 16,
        migrate: bool = True,
    ) -> None:
        if max_rank < 1:
            raise AdapterValidationError(f"max_rank must be at least 1, got {max_rank}")
        self.engine = engine if isinstance(engine, Engine) else make_engine(engine)
        self.base_model = base_model
        self._configured_roots = tuple(
            Path(r).expanduser() for r in (roots or default_adapter_roots())
        )
        self.max_rank = max_rank
        if migrate:
            upgrade(self.engine)
        self._sessions = make_sessionmaker(self.engine)

    @property
    def roots(self) -> tuple[Path, ...]:
        """Where adapter folders may lie: the configured roots, then every shipped folder
        (part of an installed package, so always allowed)."""
        return (*self._configured_roots, *shipped_folders())

    def inspect(self, path: Path | str) -> AdapterInfo:
        """Validate a folder against this registry's base model, rank limit and roots."""
        return inspect_adapter(
            path, base_model=self.base_model, max_rank=self.max_rank, roots=self.roots
        )

    def add(
        self,
        name: str,
        path: Path | str,
        *,
        description: str,
        examples: Sequence[str],
        tags: Sequence[str] = (),
    ) -> AdapterRecord:
        """Validate the folder and register it under ``name``."""
        check_adapter_name(name)
        if not isinstance(description, str) or not description.strip():
            raise AdapterValidationError(
                f"adapter {name!r} needs a non-empty description (what it is for); the router "
                "matches requests against it"
            )
        example_texts = _clean_texts(examples, "examples")
        if not example_texts:
            raise AdapterValidationError(
                f"adapter {name!r} needs at least one example prompt; the router matches "
                "requests against them"
            )
        tag_texts = _clean_texts(tags, "tags")
        info = self.inspect(path)
        row = AdapterRow(
            name=name,
            base_model=self.base_model,
            path=str(info.path),
            rank=info.rank,
            target_modules=list(info.target_modules),
            description=description.strip(),
            examples=list(example_texts),
            tags=list(tag_texts),
            created=_now(),
        )
        with self._sessions() as session:
            if session.get(AdapterRow, name) is not None:
                raise DuplicateAdapterError(name)
            session.add(row)
            try:
                session.commit()
            except IntegrityError as exc:  # registered concurrently by another process
                raise DuplicateAdapterError(name) from exc
            return row.record()

    def remove(self, name: str) -> AdapterRecord:
        """Unregister ``name`` (the folder on disk is left alone); returns what was removed."""
        with self._sessions() as session:
            row = session.get(AdapterRow, name)
            if row is None:
                raise UnknownAdapterError(name, self._names(session))
            record = row.record()
            session.delete(row)
            session.commit()
            return record

    def get(self, name: str) -> AdapterRecord:
        """The adapter called ``name``; UnknownAdapterError lists the registered ones."""
        with self._sessions() as session:
            row = session.get(AdapterRow, name)
            if row is None:
                raise UnknownAdapterError(name, self._names(session))
            return row.record()

    def path_of(self, name: str) -> Path | None:
        """The folder of adapter ``name``, or None (a backend's ``resolve_adapter_path``)."""
        with self._sessions() as session:
            row = session.get(AdapterRow, name)
            return Path(row.path) if row is not None else None

    def list(self) -> builtins.list[AdapterRecord]:
        """Every registered adapter, by name."""
        with self._sessions() as session:
            rows = session.scalars(select(AdapterRow).order_by(AdapterRow.name)).all()
            return [row.record() for row in rows]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        with self._sessions() as session:
            return session.get(AdapterRow, name) is not None

    @staticmethod
    def _names(session: Any) -> builtins.list[str]:
        return builtins.list(session.scalars(select(AdapterRow.name)).all())
