"""Task Memory Tree benchmark: insert, update, ready set and prompt synthesis at scale.

For each backend and tree size it builds one task (fan-out 10, each step depending on the
previous sibling, as linear plans do), starts the path root -> first child -> ... down to
the leaves, and measures:

- batched insert rate (one ``add_children`` call for the whole tree),
- status update rate (one transaction per transition, as the agent does),
- ready-set query and TME prompt synthesis (median of repeated calls),
- the baseline in the same run: the ready set computed by loading the whole task.

Targets: ready set and prompt synthesis at the largest size within 3x of their time at the
smallest; batched insert >= 20,000 nodes/s on SQLite.

    .venv/bin/python bench/bench_memory.py                      # 1k, 10k, 100k; sqlite, postgres
    .venv/bin/python bench/bench_memory.py --quick              # 1k, 10k
    .venv/bin/python bench/bench_memory.py --backends sqlite --sizes 1000 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trellis.memory import NodeSpec, NodeStatus, TaskStore
from trellis.memory._records import SATISFIED

RESULTS = Path(__file__).parent / "results" / "bench_memory.json"
FAN_OUT = 10
POSTGRES_ADMIN_URL = os.environ.get(
    "TRELLIS_BENCH_POSTGRES_URL",
    os.environ.get(
        "TRELLIS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
)


def tree_specs(size: int, fan_out: int = FAN_OUT) -> list[NodeSpec]:
    """``size`` nodes in breadth-first order below the root; sibling k waits for k-1."""
    children: dict[int, list[NodeSpec]] = {}
    # Node i's parent is i // fan_out - 1 (-1: the task root); build leaves first.
    for i in range(size - 1, -1, -1):
        position = i % fan_out
        spec = NodeSpec(
            key=f"s{position}",
            title=f"step {i}",
            input={"n": i},
            depends_on=[f"s{position - 1}"] if position else [],
            children=list(reversed(children.pop(i, []))),
        )
        children.setdefault(i // fan_out - 1, []).append(spec)
    return list(reversed(children[-1]))


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds over ``repeat`` calls (after one warm-up) and the last result."""
    result = fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


@contextmanager
def database(backend: str) -> Iterator[str]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{folder}/bench.db"
        return
    admin_url = make_url(POSTGRES_ADMIN_URL)
    name = f"tmt_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def naive_ready(store: TaskStore, task_id: str) -> list[int]:
    """Baseline: load the whole task and apply the definition in Python."""
    nodes = store.nodes(task_id)
    by_id = {n.id: n for n in nodes}
    return [
        n.id
        for n in nodes
        if n.status in (NodeStatus.PENDING, NodeStatus.READY)
        and (n.parent_id is None or by_id[n.parent_id].status is NodeStatus.RUNNING)
        and all(by_id[d].status in SATISFIED for d in n.depends_on)
    ]


def run_one(backend: str, size: int, updates: int, repeat: int) -> dict[str, Any]:
    specs = tree_specs(size)
    with database(backend) as url, TaskStore.open(url) as store:
        task = store.create_task(f"benchmark tree of {size} nodes")
        root = store.root(task.id)
        store.transition(root.id, NodeStatus.RUNNING)

        start, cpu_start = time.perf_counter(), time.process_time()
        created = store.add_children(task.id, root.id, specs, cause="bench")
        insert_s = time.perf_counter() - start
        # This process's CPU time: what the insert costs when the machine is shared.
        insert_cpu_s = time.process_time() - cpu_start
        assert len(created) == size

        # Start the path root -> first child -> ... ; finish the deepest first child so its
        # next sibling becomes the current step (with a dependency output to synthesise).
        by_parent: dict[int, list[int]] = {}
        for node in created:
            by_parent.setdefault(node.parent_id or 0, []).append(node.id)
        touched = {root.id}
        current = root.id
        while current in by_parent:
            first = by_parent[current][0]
            store.transition(first, NodeStatus.RUNNING)
            touched.add(first)
            parent, current = current, first
        store.transition(current, NodeStatus.DONE, output={"result": "x" * 200})
        step = by_parent[parent][1]

        ready_s, ready = timed(lambda: store.ready_nodes(task.id), repeat)
        assert [n.id for n in ready] == [step], (ready, step)
        context_s, context = timed(lambda: store.build_context(step, budget_chars=2000), repeat)
        assert "result" in context
        start = time.perf_counter()
        baseline = naive_ready(store, task.id)
        naive_s = time.perf_counter() - start
        assert baseline == [step]

        leaves = [n.id for n in created if n.id not in touched and n.id != step][-updates:]
        updates = len(leaves)
        start = time.perf_counter()
        for node_id in leaves:
            store.transition(node_id, NodeStatus.RUNNING, cause="bench")
        update_s = time.perf_counter() - start
    return {
        "backend": backend,
        "nodes": size,
        "insert_s": insert_s,
        "insert_nodes_per_s": size / insert_s,
        "insert_cpu_s": insert_cpu_s,
        "insert_nodes_per_cpu_s": size / insert_cpu_s,
        "updates": updates,
        "update_per_s": updates / update_s,
        "ready_ms": ready_s * 1000,
        "context_ms": context_s * 1000,
        "naive_ready_ms": naive_s * 1000,
        "depth": max(n.depth for n in created),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument(
        "--backends", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"]
    )
    parser.add_argument("--quick", action="store_true", help="sizes 1k and 10k, fewer repeats")
    parser.add_argument("--updates", type=int, default=1_000, help="transitions timed per run")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per query (median)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.updates, args.repeat = [1_000, 10_000], 200, 7
    sizes = sorted(args.sizes)

    rows = []
    for backend in args.backends:
        for size in sizes:
            row = run_one(backend, size, min(args.updates, size), args.repeat)
            rows.append(row)
            print(f"  {backend} {size}: {json.dumps(row)}", file=sys.stderr, flush=True)

    header = (
        f"{'backend':9} {'nodes':>8} {'depth':>5} {'insert/s':>10} {'insert/cpu-s':>12} "
        f"{'update/s':>9} "
        f"{'ready ms':>9} {'context ms':>10} {'naive ready ms':>15}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['backend']:9} {r['nodes']:>8} {r['depth']:>5} {r['insert_nodes_per_s']:>10,.0f} "
            f"{r['insert_nodes_per_cpu_s']:>12,.0f} "
            f"{r['update_per_s']:>9,.0f} {r['ready_ms']:>9.2f} {r['context_ms']:>10.2f} "
            f"{r['naive_ready_ms']:>15.1f}"
        )

    checks = []
    for backend in args.backends:
        mine = [r for r in rows if r["backend"] == backend]
        small, large = mine[0], mine[-1]
        for metric in ("ready_ms", "context_ms"):
            ratio = large[metric] / small[metric]
            checks.append(
                {
                    "check": f"{backend} {metric} at {large['nodes']} / at {small['nodes']}",
                    "value": ratio,
                    "target": "<= 3",
                    "pass": ratio <= 3,
                }
            )
        if backend == "sqlite":
            slowest = min(r["insert_nodes_per_s"] for r in mine)
            checks.append(
                {
                    "check": "sqlite batched insert nodes/s (slowest size)",
                    "value": slowest,
                    "target": ">= 20000",
                    "pass": slowest >= 20_000,
                }
            )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"\nload average during the run: {load} on {os.cpu_count()} CPUs")
    for check in checks:
        verdict = "PASS" if check["pass"] else "FAIL"
        print(f"{verdict}  {check['check']}: {check['value']:,.2f} (target {check['target']})")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "bench_memory",
                "machine": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "load_average_at_end": load,
                },
                "fan_out": FAN_OUT,
                "sizes": sizes,
                "rows": rows,
                "checks": checks,
            },
            indent=2,
        )
        + "\n"
    )
    print(
        f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}"
    )


if __name__ == "__main__":
    main()
