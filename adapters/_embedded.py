"""The embedded backend: transformers + peft in this process, micro-batched across adapters.

Concurrent requests are collected for up to ``batch_wait_ms`` (or ``max_batch_size`` rows)
and served in one forward pass per step, each row through its own LoRA adapter (peft's
``adapter_names=``, in the spirit of S-LoRA). The model is loaded once per process and
shared by every backend on the same folder; one worker thread per model runs generation,
so the event loop never blocks on the model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trellis.adapters._backend import BackendBase, LLMRequest, LLMResult, parse_json_text
from trellis.adapters._embedded_model import (
    LoadedModel,
    Row,
    compile_schema,
    first_stop,
    generate_batch,
    load_model,
    render_prompt,
)
from trellis.adapters._model import model_identity, resolve_model_dir
from trellis.adapters._registry import check_adapter_name, inspect_adapter
from trellis.adapters.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    DuplicateAdapterError,
    UnknownAdapterError,
)
from trellis.memory.errors import TrellisError

__all__ = ["BatchStats", "EmbeddedBackend", "EmbeddedConfig"]


class EmbeddedConfig(BaseModel):
    """How the embedded backend loads and batches the model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_dir: Path | None = None
    """HF model folder; None uses the prepared default (`trellis model prepare`)."""
    base_model_name: str | None = None
    """Name adapters must declare as their base; None takes it from the model's manifest."""
    device: str = "cpu"
    """Torch device (``cpu``, ``cuda``, ``cuda:1``)."""
    dtype: str = Field(default="float32", pattern=r"^(float32|float16|bfloat16)$")
    """Weights dtype; float32 is fastest on CPUs without bf16 support."""
    max_batch_size: int = Field(default=8, ge=1, le=256)
    """Most rows served in one generate call."""
    batch_wait_ms: float = Field(default=5.0, ge=0.0, le=1000.0)
    """How long the scheduler waits for more requests before starting a batch."""
    max_rank: int = Field(default=16, ge=1)
    """Highest LoRA rank accepted by ``load_adapter``."""
    adapter_roots: tuple[Path, ...] | None = None
    """When set, adapters may only be loaded from below these folders."""
    adapters: dict[str, Path] = Field(default_factory=dict)
    """Adapters to load at start, name -> PEFT folder."""
    threads: int | None = Field(default=None, ge=1)
    """Torch intra-op threads for this process; None keeps torch's default. On a CPU shared
    with other busy processes, 1 avoids threads spinning while they wait for each other."""


@dataclass(frozen=True)
class BatchStats:
    """What the scheduler did so far (for tests, benchmarks and metrics)."""

    batches: int
    """Generate calls made."""
    rows: int
    """Requests served."""
    max_rows: int
    """Largest batch seen."""
    mixed_batches: int
    """Batches whose rows used more than one adapter (base model included)."""
    batch_sizes: tuple[int, ...]
    """Size of each batch, in order (the last 1000)."""
    batch_adapters: tuple[tuple[str, ...], ...]
    """Adapter of each row of each batch, in order (the last 1000)."""


@dataclass
class _Job:
    row: Row
    future: concurrent.futures.Future[Any]
    key: Hashable


class _Scheduler:
    """One worker thread per loaded model: collects jobs into batches and runs them."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.queue: queue.Queue[_Job] = queue.Queue()
        self.max_batch = 8
        self.wait_s = 0.005
        self._stats_lock = threading.Lock()
        self._batches = 0
        self._rows = 0
        self._max_rows = 0
        self._mixed = 0
        self._sizes: list[int] = []
        self._adapters: list[tuple[str, ...]] = []
        self.thread = threading.Thread(target=self._run, name="trellis-embedded", daemon=True)
        self.thread.start()

    def stats(self) -> BatchStats:
        with self._stats_lock:
            return BatchStats(
                batches=self._batches,
                rows=self._rows,
                max_rows=self._max_rows,
                mixed_batches=self._mixed,
                batch_sizes=tuple(self._sizes),
                batch_adapters=tuple(self._adapters),
            )

    def _collect(self) -> list[_Job]:
        jobs = [self.queue.get()]
        deadline = time.monotonic() + self.wait_s
        while len(jobs) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                jobs.append(
                    self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
                )
            except queue.Empty:
                break
        return jobs

    def _run(self) -> None:
        while True:
            jobs = self._collect()
            groups: dict[Hashable, list[_Job]] = {}
            for job in jobs:
                if job.future.set_running_or_notify_cancel():
                    groups.setdefault(job.key, []).append(job)
            for group in groups.values():
                self._serve(group)

    def _serve(self, jobs: list[_Job]) -> None:
        ready: list[_Job] = []
        now = time.monotonic()
        for job in jobs:
            row = job.row
            if row.cancelled or now > row.deadline:
                job.future.set_exception(_timeout(row.request))
            elif (
                row.request.adapter is not None and row.request.adapter not in self.loaded.adapters
            ):
                # Unloaded while queued: fail it rather than serve it with the base model.
                job.future.set_exception(
                    UnknownAdapterError(row.request.adapter, list(self.loaded.adapters))
                )
            else:
                ready.append(job)
        if not ready:
            return
        try:
            outputs = generate_batch(self.loaded, [job.row for job in ready])
        except TrellisError as exc:
            for job in ready:
                job.future.set_exception(exc)
            return
        except Exception as exc:  # torch or peft failed: every row of the batch gets the error
            failure = BackendError(f"embedded generation failed: {type(exc).__name__}: {exc}")
            failure.__cause__ = exc
            for job in ready:
                job.future.set_exception(failure)
            return
        names = tuple(job.row.adapter for job in ready)
        with self._stats_lock:
            self._batches += 1
            self._rows += len(ready)
            self._max_rows = max(self._max_rows, len(ready))
            self._mixed += len(set(names)) > 1
            self._sizes = [*self._sizes[-999:], len(ready)]
            self._adapters = [*self._adapters[-999:], names]
        for job, output in zip(ready, outputs, strict=True):
            job.future.set_result(output)


def _timeout(request: LLMRequest) -> BackendTimeoutError:
    return BackendTimeoutError(
        f"the embedded model did not answer within timeout_s={request.timeout_s}; raise "
        "LLMRequest.timeout_s, lower max_tokens, or send fewer concurrent requests"
    )


_schedulers: dict[int, _Scheduler] = {}
_schedulers_lock = threading.Lock()


def _scheduler_for(loaded: LoadedModel, config: EmbeddedConfig) -> _Scheduler:
    with _schedulers_lock:
        scheduler = _schedulers.get(id(loaded))
        if scheduler is None:
            scheduler = _schedulers[id(loaded)] = _Scheduler(loaded)
        # The last backend configured on a model sets its batching limits.
        scheduler.max_batch = config.max_batch_size
        scheduler.wait_s = config.batch_wait_ms / 1000
        return scheduler


class EmbeddedBackend(BackendBase):
    """transformers + peft in this process; implements :class:`LLMBackend`.

    The model loads on first use (or ``await backend.start()``); adapters are added with
    ``load_adapter``. Several backends on the same folder share one model and its adapters.
    """

    def __init__(
        self,
        config: EmbeddedConfig | None = None,
        *,
        resolve_adapter_path: Callable[[str], Path | None] | None = None,
    ) -> None:
        self.config = config or EmbeddedConfig()
        # Loads an adapter on first use, e.g. ``resolve_adapter_path=registry.path_of``.
        self._resolve = resolve_adapter_path
        self._loaded: LoadedModel | None = None
        self._scheduler: _Scheduler | None = None
        self._start_lock = asyncio.Lock()
        self._adapter_lock = asyncio.Lock()
        self._grammars: dict[str, str] = {}
        self._closed = False
        self.name = "embedded"

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model (once per process) and the configured adapters."""
        if self._closed:
            raise BackendUnavailableError("this embedded backend was closed; create a new one")
        async with self._start_lock:
            if self._loaded is not None:
                return
            loaded = await asyncio.to_thread(self._load)
            self._scheduler = _scheduler_for(loaded, self.config)
            self._loaded = loaded
            self.name = f"embedded:{loaded.name}"
        for name, path in self.config.adapters.items():
            await self.load_adapter(name, path)

    def _load(self) -> LoadedModel:
        if self.config.threads is not None:
            import torch

            torch.set_num_threads(self.config.threads)
        model_dir = resolve_model_dir(self.config.model_dir)
        name = self.config.base_model_name or model_identity(model_dir)["name"]
        return load_model(model_dir, name=name, device=self.config.device, dtype=self.config.dtype)

    async def aclose(self) -> None:
        # The model stays cached for the process: other backends may share it.
        self._closed = True

    @property
    def base_model(self) -> str:
        """The name adapters must declare as their base model (after start)."""
        return self._require().name

    def _require(self) -> LoadedModel:
        if self._loaded is None:
            raise BackendUnavailableError("the embedded backend is not started; await start()")
        return self._loaded

    # --- adapters -------------------------------------------------------------------------

    async def load_adapter(self, name: str, path: Path | str) -> None:
        """Validate a PEFT LoRA folder and put it on the model under ``name``."""
        await self.start()
        loaded = self._require()
        check_adapter_name(name)
        info = inspect_adapter(
            path,
            base_model=loaded.name,
            max_rank=self.config.max_rank,
            roots=self.config.adapter_roots,
        )
        async with self._adapter_lock:
            current = loaded.adapters.get(name)
            if current is not None:
                if current == info.path:
                    return
                raise DuplicateAdapterError(name)
            await asyncio.to_thread(loaded.add_adapter, name, info.path)

    async def unload_adapter(self, name: str) -> None:
        """Take adapter ``name`` off the model; queued requests for it then fail."""
        loaded = self._require()
        async with self._adapter_lock:
            if name not in loaded.adapters:
                raise UnknownAdapterError(name, list(loaded.adapters))
            await asyncio.to_thread(loaded.remove_adapter, name)

    def adapters(self) -> dict[str, Path]:
        """Loaded adapters, name -> folder."""
        return dict(self._loaded.adapters) if self._loaded is not None else {}

    @property
    def stats(self) -> BatchStats:
        """Batching statistics of the shared scheduler."""
        if self._scheduler is None:
            return BatchStats(0, 0, 0, 0, (), ())
        return self._scheduler.stats()

    # --- generation -----------------------------------------------------------------------

    def _grammar(self, schema: Mapping[str, Any]) -> str:
        key = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = self._grammars[key] = compile_schema(dict(schema))
        return grammar

    async def generate(self, request: LLMRequest) -> LLMResult:
        return await self._serve(request, None)

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        """Yield text as rows advance; held back near a possible stop string."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str] = asyncio.Queue()
        stops = request.sampling.stop
        hold = max((len(s) for s in stops), default=1) - 1
        sent = [""]  # written on the worker thread only

        def on_tokens(token_ids: list[int]) -> None:
            text = self._require().tokenizer.decode(token_ids, skip_special_tokens=True)
            cut = first_stop(text, stops)
            if cut is not None:
                text = text[:cut]
            safe = (text[: len(text) - hold] if hold else text).rstrip("\ufffd")
            if len(safe) > len(sent[0]) and safe.startswith(sent[0]):
                delta, sent[0] = safe[len(sent[0]) :], safe
                loop.call_soon_threadsafe(pieces.put_nowait, delta)

        task = asyncio.ensure_future(self._serve(request, on_tokens))
        try:
            while not task.done() or not pieces.empty():
                getter = asyncio.ensure_future(pieces.get())
                done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    yield getter.result()
                else:
                    getter.cancel()
            final = task.result().text
            if final.startswith(sent[0]) and len(final) > len(sent[0]):
                yield final[len(sent[0]) :]
        finally:
            if not task.done():
                task.cancel()

    async def _serve(
        self, request: LLMRequest, on_tokens: Callable[[list[int]], None] | None
    ) -> LLMResult:
        started = time.perf_counter()
        await self.start()
        loaded = self._require()
        scheduler = self._scheduler
        if scheduler is None:
            raise BackendUnavailableError("the embedded backend is not started; await start()")
        if request.adapter is not None and request.adapter not in loaded.adapters:
            path = (
                await asyncio.to_thread(self._resolve, request.adapter) if self._resolve else None
            )
            if path is None:
                raise UnknownAdapterError(request.adapter, list(loaded.adapters))
            await self.load_adapter(request.adapter, path)
        grammar = self._grammar(request.json_schema) if request.json_schema is not None else None
        if grammar is not None and not loaded.ll_tokenizer_ready:
            await asyncio.to_thread(loaded.ll_tokenizer)  # build it off the event loop, once
        input_ids = render_prompt(loaded, request)
        deadline = time.monotonic() + request.timeout_s
        row = Row(
            request=request,
            input_ids=input_ids,
            grammar=grammar,
            deadline=deadline,
            on_tokens=on_tokens,
        )
        job = _Job(row=row, future=concurrent.futures.Future(), key=_batch_key(request))
        scheduler.queue.put(job)
        remaining = max(0.001, deadline - time.monotonic())
        try:
            output = await asyncio.wait_for(asyncio.wrap_future(job.future), remaining)
        except TimeoutError:
            row.cancelled = True
            raise _timeout(request) from None
        except asyncio.CancelledError:
            row.cancelled = True
            raise
        if output.timed_out:
            raise _timeout(request)
        parsed, json_error = (None, None)
        if request.json_schema is not None:
            parsed, json_error = parse_json_text(output.text)
            if output.grammar_error:
                json_error = f"constrained decoding failed: {output.grammar_error}"
        return LLMResult(
            text=output.text,
            parsed=parsed,
            json_error=json_error,
            prompt_tokens=len(input_ids),
            completion_tokens=len(output.token_ids),
            latency_s=time.perf_counter() - started,
            adapter=request.adapter,
            backend=self.name,
            finish_reason=output.finish_reason,
        )


_counter = iter(range(1 << 62))
_counter_lock = threading.Lock()


def _batch_key(request: LLMRequest) -> Hashable:
    sampling = request.sampling
    if sampling.temperature == 0:
        return ("greedy",)
    if sampling.seed is not None:
        # A seeded row is reproducible only alone: batch neighbours would share its RNG.
        with _counter_lock:
            return ("seeded", next(_counter))
    return ("sample", sampling.temperature, sampling.top_p)
