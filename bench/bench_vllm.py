"""Benchmark the vLLM backend against a real vLLM CPU server.

Compares, in one run and on the same prompts:
  * 8 concurrent requests, all to the base model        (the baseline)
  * 8 concurrent requests spread over 4 LoRA adapters   (target: >= 0.85x the baseline)
  * the same 8 adapter requests served one at a time    (batching target: >= 2x faster)
  * 8 concurrent requests with a JSON schema vs without (the cost of structured output)

By default it creates 4 LoRA adapters, starts its own server through
``scripts/vllm_server.sh`` and stops it afterwards; ``--url`` uses a running server instead
(give its adapter names with ``--adapters``). Prints a table and writes
``bench/results/bench_vllm.json``.

    .venv/bin/python bench/bench_vllm.py [--max-tokens 24] [--repeats 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trellis.adapters import (  # noqa: E402
    LLMRequest,
    LLMResult,
    Message,
    SamplingParams,
    VLLMBackend,
    VLLMConfig,
    create_lora_adapter,
    default_model_dir,
)

PROMPTS = [
    "The kitchen is the room where",
    "To wash the dishes you first",
    "A good place for the umbrella is",
    "The robot picked up the cup and",
    "In the garage there is usually",
    "Before going to bed, remember to",
    "The fastest way to tidy a room is",
    "When the milk runs out, the assistant",
]
SCHEMA = {
    "type": "object",
    "properties": {
        "room": {"enum": ["kitchen", "garage", "bedroom", "bathroom"]},
        "action": {"type": "string", "maxLength": 16},
    },
    "required": ["room", "action"],
    "additionalProperties": False,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_batch(
    backend: VLLMBackend, requests: list[LLMRequest], *, concurrent: bool
) -> dict[str, Any]:
    started = time.perf_counter()
    results: list[LLMResult]
    if concurrent:
        results = list(await asyncio.gather(*(backend.generate(r) for r in requests)))
    else:
        results = [await backend.generate(r) for r in requests]
    wall = time.perf_counter() - started
    tokens = sum(r.completion_tokens for r in results)
    return {
        "wall_s": round(wall, 3),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
        "mean_latency_s": round(statistics.mean(r.latency_s for r in results), 3),
        "schema_valid": sum(r.parsed is not None for r in results),
    }


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda run: run["tokens_per_s"])


async def measure(url: str, adapters: list[str], max_tokens: int, repeats: int) -> dict[str, Any]:
    backend = VLLMBackend(VLLMConfig(servers=[url], max_retries=2))
    sampling = SamplingParams(max_tokens=max_tokens)

    def completion(prompt: str, adapter: str | None) -> LLMRequest:
        return LLMRequest(prompt=prompt, adapter=adapter, sampling=sampling, timeout_s=900)

    def chat(prompt: str, schema: dict[str, Any] | None) -> LLMRequest:
        text = f"Say where this belongs and what to do: {prompt}"
        return LLMRequest(
            messages=(Message(role="user", content=text),),
            json_schema=schema,
            sampling=sampling,
            timeout_s=900,
        )

    spread = [adapters[i % len(adapters)] for i in range(len(PROMPTS))]
    cases = {
        "base_batch8": ([completion(p, None) for p in PROMPTS], True),
        "adapters_batch8": ([completion(p, a) for p, a in zip(PROMPTS, spread, strict=True)], True),
        "adapters_one_at_a_time": (
            [completion(p, a) for p, a in zip(PROMPTS, spread, strict=True)],
            False,
        ),
        "chat_batch8": ([chat(p, None) for p in PROMPTS], True),
        "chat_schema_batch8": ([chat(p, SCHEMA) for p in PROMPTS], True),
    }
    try:
        # Warm-up: compile paths and bring every adapter into a LoRA slot once.
        await run_batch(
            backend, [completion(PROMPTS[0], a) for a in [None, *adapters]], concurrent=True
        )
        await run_batch(backend, [chat(PROMPTS[0], SCHEMA)], concurrent=True)
        results = {}
        for name, (requests, concurrent) in cases.items():
            runs = [
                await run_batch(backend, requests, concurrent=concurrent) for _ in range(repeats)
            ]
            results[name] = best(runs)
            print(f"  {name}: {results[name]['tokens_per_s']} tok/s", file=sys.stderr, flush=True)
    finally:
        await backend.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running vLLM server (default: start one)")
    parser.add_argument("--adapters", default="a1,a2,a3,a4", help="adapter names on --url")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=1, help="runs per case; the best counts")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_vllm.json")
    args = parser.parse_args()

    adapters = [name for name in args.adapters.split(",") if name]
    port = None
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="trellis-bench-vllm-") as scratch:
        url = args.url
        if url is None:
            model_dir = default_model_dir()
            loras = []
            for seed, name in enumerate(adapters, start=1):
                folder = create_lora_adapter(model_dir, Path(scratch) / name, rank=8, seed=seed)
                loras += ["--lora", f"{name}={folder}"]
            port = free_port()
            env["TRELLIS_VLLM_RUN_DIR"] = scratch
            script = ["bash", str(ROOT / "scripts" / "vllm_server.sh")]
            subprocess.run([*script, "install"], cwd=ROOT, env=env, check=True)
            started = time.perf_counter()
            subprocess.run(
                [*script, "start", "--port", str(port), "--model", str(model_dir), *loras],
                cwd=ROOT,
                env=env,
                check=True,
            )
            print(f"server ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            url = f"http://127.0.0.1:{port}"
        try:
            results = asyncio.run(measure(url, adapters, args.max_tokens, args.repeats))
        finally:
            if port is not None:
                subprocess.run(
                    [*script, "stop", "--port", str(port)], cwd=ROOT, env=env, check=False
                )

    base = results["base_batch8"]["tokens_per_s"]
    mixed = results["adapters_batch8"]["tokens_per_s"]
    serial = results["adapters_one_at_a_time"]["tokens_per_s"]
    plain = results["chat_batch8"]
    schema = results["chat_schema_batch8"]
    ratios = {
        "adapters_vs_base": round(mixed / base, 3),
        "batched_vs_one_at_a_time": round(mixed / serial, 3),
        "schema_vs_plain_tokens_per_s": round(schema["tokens_per_s"] / plain["tokens_per_s"], 3),
    }
    targets = {"adapters_vs_base": 0.85, "batched_vs_one_at_a_time": 2.0}

    print(
        f"\nvLLM CPU server, gemma-3-270m fp32, {len(adapters)} adapters, {args.max_tokens} tokens"
    )
    print(f"{'case':<26}{'tok/s':>9}{'tokens':>8}{'wall s':>9}{'mean lat s':>12}{'valid':>7}")
    for name, row in results.items():
        valid = f"{row['schema_valid']}/8" if name == "chat_schema_batch8" else ""
        print(
            f"{name:<26}{row['tokens_per_s']:>9}{row['completion_tokens']:>8}"
            f"{row['wall_s']:>9}{row['mean_latency_s']:>12}{valid:>7}"
        )
    for name, value in ratios.items():
        target = targets.get(name)
        verdict = ""
        if target is not None:
            verdict = f" (target >= {target}: {'met' if value >= target else 'MISSED'})"
        print(f"{name:<30}{value:>7}x{verdict}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "bench_vllm",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "settings": {"max_tokens": args.max_tokens, "repeats": args.repeats, "adapters": adapters},
        "results": results,
        "ratios": ratios,
        "targets": targets,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    main()
