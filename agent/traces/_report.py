"""Evaluation reports in Markdown and HTML, with matplotlib plots.

:func:`write_report` writes ``report.md``, ``report.html`` and PNG plots into a folder:
success by task family, model latency per task, router confusion (recorded adapter vs
live adapter), and flips when a comparison is given. Text from traces (goals, reasons) is
escaped in HTML and Markdown table cells.
"""

from __future__ import annotations

import html
import os
from collections import Counter
from pathlib import Path

from trellis.agent.traces._eval import Comparison, EvalRun
from trellis.memory.errors import UsageError

__all__ = ["write_report"]


def _plt() -> object:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError("reports need matplotlib: pip install 'trellis-agent[report]'") from exc
    return plt


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _plots(run: EvalRun, comparison: Comparison | None, folder: Path) -> list[tuple[str, str]]:
    plt = _plt()
    made: list[tuple[str, str]] = []
    ran = [t for t in run.tasks if t.status != "skipped"]

    families = sorted({t.family for t in ran})
    if families:
        rates = [
            sum(1 for t in ran if t.family == f and t.success)
            / max(1, sum(1 for t in ran if t.family == f))
            for f in families
        ]
        fig, ax = plt.subplots(figsize=(5, 3))  # type: ignore[attr-defined]
        ax.bar(families, rates, color="#4c72b0")
        ax.set_ylim(0, 1)
        ax.set_ylabel("success rate")
        ax.set_title("Success by task family")
        fig.tight_layout()
        fig.savefig(folder / "success_by_family.png", dpi=90)
        plt.close(fig)  # type: ignore[attr-defined]
        made.append(("Success by task family", "success_by_family.png"))

    if ran:
        fig, ax = plt.subplots(figsize=(5, 3))  # type: ignore[attr-defined]
        ax.hist([t.llm_latency_s for t in ran], bins=min(20, max(5, len(ran))), color="#55a868")
        ax.set_xlabel("seconds in model calls per task")
        ax.set_ylabel("tasks")
        ax.set_title("Latency distribution")
        fig.tight_layout()
        fig.savefig(folder / "latency.png", dpi=90)
        plt.close(fig)  # type: ignore[attr-defined]
        made.append(("Latency distribution", "latency.png"))

    pairs = Counter(pair for t in ran for pair in t.routes)
    if pairs:
        labels = sorted({name for pair in pairs for name in pair})
        index = {name: i for i, name in enumerate(labels)}
        matrix = [[0] * len(labels) for _ in labels]
        for (recorded, live), count in pairs.items():
            matrix[index[recorded]][index[live]] = count
        fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(labels), 1 + 0.6 * len(labels)))  # type: ignore[attr-defined]
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("live adapter")
        ax.set_ylabel("recorded adapter")
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center")
        ax.set_title("Router confusion")
        fig.tight_layout()
        fig.savefig(folder / "router_confusion.png", dpi=90)
        plt.close(fig)  # type: ignore[attr-defined]
        made.append(("Router confusion", "router_confusion.png"))

    if comparison is not None:
        fig, ax = plt.subplots(figsize=(4, 3))  # type: ignore[attr-defined]
        ax.bar(
            ["positive", "negative"],
            [len(comparison.positive_flips), len(comparison.negative_flips)],
            color=["#55a868", "#c44e52"],
        )
        ax.set_ylabel("tasks")
        ax.set_title(f"Flips {comparison.run_a} -> {comparison.run_b}")
        fig.tight_layout()
        fig.savefig(folder / "flips.png", dpi=90)
        plt.close(fig)  # type: ignore[attr-defined]
        made.append(("Flips", "flips.png"))
    return made


def _markdown(run: EvalRun, comparison: Comparison | None, plots: list[tuple[str, str]]) -> str:
    s = run.summary()
    agreement = "n/a" if s.routing_agreement is None else f"{s.routing_agreement:.1%}"
    lines = [
        f"# Evaluation: {_cell(run.name)}",
        "",
        "| tasks | ran | skipped | errors | success | mean steps | mean replans | routing agreement | prompt tokens | completion tokens | mean model s/task |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {s.tasks} | {s.ran} | {s.skipped} | {s.errors} | {s.success_rate:.1%} | "
        f"{s.mean_steps:.2f} | {s.mean_replans:.2f} | {agreement} | {s.prompt_tokens} | "
        f"{s.completion_tokens} | {s.mean_llm_latency_s:.3f} |",
        "",
    ]
    if comparison is not None:
        c = comparison
        lines += [
            f"## Flips: {_cell(c.run_a)} -> {_cell(c.run_b)}",
            "",
            f"Common tasks: {c.common}; successes {c.success_a} -> {c.success_b}; "
            f"positive flips {len(c.positive_flips)} ({c.positive_flip_rate:.1%}); "
            f"negative flips {len(c.negative_flips)} ({c.negative_flip_rate:.1%}).",
            "",
            "Negative flips (passed before, fail now): "
            + (", ".join(_cell(t) for t in c.negative_flips) or "none"),
            "",
            "Positive flips (failed before, pass now): "
            + (", ".join(_cell(t) for t in c.positive_flips) or "none"),
            "",
        ]
    for title, file in plots:
        lines += [f"![{title}]({file})", ""]
    lines += [
        "## Tasks",
        "",
        "| task | family | status | success | recorded | steps | replans | routing | tokens | model s | reason |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in run.tasks:
        routing = "n/a" if t.routing_agreement is None else f"{t.routing_agreement:.0%}"
        recorded = "n/a" if t.recorded_success is None else ("yes" if t.recorded_success else "no")
        lines.append(
            f"| {_cell(t.task)} | {_cell(t.family)} | {t.status} | {'yes' if t.success else 'no'} | "
            f"{recorded} | {t.steps} | {t.replans} | {routing} | "
            f"{t.prompt_tokens + t.completion_tokens} | {t.llm_latency_s:.3f} | {_cell(t.reason)[:120]} |"
        )
    return "\n".join(lines) + "\n"


def _html(markdown: str, run: EvalRun) -> str:
    # A small Markdown subset (headings, tables, images, paragraphs) is all the report uses.
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Evaluation {html.escape(run.name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}</style></head><body>",
    ]
    rows: list[list[str]] = []

    def flush_table() -> None:
        if not rows:
            return
        out.append("<table>")
        out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>")
        for row in rows[1:]:
            out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        out.append("</table>")
        rows.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
            continue
        flush_table()
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            title, _, rest = line[2:].partition("](")
            out.append(
                f"<p><img src='{html.escape(rest.rstrip(')'))}' alt='{html.escape(title)}'></p>"
            )
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(
    run: EvalRun,
    out_dir: str | os.PathLike[str],
    *,
    comparison: Comparison | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the plots; returns their paths by name."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    plots = _plots(run, comparison, folder)
    markdown = _markdown(run, comparison, plots)
    paths = {"markdown": folder / "report.md", "html": folder / "report.html"}
    paths["markdown"].write_text(markdown)
    paths["html"].write_text(_html(markdown, run))
    for _title, file in plots:
        paths[file.removesuffix(".png")] = folder / file
    return paths
