"""The vLLM backend against a faithful double of vLLM's HTTP API (no server needed).

``FakeVLLM`` answers exactly in vLLM's wire format (OpenAI-style completions and chat,
``/v1/models`` with ``parent``, the 404 ``NotFoundError`` body, plain-text replies from the
adapter load/unload endpoints, the ``vllm:lora_requests_info`` gauge), and can be told to
fail: 5xx answers, dropped connections, slow answers, wrong bodies. The real-server tests
in ``test_vllm.py`` check the same behaviour end to end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from trellis.adapters import (
    LLMRequest,
    Message,
    SamplingParams,
    SyncBackend,
    VLLMBackend,
    VLLMConfig,
)
from trellis.adapters._vllm_pool import parse_lora_metrics
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

BASE = "gemma-3-270m"


class FakeVLLM:
    """One fake vLLM server: its registered adapters, its request log and scripted faults."""

    def __init__(self, url: str, adapters: tuple[str, ...] = (), *, runtime_updates: bool = True):
        self.url = url
        self.adapters: dict[str, str] = {name: f"/adapters/{name}" for name in adapters}
        self.active: list[str] = []
        self.runtime_updates = runtime_updates
        self.calls: list[tuple[str, dict[str, Any] | None]] = []
        self.faults: list[Callable[[httpx.Request], httpx.Response]] = []
        """Answers for the next generation requests, in order (instead of serving them)."""
        self.admin_faults: list[Callable[[httpx.Request], httpx.Response]] = []
        """The same for the other endpoints."""
        self.reply_model: str | None = None
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    def completion_calls(self) -> list[dict[str, Any]]:
        return [body for path, body in self.calls if path.endswith("completions") and body]

    @staticmethod
    def _error(status: int, kind: str, message: str) -> httpx.Response:
        body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
        return httpx.Response(status, json=body)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else None
        self.calls.append((path, body))
        faults = self.faults if path.endswith("completions") else self.admin_faults
        if faults:
            return faults.pop(0)(request)
        if path == "/v1/models":
            data = [
                {"id": BASE, "object": "model", "owned_by": "vllm", "root": "/models/gemma",
                 "parent": None, "max_model_len": 1024}
            ] + [
                {"id": name, "object": "model", "owned_by": "vllm", "root": root,
                 "parent": BASE, "max_model_len": None}
                for name, root in self.adapters.items()
            ]  # fmt: skip
            return httpx.Response(200, json={"object": "list", "data": data})
        if path == "/metrics":
            running = ",".join(self.active)
            text = (
                "# HELP vllm:lora_requests_info Running stats on lora requests.\n"
                "# TYPE vllm:lora_requests_info gauge\n"
                'vllm:lora_requests_info{max_lora="4",running_lora_adapters="",'
                'waiting_lora_adapters=""} 1.7e+09\n'
                f'vllm:lora_requests_info{{max_lora="4",running_lora_adapters="{running}",'
                'waiting_lora_adapters=""} 1.8e+09\n'
            )
            return httpx.Response(200, text=text)
        if path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            if not self.runtime_updates:
                return httpx.Response(404, json={"detail": "Not Found"})
            assert body is not None
            name = body["lora_name"]
            if path.startswith("/v1/load"):
                if name in self.adapters:
                    msg = (
                        f"The lora adapter '{name}' has already been loaded. If you want to load "
                        "the adapter in place, set 'load_inplace' to True."
                    )
                    return self._error(400, "InvalidUserInput", msg)
                self.adapters[name] = body["lora_path"]
                return httpx.Response(
                    200, text=f"Success: LoRA adapter '{name}' added successfully."
                )
            if name not in self.adapters:
                return self._error(
                    404, "NotFoundError", f"The lora adapter '{name}' cannot be found."
                )
            del self.adapters[name]
            return httpx.Response(200, text=f"Success: LoRA adapter '{name}' removed successfully.")
        if path in ("/v1/completions", "/v1/chat/completions"):
            assert body is not None
            model = body["model"]
            if model != BASE and model not in self.adapters:
                return self._error(
                    404,
                    "NotFoundError",
                    f"The model `{model}` does not exist. Valid aliases: {BASE}.",
                )
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay_s)
            finally:
                self.in_flight -= 1
            text = (
                json.dumps({"answer": model})
                if body.get("structured_outputs")
                else f"hi from {model}"
            )
            if "response_format" in body:
                text = json.dumps({"answer": model})
            usage = {"prompt_tokens": 5, "total_tokens": 8, "completion_tokens": 3}
            common = {
                "id": "cmpl-1",
                "created": 1,
                "model": self.reply_model or model,
                "usage": usage,
            }
            if path == "/v1/completions":
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
                return httpx.Response(
                    200, json={**common, "object": "text_completion", "choices": [choice]}
                )
            message = {"role": "assistant", "content": text, "tool_calls": []}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            return httpx.Response(
                200, json={**common, "object": "chat.completion", "choices": [choice]}
            )
        return httpx.Response(404, json={"detail": "Not Found"})


class Cluster:
    """Several fake servers behind one transport, routed by host:port."""

    def __init__(self, *servers: FakeVLLM) -> None:
        self.servers = {s.url: s for s in servers}
        self.transport = httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        url = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        return await self.servers[url].handle(request)

    def backend(self, **config: Any) -> VLLMBackend:
        settings: dict[str, Any] = {"backoff_base_s": 0.001, "backoff_max_s": 0.01}
        settings.update(config)
        return VLLMBackend(
            VLLMConfig(servers=list(self.servers), **settings), transport=self.transport
        )


def connection_refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def status(
    code: int, body: dict[str, Any] | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(
        code, json=body or {"error": {"message": "boom", "code": code}}
    )


A = "http://127.0.0.1:9001"
B = "http://127.0.0.1:9002"


@pytest.fixture
def adapter_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "kitchen"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    return folder.resolve()


async def test_completion_sends_the_adapter_as_model_and_reports_usage() -> None:
    server = FakeVLLM(A, ("kitchen",))
    backend = Cluster(server).backend()
    request = LLMRequest(
        prompt="Say hi",
        adapter="kitchen",
        sampling=SamplingParams(max_tokens=7, stop=("\n",), seed=3),
    )
    result = await backend.generate(request)
    await backend.aclose()
    body = server.completion_calls()[-1]
    assert body["model"] == "kitchen" and body["prompt"] == "Say hi"
    assert body["max_tokens"] == 7 and body["stop"] == ["\n"] and body["seed"] == 3
    assert result.text == "hi from kitchen"
    assert (result.prompt_tokens, result.completion_tokens) == (5, 3)
    assert result.adapter == "kitchen" and result.finish_reason == "length"
    assert result.backend == f"vllm@{A}"


async def test_chat_with_schema_uses_structured_outputs_and_parses() -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend()
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    request = LLMRequest(messages=(Message(role="user", content="hi"),), json_schema=schema)
    result = await backend.generate(request)
    await backend.aclose()
    body = server.completion_calls()[-1]
    assert body["model"] == BASE  # the base model's served name, read from /v1/models
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["structured_outputs"] == {"json": schema}
    assert result.parsed == {"answer": BASE} and result.adapter is None


async def test_response_format_mode() -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend(structured_output="response_format", base_model=BASE)
    schema = {"type": "object"}
    result = await backend.generate(LLMRequest(prompt="x", json_schema=schema))
    await backend.aclose()
    body = server.completion_calls()[-1]
    assert "structured_outputs" not in body
    assert body["response_format"]["json_schema"]["schema"] == schema
    assert result.parsed == {"answer": BASE}


async def test_5xx_is_retried_with_backoff_then_succeeds() -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend(base_model=BASE)
    server.faults = [status(503), status(500)]
    result = await backend.generate(LLMRequest(prompt="x"))
    await backend.aclose()
    assert result.text == f"hi from {BASE}"
    assert len(server.completion_calls()) == 3


async def test_5xx_gives_up_after_max_retries() -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend(base_model=BASE, max_retries=2)
    server.faults = [status(500)] * 5
    with pytest.raises(BackendError, match="gave up after 3 tries"):
        await backend.generate(LLMRequest(prompt="x"))
    await backend.aclose()
    assert len(server.completion_calls()) == 3


async def test_4xx_is_never_retried() -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend(base_model=BASE)
    message = "This model's maximum context length is 1024 tokens."
    server.faults = [
        status(400, {"error": {"message": message, "type": "BadRequestError", "code": 400}})
    ]
    with pytest.raises(BackendRequestError, match="maximum context length") as caught:
        await backend.generate(LLMRequest(prompt="x"))
    await backend.aclose()
    assert caught.value.status_code == 400
    assert len(server.completion_calls()) == 1


async def test_schema_rejection_is_a_schema_error() -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend(base_model=BASE)
    message = "The provided JSON schema contains features not supported by xgrammar."
    server.faults = [
        status(400, {"error": {"message": message, "type": "BadRequestError", "code": 400}})
    ]
    with pytest.raises(SchemaCompileError, match="not supported"):
        await backend.generate(LLMRequest(prompt="x", json_schema={"type": "object"}))
    await backend.aclose()


async def test_unknown_adapter_is_a_specific_error_and_not_retried() -> None:
    server = FakeVLLM(A, ("kitchen",))
    backend = Cluster(server).backend()
    with pytest.raises(UnknownAdapterError, match=r"'garage'.*kitchen"):
        await backend.generate(LLMRequest(prompt="x", adapter="garage"))
    await backend.aclose()
    assert len(server.completion_calls()) == 1


async def test_connection_error_fails_over_to_another_server() -> None:
    first, second = FakeVLLM(A), FakeVLLM(B)
    backend = Cluster(first, second).backend(base_model=BASE, residency_ttl_s=3600)
    await backend.resident_adapters()
    first.faults = [connection_refused] * 10
    second.delay_s = 0.0
    results = [await backend.generate(LLMRequest(prompt="x")) for _ in range(4)]
    await backend.aclose()
    assert all(r.backend == f"vllm@{B}" for r in results[1:])
    # One try hit the refusing server, after which it was avoided.
    assert len(first.completion_calls()) <= 1
    assert len(second.completion_calls()) == 4


async def test_all_servers_down_is_unavailable() -> None:
    first = FakeVLLM(A)
    backend = Cluster(first).backend(base_model=BASE, max_retries=2)
    first.faults = [connection_refused] * 10
    with pytest.raises(BackendUnavailableError, match=r"unreachable.*gave up after 3 tries"):
        await backend.generate(LLMRequest(prompt="x"))
    await backend.aclose()


async def test_requests_go_where_the_adapter_is_registered_or_active() -> None:
    first, second = FakeVLLM(A, ("kitchen",)), FakeVLLM(B, ("kitchen", "garage"))
    backend = Cluster(first, second).backend(runtime_loading=False)
    results = [await backend.generate(LLMRequest(prompt="x", adapter="garage")) for _ in range(3)]
    assert {r.backend for r in results} == {f"vllm@{B}"}
    # Both hold "kitchen"; the one whose LoRA slots have it active wins.
    second.active = ["kitchen"]
    residency = await backend.resident_adapters()
    assert residency[1].active == frozenset({"kitchen"}) and residency[1].max_lora == 4
    results = [await backend.generate(LLMRequest(prompt="x", adapter="kitchen")) for _ in range(3)]
    await backend.aclose()
    assert {r.backend for r in results} == {f"vllm@{B}"}


async def test_load_spreads_over_servers_by_requests_in_flight() -> None:
    first, second = FakeVLLM(A), FakeVLLM(B)
    first.delay_s = second.delay_s = 0.05
    backend = Cluster(first, second).backend(base_model=BASE, max_concurrency=2)
    results = await asyncio.gather(*(backend.generate(LLMRequest(prompt="x")) for _ in range(8)))
    await backend.aclose()
    assert len(results) == 8
    assert len(first.completion_calls()) == 4 and len(second.completion_calls()) == 4
    assert first.max_in_flight <= 2 and second.max_in_flight <= 2


async def test_adapter_is_loaded_on_first_use(adapter_dir: Path) -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend(adapter_paths={"kitchen": adapter_dir})
    result = await backend.generate(LLMRequest(prompt="x", adapter="kitchen"))
    await backend.aclose()
    loads = [body for path, body in server.calls if path == "/v1/load_lora_adapter"]
    assert loads == [{"lora_name": "kitchen", "lora_path": str(adapter_dir)}]
    assert result.adapter == "kitchen"


async def test_resolver_hook_supplies_the_folder(adapter_dir: Path) -> None:
    server = FakeVLLM(A)
    cluster = Cluster(server)
    backend = VLLMBackend(
        VLLMConfig(servers=[A]),
        transport=cluster.transport,
        resolve_adapter_path=lambda name: adapter_dir if name == "kitchen" else None,
    )
    assert (await backend.generate(LLMRequest(prompt="x", adapter="kitchen"))).adapter == "kitchen"
    with pytest.raises(UnknownAdapterError):
        await backend.generate(LLMRequest(prompt="x", adapter="garage"))
    await backend.aclose()


async def test_runtime_loaded_adapter_is_reloaded_after_a_restart(adapter_dir: Path) -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend(residency_ttl_s=3600)
    await backend.load_adapter("kitchen", adapter_dir)
    assert (await backend.generate(LLMRequest(prompt="x", adapter="kitchen"))).adapter == "kitchen"
    # The server restarts: a refused connection, then it comes back without the adapter.
    server.faults = [connection_refused]
    server.adapters.clear()
    result = await backend.generate(LLMRequest(prompt="x", adapter="kitchen"))
    await backend.aclose()
    assert result.adapter == "kitchen"
    loads = [body for path, body in server.calls if path == "/v1/load_lora_adapter"]
    assert len(loads) == 2


async def test_load_and_unload(adapter_dir: Path) -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend()
    await backend.load_adapter("kitchen", adapter_dir)
    await backend.load_adapter("kitchen", adapter_dir)  # already loaded: not an error
    models = await backend.list_models()
    assert {(m.id, m.parent) for m in models} == {(BASE, None), ("kitchen", BASE)}
    await backend.unload_adapter("kitchen")
    with pytest.raises(UnknownAdapterError):
        await backend.unload_adapter("kitchen")
    with pytest.raises(UnknownAdapterError):
        await backend.generate(LLMRequest(prompt="x", adapter="kitchen"))
    await backend.aclose()


async def test_load_refusals(adapter_dir: Path, tmp_path: Path) -> None:
    server = FakeVLLM(A, runtime_updates=False)
    backend = Cluster(server).backend()
    with pytest.raises(BackendRequestError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
        await backend.load_adapter("kitchen", adapter_dir)
    with pytest.raises(AdapterValidationError, match=r"no adapter_config.json"):
        await backend.load_adapter("kitchen", tmp_path)
    with pytest.raises(AdapterValidationError, match="not allowed"):
        await backend.load_adapter("../etc", adapter_dir)
    await backend.aclose()
    assert not [
        p
        for p, _ in server.calls
        if p == "/v1/load_lora_adapter" and _ and _["lora_name"] != "kitchen"
    ]


async def test_a_substituted_model_is_never_accepted() -> None:
    server = FakeVLLM(A, ("kitchen",))
    server.reply_model = BASE
    backend = Cluster(server).backend()
    with pytest.raises(AdapterMismatchError, match="'gemma-3-270m' for a request to 'kitchen'"):
        await backend.generate(LLMRequest(prompt="x", adapter="kitchen"))
    await backend.aclose()


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (lambda r: httpx.Response(200, text="<html>proxy error</html>"), "non-JSON"),
        (lambda r: httpx.Response(200, json={"model": BASE, "choices": []}), "without choices"),
        (
            lambda r: httpx.Response(200, json={"model": BASE, "choices": [{"text": "x"}]}),
            "without token usage",
        ),
        (
            lambda r: httpx.Response(200, json={"model": BASE, "choices": [{"index": 0}]}),
            "without text",
        ),
        (lambda r: httpx.Response(200, json=[1, 2]), "not a JSON object"),
    ],
)
async def test_malformed_responses(
    reply: Callable[[httpx.Request], httpx.Response], match: str
) -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend(base_model=BASE)
    server.faults = [reply]
    with pytest.raises(MalformedResponseError, match=match):
        await backend.generate(LLMRequest(prompt="x"))
    await backend.aclose()


async def test_timeout_is_a_timeout_error() -> None:
    server = FakeVLLM(A)
    server.delay_s = 5.0
    backend = Cluster(server).backend(base_model=BASE)
    with pytest.raises(BackendTimeoutError, match=r"within 0.2 s"):
        await backend.generate(LLMRequest(prompt="x", timeout_s=0.2))
    await backend.aclose()


async def test_malformed_model_list() -> None:
    server = FakeVLLM(A)
    server.admin_faults = [lambda r: httpx.Response(200, json={"object": "list"})]
    backend = Cluster(server).backend()
    with pytest.raises(MalformedResponseError, match="without a 'data' list"):
        await backend.list_models()
    await backend.aclose()


def test_config_rejects_bad_servers() -> None:
    with pytest.raises(ValueError, match="not an http"):
        VLLMConfig(servers=["ftp://x"])
    with pytest.raises(ValueError, match="listed twice"):
        VLLMConfig(servers=[A, A + "/"])


def test_lora_metrics_take_the_newest_sample() -> None:
    text = (
        'vllm:lora_requests_info{max_lora="3",running_lora_adapters="a,b",waiting_lora_adapters="c"} 2.0\n'
        'vllm:lora_requests_info{max_lora="3",running_lora_adapters="old",waiting_lora_adapters=""} 1.0\n'
        'vllm:num_requests_running{model_name="m"} 0.0\n'
    )
    assert parse_lora_metrics(text) == (frozenset({"a", "b", "c"}), 3)
    assert parse_lora_metrics("") == (frozenset(), None)


async def test_a_load_lost_to_a_dropped_connection_is_tried_again(adapter_dir: Path) -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend(adapter_paths={"kitchen": adapter_dir})
    await backend.resident_adapters()
    server.admin_faults = [connection_refused]  # the first load attempt
    result = await backend.generate(LLMRequest(prompt="x", adapter="kitchen"))
    await backend.aclose()
    loads = [body for path, body in server.calls if path == "/v1/load_lora_adapter"]
    assert len(loads) == 2 and result.adapter == "kitchen"


async def test_a_base_model_the_server_does_not_serve() -> None:
    server = FakeVLLM(A)
    backend = Cluster(server).backend(base_model="other-model")
    with pytest.raises(BackendRequestError, match="does not serve the base model 'other-model'"):
        await backend.generate(LLMRequest(prompt="x"))
    await backend.aclose()


def test_sync_wrapper() -> None:
    server = FakeVLLM(A, ("kitchen",))
    sync = SyncBackend(Cluster(server).backend())
    try:
        result = sync.generate(LLMRequest(prompt="x", adapter="kitchen"))
    finally:
        sync.close()
    assert result.text == "hi from kitchen"
