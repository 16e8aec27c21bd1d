"""Benchmark an LLM backend: batching across adapters, and the cost of structured output.

Compares, in one run and on the same prompts:
  * 8 concurrent requests, all to the base model          (the baseline)
  * 8 concurrent requests spread over 4 LoRA adapters     (target: >= 0.85x the baseline)
  * the same 8 adapter requests served one at a time      (target: batched >= 2x faster)
  * 8 concurrent base requests with a JSON schema         (the cost of structured output,
    in tokens/s; these rows get at least 32 tokens so the object can finish)

The embedded backend (default) creates 4 LoRA adapters in a temporary folder. ``--backend
vllm --url URL --adapters a,b,c,d`` measures a running vLLM server with the same code: the
measurement functions take any ``LLMBackend``. Prints a table and writes
``bench/results/bench_backends.json`` (one entry per backend, updated in place).

    .venv/bin/python bench/bench_backends.py [--max-tokens 16] [--rounds 2] [--threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trellis.adapters import (  # noqa: E402
    EmbeddedBackend,
    EmbeddedConfig,
    LLMBackend,
    LLMRequest,
    SamplingParams,
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
        "object": {"type": "string", "maxLength": 24},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
    },
    "required": ["room", "object", "count"],
    "additionalProperties": False,
}
RESULTS = ROOT / "bench" / "results" / "bench_backends.json"
SCHEMA_TOKENS = 32
"""Token budget of the structured-output rows (the object needs about 20)."""


def requests_for(
    adapters: list[str | None], max_tokens: int, schema: dict[str, Any] | None = None
) -> list[LLMRequest]:
    """One request per prompt, adapters assigned round-robin."""
    return [
        LLMRequest(
            prompt=text,
            adapter=adapters[i % len(adapters)],
            json_schema=schema,
            sampling=SamplingParams(max_tokens=max_tokens),
        )
        for i, text in enumerate(PROMPTS)
    ]


def _timed(tokens: int, wall: float, cpu: float, **extra: float) -> dict[str, float]:
    row = {"seconds": wall, "cpu_seconds": cpu, "tokens": tokens, "tok_s": tokens / wall}
    row["tok_cpu_s"] = tokens / cpu if cpu > 0 else 0.0
    row.update(extra)
    return row


async def concurrent(backend: LLMBackend, requests: list[LLMRequest]) -> dict[str, float]:
    """All requests at once; tokens/s over the wall (and CPU) time of the whole group."""
    wall, cpu = time.perf_counter(), time.process_time()
    results = await asyncio.gather(*(backend.generate(r) for r in requests))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = sum(r.completion_tokens for r in results)
    if requests[0].json_schema is None:
        return _timed(tokens, wall, cpu)
    return _timed(tokens, wall, cpu, schema_valid=sum(r.parsed is not None for r in results))


async def one_at_a_time(backend: LLMBackend, requests: list[LLMRequest]) -> dict[str, float]:
    """The same requests, each waiting for the previous one."""
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = 0
    for request in requests:
        tokens += (await backend.generate(request)).completion_tokens
    return _timed(tokens, time.perf_counter() - wall, time.process_time() - cpu)


async def measure(
    backend: LLMBackend, adapters: list[str], max_tokens: int, rounds: int = 2
) -> dict[str, Any]:
    """Every scenario on ``backend``, interleaved over ``rounds``; the best round counts.

    Interleaving and best-of keep the comparison fair on a machine whose load changes while
    the benchmark runs; CPU time (this process, every thread) is reported beside wall time.
    A remote backend's CPU time is the client's only, so compare its wall-time ratios.
    """
    warm = requests_for([None, *adapters], 2) + requests_for([None], 2, SCHEMA)[:1]
    await asyncio.gather(*(backend.generate(r) for r in warm))
    scenarios = {
        "base_batched": lambda: concurrent(backend, requests_for([None], max_tokens)),
        "adapters_batched": lambda: concurrent(backend, requests_for(list(adapters), max_tokens)),
        "adapters_sequential": lambda: one_at_a_time(
            backend, requests_for(list(adapters), max_tokens)
        ),
        # Long enough for the whole object: a cut-off JSON would not show validity.
        "schema_batched": lambda: concurrent(
            backend, requests_for([None], max(max_tokens, SCHEMA_TOKENS), SCHEMA)
        ),
    }
    rows: dict[str, dict[str, float]] = {}
    for _ in range(rounds):
        for name, scenario in scenarios.items():
            row = await scenario()
            if name not in rows or row["tok_s"] > rows[name]["tok_s"]:
                rows[name] = row
    report: dict[str, Any] = {"rows": rows, "rounds": rounds}
    for metric in ("tok_s", "tok_cpu_s"):
        base = rows["base_batched"][metric]
        if not base:
            continue
        ratios = {
            "adapters_vs_base": rows["adapters_batched"][metric] / base,
            "batched_vs_sequential": rows["adapters_batched"][metric]
            / rows["adapters_sequential"][metric],
            "schema_vs_base": rows["schema_batched"][metric] / base,
        }
        report["ratios" if metric == "tok_s" else "cpu_ratios"] = ratios
        report["targets_met" if metric == "tok_s" else "cpu_targets_met"] = {
            "adapters_vs_base": ratios["adapters_vs_base"] >= 0.85,
            "batched_vs_sequential": ratios["batched_vs_sequential"] >= 2.0,
        }
    return report


def print_table(name: str, report: dict[str, Any]) -> None:
    print(f"\n{name}: 8 requests, max_tokens={report['max_tokens']}, best of {report['rounds']}")
    print(f"{'scenario':<22}{'wall s':>8}{'cpu s':>8}{'tokens':>8}{'tok/s':>8}{'tok/cpu-s':>10}")
    for scenario, row in report["rows"].items():
        extra = f"  ({int(row['schema_valid'])}/8 valid JSON)" if "schema_valid" in row else ""
        print(
            f"{scenario:<22}{row['seconds']:>8.1f}{row['cpu_seconds']:>8.1f}{int(row['tokens']):>8}"
            f"{row['tok_s']:>8.2f}{row['tok_cpu_s']:>10.2f}{extra}"
        )
    for key, label in (("ratios", "wall"), ("cpu_ratios", "cpu")):
        if key not in report:
            continue
        ratios = report[key]
        met = report["targets_met" if key == "ratios" else "cpu_targets_met"]
        flag = {True: "met", False: "MISSED"}
        print(f"[{label}] adapters / base         {ratios['adapters_vs_base']:.2f}x "
              f"(target >= 0.85x) {flag[met['adapters_vs_base']]}")  # fmt: skip
        print(f"[{label}] batched / one-at-a-time {ratios['batched_vs_sequential']:.2f}x "
              f"(target >= 2x) {flag[met['batched_vs_sequential']]}")  # fmt: skip
        print(f"[{label}] schema / base           {ratios['schema_vs_base']:.2f}x "
              "(cost of structured output)")  # fmt: skip
    print(f"load average before/after: {report['load_before']} / {report['load_after']}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backend: LLMBackend
    load_before = [round(x, 2) for x in os.getloadavg()]
    if args.backend == "vllm":
        from trellis.adapters import VLLMBackend, VLLMConfig

        if not args.url or not args.adapters:
            raise SystemExit("--backend vllm needs --url and --adapters a,b,c,d")
        adapters = args.adapters.split(",")
        backend = VLLMBackend(VLLMConfig(servers=[args.url]))
        try:
            report = await measure(backend, adapters, args.max_tokens, args.rounds)
        finally:
            await backend.aclose()
        report["server"] = args.url
    else:
        adapters = ["a1", "a2", "a3", "a4"]
        embedded = EmbeddedBackend(
            EmbeddedConfig(max_batch_size=8, batch_wait_ms=20.0, threads=args.threads or None)
        )
        with tempfile.TemporaryDirectory(prefix="bench-adapters-") as folder:
            for seed, name in enumerate(adapters):
                path = create_lora_adapter(default_model_dir(), Path(folder) / name, seed=seed)
                await embedded.load_adapter(name, path)
            report = await measure(embedded, adapters, args.max_tokens, args.rounds)
            stats = embedded.stats
            report["batches"] = {"count": stats.batches, "max_rows": stats.max_rows}
            await embedded.aclose()
    report["max_tokens"] = args.max_tokens
    report["threads"] = args.threads
    report["load_before"] = load_before
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report["adapters"] = adapters
    report["machine"] = {"platform": platform.platform(), "python": platform.python_version()}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["embedded", "vllm"], default="embedded")
    parser.add_argument("--url", help="vLLM server URL (with --backend vllm)")
    parser.add_argument("--adapters", help="comma-separated adapter names on the vLLM server")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; best counts")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print_table(args.backend, report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    existing[args.backend] = report
    RESULTS.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
