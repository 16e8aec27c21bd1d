"""The vLLM backend against a real vLLM CPU server serving gemma-3-270m with LoRA adapters.

One server for the module, started (and installed into .venv-vllm when missing) through
``scripts/vllm_server.sh``, exactly as developers and CI start it. Generations stay short:
the server runs on two CPU cores.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trellis.adapters import (
    LLMRequest,
    Message,
    SamplingParams,
    VLLMBackend,
    VLLMConfig,
    default_model_dir,
    verify_model,
)
from trellis.adapters._lora import create_lora_adapter
from trellis.adapters.errors import AdapterValidationError, SchemaCompileError, UnknownAdapterError

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "vllm_server.sh"
BASE = "gemma-3-270m"
PROMPT = "The kitchen is the room where"


@dataclass
class Server:
    url: str
    port: int
    model_dir: Path
    adapters: dict[str, Path]
    env: dict[str, str]

    def script(self, *args: str, timeout: float = 900) -> str:
        done = subprocess.run(
            ["bash", str(SCRIPT), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"vllm_server.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def start(self) -> None:
        loras = [
            arg for name in ("alpha", "beta") for arg in ("--lora", f"{name}={self.adapters[name]}")
        ]
        self.script(
            "start",
            "--port",
            str(self.port),
            "--model",
            str(self.model_dir),
            "--name",
            BASE,
            *loras,
        )

    def stop(self) -> None:
        self.script("stop", "--port", str(self.port), timeout=120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model_dir = default_model_dir()
    if not verify_model(model_dir, full=False):
        pytest.fail(f"the base model is not prepared at {model_dir}: run `trellis model prepare`")
    folder = tmp_path_factory.mktemp("vllm-adapters")
    adapters = {
        name: create_lora_adapter(model_dir, folder / name, rank=8, seed=seed)
        for seed, name in enumerate(("alpha", "beta", "gamma"), start=1)
    }
    env = dict(os.environ)
    env["TRELLIS_VLLM_RUN_DIR"] = str(tmp_path_factory.mktemp("vllm-run"))
    env.setdefault("TRELLIS_VLLM_START_TIMEOUT", "600")
    port = _free_port()
    info = Server(f"http://127.0.0.1:{port}", port, model_dir, adapters, env)
    info.script("install", timeout=1800)
    info.start()
    try:
        yield info
    finally:
        info.stop()


def backend_for(server: Server, **config: Any) -> VLLMBackend:
    return VLLMBackend(VLLMConfig(servers=[server.url], **config))


def short(*, max_tokens: int = 8, timeout_s: float = 300, **kwargs: Any) -> LLMRequest:
    return LLMRequest(sampling=SamplingParams(max_tokens=max_tokens), timeout_s=timeout_s, **kwargs)


async def test_completion_and_chat(server: Server) -> None:
    backend = backend_for(server)
    try:
        base = await backend.generate(short(prompt=PROMPT))
        chat = await backend.generate(
            short(messages=(Message(role="user", content="Name one fruit."),), adapter="alpha")
        )
    finally:
        await backend.aclose()
    assert base.text.strip() and base.adapter is None
    assert 0 < base.completion_tokens <= 8 and base.prompt_tokens >= 6
    assert base.backend == f"vllm@{server.url}"
    assert chat.adapter == "alpha" and chat.completion_tokens > 0 and chat.prompt_tokens > 5


async def test_adapters_change_the_output(server: Server) -> None:
    backend = backend_for(server)
    try:
        texts = {
            adapter: (
                await backend.generate(short(prompt=PROMPT, adapter=adapter, max_tokens=12))
            ).text
            for adapter in (None, "alpha", "beta")
        }
    finally:
        await backend.aclose()
    # Greedy decoding: the base model is deterministic, and random LoRA weights move it.
    assert texts["alpha"] != texts[None] or texts["beta"] != texts[None]


async def test_structured_output_is_schema_valid(server: Server) -> None:
    schema = {
        "type": "object",
        "properties": {"room": {"enum": ["kitchen", "garage"]}, "count": {"enum": [1, 2, 3]}},
        "required": ["room", "count"],
        "additionalProperties": False,
    }
    backend = backend_for(server)
    try:
        for adapter in (None, "beta"):
            result = await backend.generate(
                short(
                    messages=(Message(role="user", content="Where do forks go, and how many?"),),
                    adapter=adapter,
                    json_schema=schema,
                    max_tokens=40,
                )
            )
            assert result.json_error is None, result.text
            assert set(result.parsed) == {"room", "count"}
            assert result.parsed["room"] in ("kitchen", "garage") and result.parsed["count"] in (
                1,
                2,
                3,
            )
        with pytest.raises(SchemaCompileError, match="Pointer"):
            await backend.generate(
                short(
                    prompt="x",
                    json_schema={"type": "object", "properties": {"a": {"$ref": "#/nope"}}},
                )
            )
    finally:
        await backend.aclose()


async def test_concurrent_requests_for_different_adapters(server: Server) -> None:
    backend = backend_for(server)
    wanted = [None, "alpha", "beta"] * 2
    try:
        results = await asyncio.gather(
            *(backend.generate(short(prompt=PROMPT, adapter=a, max_tokens=6)) for a in wanted)
        )
        residency = await backend.resident_adapters()
    finally:
        await backend.aclose()
    assert [r.adapter for r in results] == wanted
    assert all(r.completion_tokens > 0 for r in results)
    # Same adapter, same greedy prompt: the same text even when batched with other adapters.
    assert results[1].text == results[4].text and results[2].text == results[5].text
    assert residency[0].up and residency[0].base_model == BASE
    assert {"alpha", "beta"} <= residency[0].registered
    assert residency[0].max_lora == 4


async def test_unknown_adapter(server: Server) -> None:
    backend = backend_for(server)
    try:
        with pytest.raises(UnknownAdapterError, match=r"'nosuch'.*alpha, beta"):
            await backend.generate(short(prompt=PROMPT, adapter="nosuch"))
    finally:
        await backend.aclose()


async def test_runtime_load_and_unload(server: Server, tmp_path: Path) -> None:
    backend = backend_for(server)
    try:
        await backend.load_adapter("gamma", server.adapters["gamma"])
        models = {m.id: m.parent for m in await backend.list_models()}
        assert models["gamma"] == BASE
        assert (await backend.generate(short(prompt=PROMPT, adapter="gamma"))).adapter == "gamma"
        await backend.unload_adapter("gamma")
        assert "gamma" not in {m.id for m in await backend.list_models()}
        with pytest.raises(UnknownAdapterError):
            await backend.generate(short(prompt=PROMPT, adapter="gamma"))
        with pytest.raises(AdapterValidationError, match=r"no adapter_config.json"):
            await backend.load_adapter("empty", tmp_path)
    finally:
        await backend.aclose()


async def test_adapter_loads_on_first_use(server: Server) -> None:
    backend = backend_for(server, adapter_paths={"delta": server.adapters["gamma"]})
    try:
        result = await backend.generate(short(prompt=PROMPT, adapter="delta"))
        assert result.adapter == "delta"
        assert "delta" in {m.id for m in await backend.list_models()}
        await backend.unload_adapter("delta")
    finally:
        await backend.aclose()


async def test_server_restart_in_the_middle_of_a_run(server: Server) -> None:
    # Retries must outlast a full engine start (about two minutes on two busy cores).
    backend = backend_for(server, max_retries=1000, backoff_max_s=3.0, down_for_s=1.0)
    try:
        await backend.load_adapter("gamma", server.adapters["gamma"])
        before = await backend.generate(short(prompt=PROMPT, adapter="gamma"))
        await asyncio.to_thread(server.stop)
        # Requests issued while the server is down wait (retrying) until it is back; the
        # runtime-loaded adapter is loaded again on the restarted server.
        pending = [
            asyncio.create_task(backend.generate(short(prompt=PROMPT, adapter=a, timeout_s=900)))
            for a in ("gamma", "alpha", None)
        ]
        await asyncio.sleep(1.0)
        assert not any(task.done() for task in pending)
        await asyncio.to_thread(server.start)
        results = await asyncio.gather(*pending)
        models = {m.id for m in await backend.list_models()}
    finally:
        await backend.aclose()
    assert [r.adapter for r in results] == ["gamma", "alpha", None]
    assert results[0].text == before.text  # the same adapter weights answer again
    assert "gamma" in models
