"""The vLLM backend: LLM requests over HTTP to one or more OpenAI-compatible vLLM servers.

The adapter is chosen by the request's ``model`` field (the LoRA name, or the served base
model name). Every answer's ``model`` field is checked against the request, so a request is
never silently served by another adapter. Adapters load on first use through
``/v1/load_lora_adapter`` when their folder is known; 5xx answers and connection errors are
retried with exponential backoff (on another server when one is up), 4xx answers never are.

    backend = VLLMBackend(VLLMConfig(servers=["http://127.0.0.1:8000"]))
    result = await backend.generate(LLMRequest(prompt="Hello", adapter="kitchen"))
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from trellis.adapters._backend import BackendBase, LLMRequest, LLMResult, parse_json_text
from trellis.adapters._vllm_pool import (
    ADAPTER_NAME,
    ServedModel,
    ServerResidency,
    ServerState,
    VLLMConfig,
    choose_server,
    parse_lora_metrics,
    parse_models,
)
from trellis.adapters.errors import (
    AdapterMismatchError,
    AdapterValidationError,
    BackendError,
    BackendRequestError,
    BackendTimeoutError,
    BackendUnavailableError,
    MalformedResponseError,
    SchemaCompileError,
    UnknownAdapterError,
)

__all__ = ["VLLMBackend"]

AdapterPathResolver = Callable[[str], Path | None]

_SCHEMA_WORDS = ("schema", "grammar", "json", "structured", "guided", "xgrammar", "guidance")


class _Retryable(Exception):
    """A failure worth another try: a connection error or a 5xx answer."""

    def __init__(self, message: str, *, unavailable: bool) -> None:
        super().__init__(message)
        self.unavailable = unavailable


def _error_message(response: httpx.Response) -> str:
    """The human-readable part of a vLLM error answer (JSON ``error.message`` or plain text)."""
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(payload.get("detail"), str):
            return str(payload["detail"])
        if isinstance(payload.get("message"), str):
            return str(payload["message"])
    return str(payload)[:500]


def _is_unknown_model(response: httpx.Response) -> bool:
    """vLLM's answer for a ``model`` it does not serve: 404 with an OpenAI-style error body
    (a route that does not exist answers 404 ``{"detail": "Not Found"}`` instead)."""
    if response.status_code != 404:
        return False
    try:
        payload = response.json()
    except ValueError:
        return False
    return isinstance(payload, dict) and isinstance(payload.get("error"), dict)


class VLLMBackend(BackendBase):
    """LLM backend over one or more vLLM servers (see the module docstring)."""

    def __init__(
        self,
        config: VLLMConfig | None = None,
        *,
        resolve_adapter_path: AdapterPathResolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        name: str = "vllm",
    ) -> None:
        self.config = config or VLLMConfig()
        self.name = name
        self._resolve = resolve_adapter_path
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._states = [
            ServerState(url=url, semaphore=asyncio.Semaphore(self.config.max_concurrency))
            for url in self.config.servers
        ]
        self._turn = 0

    # --- plumbing -----------------------------------------------------------------------------

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            cfg = self.config
            headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
            self._client = httpx.AsyncClient(
                transport=self._transport,
                headers=headers,
                # Connect is bounded here; the rest is bounded by each call's own deadline.
                timeout=httpx.Timeout(None, connect=cfg.connect_timeout_s),
                limits=httpx.Limits(
                    max_connections=cfg.max_concurrency * len(cfg.servers) + 8,
                    max_keepalive_connections=cfg.max_concurrency * len(cfg.servers),
                ),
            )
        return self._client

    def _state(self, server: str) -> ServerState:
        url = server.rstrip("/")
        for state in self._states:
            if state.url == url:
                return state
        raise BackendRequestError(
            f"server {server!r} is not configured; configured: {', '.join(self.config.servers)}"
        )

    async def _call(
        self,
        state: ServerState,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """One HTTP call; connection errors mark the server down and become ``_Retryable``."""
        try:
            response = await self.client.request(
                method,
                state.url + path,
                json=body,
                timeout=httpx.Timeout(timeout_s, connect=self.config.connect_timeout_s),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                httpx.ReadError, httpx.WriteError, httpx.PoolTimeout) as exc:  # fmt: skip
            state.mark_down(self.config.down_for_s)
            raise _Retryable(
                f"{state.url} is unreachable ({type(exc).__name__}: {exc})", unavailable=True
            ) from exc
        except httpx.TimeoutException as exc:
            raise BackendTimeoutError(
                f"{state.url}{path} did not answer within {timeout_s} s"
            ) from exc
        if response.status_code >= 500:
            raise _Retryable(
                f"{state.url}{path} answered {response.status_code}: {_error_message(response)}",
                unavailable=False,
            )
        return response

    # --- residency ----------------------------------------------------------------------------

    async def _fetch_models(self, state: ServerState) -> list[ServedModel]:
        response = await self._call(
            state, "GET", "/v1/models", timeout_s=self.config.admin_timeout_s
        )
        where = f"{state.url}/v1/models"
        if response.status_code != 200:
            message = _error_message(response)
            raise MalformedResponseError(f"{where} answered {response.status_code}: {message}")
        try:
            payload = response.json()
        except ValueError as exc:
            raise MalformedResponseError(f"{where} answered non-JSON: {exc}") from exc
        return parse_models(payload, state.url)

    async def _refresh(self, state: ServerState, *, force: bool = False) -> bool:
        """Read the server's models and LoRA metrics; False when it cannot be reached."""
        async with state.refresh_lock:
            if not force and time.monotonic() - state.residency_at < self.config.residency_ttl_s:
                return True
            try:
                models = await self._fetch_models(state)
            except _Retryable:
                return False
            bases = [m.id for m in models if m.parent is None]
            wanted = self.config.base_model
            state.base_model = wanted if wanted in bases else (bases[0] if bases else None)
            state.registered = {m.id for m in models if m.parent is not None}
            try:
                metrics = await self._call(
                    state, "GET", "/metrics", timeout_s=self.config.admin_timeout_s
                )
                if metrics.status_code == 200:
                    active, state.max_lora = parse_lora_metrics(metrics.text)
                    state.active = set(active)
            except (_Retryable, BackendTimeoutError):
                pass  # metrics are a hint; /v1/models already answered
            state.mark_up()
            state.residency_at = time.monotonic()
            return True

    async def _refresh_stale(self) -> None:
        now = time.monotonic()
        stale = [
            s for s in self._states
            if not s.is_down(now) and now - s.residency_at >= self.config.residency_ttl_s
        ]  # fmt: skip
        if stale:
            await asyncio.gather(*(self._refresh(s) for s in stale))

    async def _base_model(self) -> str:
        if self.config.base_model:
            return self.config.base_model
        for state in self._states:
            if state.base_model:
                return state.base_model
        for state in self._states:
            if await self._refresh(state, force=True) and state.base_model:
                return state.base_model
        raise BackendUnavailableError(
            f"no vLLM server answered /v1/models ({', '.join(self.config.servers)}); start one "
            "with `bash scripts/vllm_server.sh start --port P --model DIR` or fix "
            "VLLMConfig.servers"
        )

    def _adapter_path(self, name: str) -> Path | None:
        if name in self.config.adapter_paths:
            return self.config.adapter_paths[name]
        for state in self._states:
            if name in state.runtime_loaded:
                return state.runtime_loaded[name]
        return self._resolve(name) if self._resolve is not None else None

    # --- public: server administration ----------------------------------------------------------

    async def list_models(self, server: str | None = None) -> list[ServedModel]:
        """The models (base and adapters, with ``parent``) on one server, or on every server
        that answers; raises BackendUnavailableError when none does."""
        states = [self._state(server)] if server else self._states
        models: list[ServedModel] = []
        answered = False
        for state in states:
            try:
                models.extend(await self._fetch_models(state))
            except _Retryable as exc:
                if server:
                    raise BackendUnavailableError(str(exc)) from exc
                continue
            answered = True
        if not answered:
            raise BackendUnavailableError(
                f"no vLLM server answered: {', '.join(s.url for s in states)}"
            )
        return models

    async def resident_adapters(self) -> list[ServerResidency]:
        """Each server's registered and active adapters, read now (``up=False`` if unreachable)."""
        results = await asyncio.gather(*(self._refresh(s, force=True) for s in self._states))
        return [s.snapshot(up) for s, up in zip(self._states, results, strict=True)]

    def _checked_path(self, name: str, path: Path | str) -> Path:
        if not ADAPTER_NAME.match(name):
            raise AdapterValidationError(
                f"adapter name {name!r} is not allowed: use letters, digits, '.', '_' and '-' "
                "(at most 128, starting with a letter or digit)"
            )
        folder = Path(path).expanduser()
        if not self.config.check_adapter_paths:
            return folder
        folder = folder.resolve()
        if not (folder / "adapter_config.json").is_file():
            raise AdapterValidationError(
                f"{folder} is not a PEFT adapter folder (no adapter_config.json); "
                "point to the folder that save_pretrained wrote"
            )
        return folder

    async def _load_on(self, state: ServerState, name: str, folder: Path) -> None:
        response = await self._call(
            state,
            "POST",
            "/v1/load_lora_adapter",
            body={"lora_name": name, "lora_path": str(folder)},
            timeout_s=self.config.admin_timeout_s,
        )
        message = _error_message(response)
        if response.status_code == 404 and not _is_unknown_model(response):
            raise BackendRequestError(
                f"{state.url} does not allow loading adapters at runtime; start it with "
                f"VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or list {name!r} in --lora-modules",
                status_code=404,
            )
        if response.status_code >= 400 and "already been loaded" not in message:
            raise BackendRequestError(
                f"{state.url} refused to load adapter {name!r} from {folder}: {message}",
                status_code=response.status_code,
            )
        state.registered.add(name)
        state.runtime_loaded[name] = folder

    async def load_adapter(self, name: str, path: Path | str, *, server: str | None = None) -> None:
        """Load a LoRA folder under ``name`` on one server, or on every configured server."""
        folder = self._checked_path(name, path)
        for state in [self._state(server)] if server else self._states:
            try:
                await self._load_on(state, name, folder)
            except _Retryable as exc:
                raise BackendUnavailableError(f"cannot load {name!r}: {exc}") from exc

    async def unload_adapter(self, name: str, *, server: str | None = None) -> None:
        """Unload ``name`` from one server, or from every server that holds it.

        Raises UnknownAdapterError when no server had it loaded."""
        unloaded = False
        for state in [self._state(server)] if server else self._states:
            try:
                response = await self._call(
                    state, "POST", "/v1/unload_lora_adapter", body={"lora_name": name},
                    timeout_s=self.config.admin_timeout_s,
                )  # fmt: skip
            except _Retryable as exc:
                raise BackendUnavailableError(f"cannot unload {name!r}: {exc}") from exc
            state.registered.discard(name)
            state.active.discard(name)
            state.runtime_loaded.pop(name, None)
            if response.status_code < 400:
                unloaded = True
            elif response.status_code == 404 and not _is_unknown_model(response):
                raise BackendRequestError(
                    f"{state.url} does not allow unloading adapters at runtime; start it with "
                    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True",
                    status_code=404,
                )
            elif response.status_code not in (400, 404):
                raise BackendRequestError(
                    f"{state.url} refused to unload {name!r}: {_error_message(response)}",
                    status_code=response.status_code,
                )
        if not unloaded:
            raise UnknownAdapterError(name)

    # --- public: generation ---------------------------------------------------------------------

    def _body(self, request: LLMRequest, model: str) -> tuple[str, dict[str, Any]]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "n": 1,
            "stream": False,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if request.json_schema is not None:
            if self.config.structured_output == "structured_outputs":
                body["structured_outputs"] = {"json": request.json_schema}
            else:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": request.json_schema},
                }
        if request.messages is not None:
            body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
            return "/v1/chat/completions", body
        body["prompt"] = request.prompt
        return "/v1/completions", body

    async def generate(self, request: LLMRequest) -> LLMResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(request.timeout_s):
                return await self._generate(request, started)
        except TimeoutError as exc:
            raise BackendTimeoutError(
                f"request for {request.adapter or 'the base model'} did not finish within "
                f"{request.timeout_s} s; raise LLMRequest.timeout_s or add server capacity"
            ) from exc

    async def _generate(self, request: LLMRequest, started: float) -> LLMResult:
        cfg = self.config
        adapter = request.adapter
        if adapter is not None and not ADAPTER_NAME.match(adapter):
            raise UnknownAdapterError(adapter)
        model = adapter if adapter is not None else await self._base_model()
        path, body = self._body(request, model)
        failures = 0
        loaded_on: set[str] = set()
        # Not a generic retry policy (tenacity): each try picks a server, may first load the
        # adapter there, fails over at once to another server that is up, and backs off only
        # when every server is down or the error is not about availability.
        while True:
            await self._refresh_stale()
            self._turn += 1
            state = choose_server(self._states, model, self._turn)
            try:
                if adapter is not None and not state.holds(model) and state.url not in loaded_on:
                    folder = self._adapter_path(adapter) if cfg.runtime_loading else None
                    if folder is not None:
                        await self._load_on(state, adapter, self._checked_path(adapter, folder))
                        # Only after the server answered: a load lost to a dropped
                        # connection (a restart) is tried again.
                        loaded_on.add(state.url)
                async with state.semaphore:
                    state.in_flight += 1
                    try:
                        response = await self._call(state, "POST", path, body=body)
                    finally:
                        state.in_flight -= 1
            except _Retryable as exc:
                failures += 1
                if failures > cfg.max_retries:
                    kind = BackendUnavailableError if exc.unavailable else BackendError
                    raise kind(f"{exc}; gave up after {failures} tries") from exc
                if all(s.is_down() for s in self._states) or not exc.unavailable:
                    delay = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (failures - 1))
                    await asyncio.sleep(delay)
                continue
            if _is_unknown_model(response):
                state.registered.discard(model)
                state.active.discard(model)
                state.residency_at = float("-inf")
                folder = self._adapter_path(model) if adapter is not None else None
                loadable = adapter is not None and cfg.runtime_loading and folder is not None
                if loadable and state.url not in loaded_on:
                    continue  # the next pass loads it on this server, then asks again
                others = [s for s in self._states if s is not state and s.holds(model)]
                if others and failures < cfg.max_retries:
                    failures += 1
                    continue
                if adapter is None:
                    raise BackendRequestError(
                        f"{state.url} does not serve the base model {model!r}: "
                        f"{_error_message(response)}; set VLLMConfig.base_model to its "
                        "--served-model-name",
                        status_code=404,
                    )
                known = sorted({n for s in self._states for n in s.registered})
                raise UnknownAdapterError(adapter, known=known or None)
            if response.status_code >= 400:
                raise self._request_error(response, request, state)
            return self._result(response, request, model, state, started)

    def _request_error(
        self, response: httpx.Response, request: LLMRequest, state: ServerState
    ) -> Exception:
        message = _error_message(response)
        lowered = message.lower()
        if request.json_schema is not None and any(word in lowered for word in _SCHEMA_WORDS):
            return SchemaCompileError(
                f"{state.url} cannot use the request's JSON schema: {message}; simplify the "
                "schema (vLLM supports the JSON Schema subset of its structured-output backend)"
            )
        return BackendRequestError(
            f"{state.url} rejected the request ({response.status_code}): {message}",
            status_code=response.status_code,
        )

    def _result(
        self,
        response: httpx.Response,
        request: LLMRequest,
        model: str,
        state: ServerState,
        started: float,
    ) -> LLMResult:
        where = f"{state.url} ({response.status_code})"
        try:
            payload = response.json()
        except (ValueError, json.JSONDecodeError) as exc:
            raise MalformedResponseError(
                f"{where} answered non-JSON: {response.text[:200]!r}"
            ) from exc
        if not isinstance(payload, dict):
            raise MalformedResponseError(f"{where} answered {payload!r:.200}, not a JSON object")
        served = payload.get("model")
        if served != model:
            if not isinstance(served, str):
                raise MalformedResponseError(
                    f"{where} answered without a 'model' field: {payload!r:.200}"
                )
            raise AdapterMismatchError(model, served, state.url)
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise MalformedResponseError(f"{where} answered without choices: {payload!r:.200}")
        choice = choices[0]
        if request.messages is not None:
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
            if text is None and isinstance(message, dict) and "content" in message:
                text = ""
        else:
            text = choice.get("text")
        if not isinstance(text, str):
            raise MalformedResponseError(f"{where} answered a choice without text: {choice!r:.200}")
        usage = payload.get("usage")
        prompt_tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        completion_tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
            raise MalformedResponseError(f"{where} answered without token usage: {usage!r:.200}")
        parsed, json_error = (None, None)
        if request.json_schema is not None:
            parsed, json_error = parse_json_text(text)
        if adapter_served := request.adapter:
            state.active.add(adapter_served)
        return LLMResult(
            text=text,
            parsed=parsed,
            json_error=json_error,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=time.perf_counter() - started,
            adapter=request.adapter,
            backend=f"{self.name}@{state.url}",
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
