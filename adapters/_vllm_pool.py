"""Configuration and server bookkeeping for the vLLM backend.

Each configured server has its own concurrency limit, in-flight count, a down-until mark set
on connection errors, and a residency cache: the models it lists on ``/v1/models`` (the base
model and every registered LoRA) and the adapters that its ``vllm:lora_requests_info`` gauge
shows as running or waiting (the ones in the LoRA slots right now). Requests go to a server
where their adapter is active, else registered, else to the least loaded server.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trellis.adapters.errors import MalformedResponseError

__all__ = [
    "ServedModel",
    "ServerResidency",
    "VLLMConfig",
    "parse_lora_metrics",
    "parse_models",
]

# Adapter names travel in JSON bodies and end up in server logs and metric labels: keep them
# to a plain identifier alphabet so that no name can smuggle separators or paths.
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class VLLMConfig(BaseModel):
    """Where the vLLM servers are and how the backend talks to them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    servers: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8000"], min_length=1)
    """Base URLs of the OpenAI-compatible vLLM servers (``http://host:port``), all serving the
    same base model."""
    base_model: str | None = None
    """The served name of the base model (``--served-model-name``); None: read it from the
    first server's ``/v1/models`` (the entry without a parent)."""
    api_key: str | None = None
    """Bearer token sent to the servers (``--api-key``), if they require one."""
    max_concurrency: int = Field(default=16, ge=1, le=1024)
    """Requests in flight per server; more wait (their wait counts against ``timeout_s``)."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    """Seconds to establish a connection before the server counts as unreachable."""
    admin_timeout_s: float = Field(default=120.0, gt=0)
    """Seconds allowed for model listing, metrics and adapter load/unload calls."""
    max_retries: int = Field(default=4, ge=0, le=1000)
    """Retries after a 5xx answer or a connection error (never after a 4xx answer)."""
    backoff_base_s: float = Field(default=0.5, ge=0)
    """First retry delay; it doubles on each retry up to ``backoff_max_s``."""
    backoff_max_s: float = Field(default=8.0, ge=0)
    """Upper bound on one retry delay."""
    down_for_s: float = Field(default=5.0, ge=0)
    """After a connection error a server is avoided for this long while others are up."""
    residency_ttl_s: float = Field(default=15.0, ge=0)
    """How long a server's list of resident adapters is trusted before it is read again."""
    runtime_loading: bool = True
    """Load an adapter on first use (``/v1/load_lora_adapter``) when its folder is known and
    the server allows runtime updating (``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``)."""
    adapter_paths: dict[str, Path] = Field(default_factory=dict)
    """Adapter folders that may be loaded at runtime, by adapter name."""
    check_adapter_paths: bool = True
    """Check that an adapter folder exists here (with adapter_config.json) before asking a
    server to load it; turn off when the servers see another filesystem."""
    structured_output: Literal["structured_outputs", "response_format"] = "structured_outputs"
    """How a JSON schema is sent: vLLM's ``structured_outputs`` field (0.12+) or the OpenAI
    ``response_format`` field (other OpenAI-compatible servers)."""

    @field_validator("servers")
    @classmethod
    def _check_servers(cls, servers: list[str]) -> list[str]:
        cleaned = []
        for url in servers:
            if not re.match(r"^https?://[^/\s]+(/[^\s]*)?$", url):
                raise ValueError(
                    f"server {url!r} is not an http(s) URL such as http://127.0.0.1:8000"
                )
            cleaned.append(url.rstrip("/"))
        if len(set(cleaned)) != len(cleaned):
            raise ValueError(f"servers are listed twice: {cleaned}")
        return cleaned

    @field_validator("adapter_paths")
    @classmethod
    def _check_adapter_names(cls, paths: dict[str, Path]) -> dict[str, Path]:
        for name in paths:
            if not ADAPTER_NAME.match(name):
                raise ValueError(f"adapter name {name!r} must match {ADAPTER_NAME.pattern}")
        return paths


class ServedModel(BaseModel):
    """One entry of a server's ``/v1/models``."""

    model_config = ConfigDict(frozen=True)

    id: str
    """The name requests use in their ``model`` field."""
    parent: str | None = None
    """For a LoRA adapter, the base model it is applied to; None for the base model itself."""
    root: str | None = None
    """The model or adapter path the server loaded it from."""
    max_model_len: int | None = None
    """Context length the server allows (base model entries)."""
    server: str = ""
    """The server that listed it."""


class ServerResidency(BaseModel):
    """Which adapters a server holds."""

    model_config = ConfigDict(frozen=True)

    server: str
    """Server base URL."""
    up: bool
    """Whether the server answered."""
    base_model: str | None = None
    """The served base model name."""
    registered: frozenset[str] = frozenset()
    """Adapters listed on ``/v1/models`` (servable without loading)."""
    active: frozenset[str] = frozenset()
    """Adapters running or waiting in the LoRA slots (``vllm:lora_requests_info``)."""
    max_lora: int | None = None
    """How many adapters fit in the slots at once (``--max-loras``), from the same gauge."""


def parse_models(payload: Any, server: str) -> list[ServedModel]:
    """Parse a ``/v1/models`` answer; raises MalformedResponseError on another shape."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise MalformedResponseError(
            f"{server}/v1/models answered without a 'data' list: {payload!r:.200}"
        )
    models = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise MalformedResponseError(
                f"{server}/v1/models has an entry without an id: {entry!r:.200}"
            )
        max_len = entry.get("max_model_len")
        models.append(
            ServedModel(
                id=entry["id"],
                parent=entry.get("parent") if isinstance(entry.get("parent"), str) else None,
                root=entry.get("root") if isinstance(entry.get("root"), str) else None,
                max_model_len=max_len if isinstance(max_len, int) else None,
                server=server,
            )
        )
    return models


_SAMPLE = re.compile(r"^vllm:lora_requests_info\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_lora_metrics(text: str) -> tuple[frozenset[str], int | None]:
    """Active adapters and ``max_lora`` from a Prometheus ``/metrics`` page.

    The gauge has one sample per label set, valued with the time it was last set: the newest
    one is the current state.
    """
    newest: tuple[float, dict[str, str]] | None = None
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if newest is None or value >= newest[0]:
            newest = (value, labels)
    if newest is None:
        return frozenset(), None
    labels = newest[1]
    names = {
        name.strip()
        for key in ("running_lora_adapters", "waiting_lora_adapters")
        for name in labels.get(key, "").split(",")
        if name.strip()
    }
    max_lora = labels.get("max_lora", "")
    return frozenset(names), int(max_lora) if max_lora.isdigit() else None


@dataclass
class ServerState:
    """Mutable per-server bookkeeping (one event loop uses it; no thread sharing)."""

    url: str
    semaphore: asyncio.Semaphore
    in_flight: int = 0
    down_until: float = 0.0
    was_down: bool = False
    base_model: str | None = None
    registered: set[str] = field(default_factory=set)
    active: set[str] = field(default_factory=set)
    max_lora: int | None = None
    residency_at: float = float("-inf")
    refresh_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    runtime_loaded: dict[str, Path] = field(default_factory=dict)
    """Adapters this backend loaded at runtime, to load again after a server restart."""

    def is_down(self, now: float | None = None) -> bool:
        return (now if now is not None else time.monotonic()) < self.down_until

    def mark_down(self, for_s: float) -> None:
        self.down_until = time.monotonic() + for_s
        self.was_down = True
        # A restarted server forgets runtime-loaded adapters: read its state again.
        self.residency_at = float("-inf")

    def mark_up(self) -> None:
        self.down_until = 0.0

    def holds(self, model: str) -> bool:
        return model == self.base_model or model in self.registered

    def snapshot(self, up: bool) -> ServerResidency:
        return ServerResidency(
            server=self.url,
            up=up,
            base_model=self.base_model,
            registered=frozenset(self.registered),
            active=frozenset(self.active),
            max_lora=self.max_lora,
        )


def choose_server(states: list[ServerState], model: str, turn: int) -> ServerState:
    """The server for a request to ``model``: up before down, then where ``model`` is active,
    then where it is registered, then the fewest requests in flight (``turn`` breaks ties so
    equal servers take turns)."""
    now = time.monotonic()
    count = len(states)

    def rank(item: tuple[int, ServerState]) -> tuple[int, int, int, int]:
        index, state = item
        return (
            1 if state.is_down(now) else 0,
            0 if model in state.active else 1,
            0 if state.holds(model) else 1,
            state.in_flight * count + (index - turn) % count,
        )

    return min(enumerate(states), key=rank)[1]
