"""Replay speed (events/s) on a trace set recorded with the scripted model, and trace size.

    python bench/bench_replay.py [--tasks 100] [--workers 2] [--repeat 3]

Records N tasks through the real agent loop (LLM planner and act calls answered by a
scripted ``FunctionBackend``; every fifth task has a failing step and a replan), then
measures on the same traces: reading (parse + validate), comparing decisions, the fast
check (``trellis replay --check``: decisions re-derived from the recorded answers without
the loop) and full deterministic replay through the loop (``trellis replay``: the real
loop re-run with recorded answers, every decision compared). Full replay is measured three
ways: one agent per trace (how ``replay`` runs a single trace), one agent for the whole set
(``replay_many``, the main number; both best of ``--repeat`` rounds, taken in turn) and
``replay_many`` with worker processes (process start-up included). The baseline
in the same run is the live recording itself (the same loop with the scripted model).
A last row measures the floor any replay through the loop has on this machine: the same
number of LangGraph supersteps with no-op nodes, on the same checkpointer the replay uses
(SQLite in memory), with nothing else (no Task Memory Tree, no trace, no comparison).
Prints a table and writes ``bench/results/bench_replay.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from langgraph.graph import END, START, StateGraph  # noqa: E402

from trellis.adapters import FunctionBackend, LLMRequest  # noqa: E402
from trellis.agent.runtime._checkpoint import open_checkpointer  # noqa: E402
from trellis.agent.runtime._config import AgentConfig  # noqa: E402
from trellis.agent.runtime._sdk import Agent  # noqa: E402
from trellis.agent.runtime._skills import skill  # noqa: E402
from trellis.agent.traces._replay import compare_traces, replay, replay_many  # noqa: E402
from trellis.agent.traces._replay_check import check_trace  # noqa: E402
from trellis.agent.traces._trace import EndEvent, read_trace  # noqa: E402
from trellis.agent.traces._trace_io import TraceWriter  # noqa: E402
from trellis.agent.traces._trace_record import TraceRecorder  # noqa: E402
from trellis.memory import TaskStore, run_sync  # noqa: E402
from trellis.planners import LLMPlanner, PlannerConfig  # noqa: E402

ROOMS = ("kitchen", "hall", "garage", "study", "attic")
ITEMS = ("mug", "book", "lamp", "spoon", "sock")


@skill(side_effects=False)
def look(room: str) -> dict[str, Any]:
    """Look around a room."""
    return {"room": room, "items": list(ITEMS)}


@skill
def pick_up(item: str) -> str:
    """Pick up an item."""
    if item == "anvil":
        raise ValueError("the anvil is too heavy")
    return f"holding {item}"


@skill
def put(item: str, place: str) -> str:
    """Put an item somewhere."""
    return f"{item} is in the {place}"


def _plan(index: int) -> dict[str, Any]:
    room, item = ROOMS[index % len(ROOMS)], ITEMS[index % len(ITEMS)]
    steps: list[dict[str, Any]] = [
        {"id": "look", "title": f"look in the {room}", "skill": "look",
         "args": {"room": room}, "depends_on": []},
        {"id": "take", "title": f"pick up the {item}", "skill": "pick_up",
         "args": {"item": item}, "depends_on": ["look"]},
        {"id": "stow", "title": f"put the {item} in the box", "skill": "put",
         "args": {"item": item, "place": "box"}, "depends_on": ["take"]},
    ]  # fmt: skip
    if index % 5 == 0:
        steps.insert(1, {"id": "lift", "title": "lift the anvil", "skill": "pick_up",
                         "args": {"item": "anvil"}, "depends_on": ["look"]})  # fmt: skip
    return {"steps": steps}


REPLAN = {"steps": [{"id": "skip", "title": "leave the anvil where it is", "skill": "look",
                     "args": {"room": "hall"}, "depends_on": []}]}  # fmt: skip


def _model(index: int) -> FunctionBackend:
    def answer(request: LLMRequest) -> str:
        prompt = request.prompt or ""
        if prompt.startswith("Plan"):
            return json.dumps(REPLAN if "anvil is too heavy" in prompt else _plan(index))
        step = next(line for line in prompt.splitlines() if line.startswith("Step: "))[6:]
        for spec in _plan(index)["steps"] + REPLAN["steps"]:
            if spec["title"] == step:
                return json.dumps({"skill": spec["skill"], "args": spec["args"]})
        return json.dumps({"skill": "look", "args": {"room": "hall"}})

    return FunctionBackend(answer)


def record(folder: Path, tasks: int) -> tuple[list[Path], float]:
    store = TaskStore.open("sqlite://")
    paths: list[Path] = []
    started = time.perf_counter()
    try:
        for index in range(tasks):
            path = folder / f"task{index:03d}.jsonl"
            writer = TraceWriter(path, fsync="none")
            recorder = TraceRecorder(writer, metadata={"family": f"family{index % 3}"})
            backend = recorder.backend(_model(index))
            agent = Agent(
                config=AgentConfig(database_url="sqlite://", use_plan_args=False),
                backend=backend,
                planner=recorder.planner(LLMPlanner(backend, config=PlannerConfig(max_tokens=300))),
                skills=recorder.skills([look, pick_up, put]),
                store=store,
            )
            try:
                recorder.run(agent, f"tidy the {ROOMS[index % len(ROOMS)]} ({index})")
            finally:
                agent.loop_graph.close()
                writer.close()
            paths.append(path)
    finally:
        store.close()
    return paths, time.perf_counter() - started


def supersteps(trace: Any) -> int:
    """LangGraph supersteps the loop takes for a finished trace without approvals.

    remind, plan, the last select and finish, plus select and execute per step, plus
    replan and the select after it per replan.
    """
    end = trace.end
    return 4 + 2 * end.steps + 2 * end.replans


class _FloorState(TypedDict):
    done: int
    limit: int


def _floor_node(state: _FloorState) -> dict[str, int]:
    return {"done": state["done"] + 1}


def _floor_route(state: _FloorState) -> str:
    return "node" if state["done"] < state["limit"] else END


def langgraph_floor(steps_per_task: list[int]) -> float:
    """Seconds for no-op nodes to take the same supersteps on the replay's checkpointer."""
    graph = StateGraph(_FloorState)
    graph.add_node("node", _floor_node)
    graph.add_edge(START, "node")
    graph.add_conditional_edges("node", _floor_route, ["node", END])
    store = TaskStore.open("sqlite://")
    handle = open_checkpointer(store.engine)
    try:
        app = graph.compile(checkpointer=handle.saver)
        started = time.perf_counter()
        for index, limit in enumerate(steps_per_task):
            config: Any = {
                "configurable": {"thread_id": f"floor{index}"},
                "recursion_limit": 10_000,
            }
            for _update in app.stream({"done": 0, "limit": limit}, config):
                pass
        return time.perf_counter() - started
    finally:
        handle.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100, help="tasks in the trace set")
    parser.add_argument(
        "--workers", type=int, default=2, help="processes for the parallel full replay row"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of the one-process full replays (best kept)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "bench_replay.json"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cpu = time.process_time()
        paths, record_s = record(Path(tmp), args.tasks)
        record_cpu_s = time.process_time() - cpu
        size = sum(p.stat().st_size for p in paths)

        started = time.perf_counter()
        traces = [read_trace(p) for p in paths]
        read_s = time.perf_counter() - started

    events = sum(len(t.events) for t in traces)
    steps = sum(t.end.steps for t in traces if isinstance(t.end, EndEvent))

    started = time.perf_counter()
    for trace in traces:
        compare_traces(trace.events, trace.events)
    compare_s = time.perf_counter() - started

    started = time.perf_counter()
    checks = [check_trace(trace) for trace in traces]
    check_s = time.perf_counter() - started
    checked = sum(1 for r in checks if r.ok)

    async def one_agent_per_trace() -> list[Any]:
        store = TaskStore.open("sqlite://")
        try:
            return [await replay(trace, store=store) for trace in traces]
        finally:
            store.close()

    # Both ways in turn, best of --repeat each: other load on the machine only adds time.
    per_trace_s = replay_s = per_trace_cpu_s = replay_cpu_s = float("inf")
    for _round in range(args.repeat):
        started, cpu = time.perf_counter(), time.process_time()
        per_trace = run_sync(one_agent_per_trace())
        per_trace_s = min(per_trace_s, time.perf_counter() - started)
        per_trace_cpu_s = min(per_trace_cpu_s, time.process_time() - cpu)

        started, cpu = time.perf_counter(), time.process_time()
        results = run_sync(replay_many(traces))
        replay_s = min(replay_s, time.perf_counter() - started)
        replay_cpu_s = min(replay_cpu_s, time.process_time() - cpu)
    matched = sum(1 for r in results if r.ok)

    started = time.perf_counter()
    parallel = run_sync(replay_many(traces, workers=args.workers))
    parallel_s = time.perf_counter() - started
    # Worker processes must reach the same verdicts, in the same order.
    same = [(r.source, r.ok, r.replayed_events) for r in parallel] == [
        (r.source, r.ok, r.replayed_events) for r in results
    ] and all(r.ok for r in per_trace)

    counts = [supersteps(trace) for trace in traces]
    floor_s = min(langgraph_floor(counts) for _round in range(args.repeat))

    rows = [
        ("record live (baseline, scripted model)", record_s),
        ("read + validate traces", read_s),
        ("compare decisions", compare_s),
        ("fast check (replay --check)", check_s),
        ("read + fast check", read_s + check_s),
        ("full replay, one agent per trace", per_trace_s),
        ("full replay through the loop (1 process)", replay_s),
        (f"full replay, {args.workers} worker processes", parallel_s),
        (f"floor: {sum(counts)} no-op LangGraph supersteps", floor_s),
    ]
    print(
        f"{args.tasks} tasks, {events} events, {steps} steps; replays matching: "
        f"{matched}/{len(results)}; checks passing: {checked}/{len(checks)}; "
        f"other replay modes agree: {same}"
    )
    print(f"{'phase':42} {'seconds':>9} {'events/s':>10} {'vs record':>10}")
    for name, seconds in rows:
        rate = events / seconds if seconds > 0 else 0.0
        print(f"{name:42} {seconds:9.3f} {rate:10,.0f} {record_s / seconds:9.1f}x")
    # CPU seconds of this process (all its threads): comparable when other work shares the CPUs.
    cpu_rows = {
        "record live (baseline, scripted model)": record_cpu_s,
        "full replay, one agent per trace": per_trace_cpu_s,
        "full replay through the loop (1 process)": replay_cpu_s,
    }
    for name, seconds in cpu_rows.items():
        print(f"{name + ' (CPU)':42} {seconds:9.3f} {events / seconds:10,.0f}")
    print(
        f"trace size: {size:,} bytes; {size / max(1, steps):,.0f} bytes/step; {size / events:,.0f} bytes/event"
    )

    result = {
        "benchmark": "replay",
        "tasks": args.tasks,
        "events": events,
        "steps": steps,
        "replays_matching": matched,
        "replay_modes_agree": same,
        "cpu_seconds": {name: round(seconds, 4) for name, seconds in cpu_rows.items()},
        "cpu_events_per_s": {
            name: round(events / seconds, 1) for name, seconds in cpu_rows.items()
        },
        "workers": args.workers,
        "repeat": args.repeat,
        "checks_passing": checked,
        "seconds": {name: round(seconds, 4) for name, seconds in rows},
        "events_per_s": {name: round(events / seconds, 1) for name, seconds in rows},
        "target_events_per_s": 5000,
        "langgraph_supersteps": sum(counts),
        "langgraph_floor_events_per_s": round(events / floor_s, 1),
        "trace_bytes": size,
        "bytes_per_step": round(size / max(1, steps), 1),
        "bytes_per_event": round(size / events, 1),
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
            "load_1min": round(os.getloadavg()[0], 2),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
