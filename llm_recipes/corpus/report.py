"""The corpus stage's report: what each step removed, as JSON (for machines), a table (for people) and a chart."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from llm_recipes.corpus.steps import StepStats
from llm_recipes.runs.manifest import write_json_atomically

REPORT_JSON, REPORT_TABLE, REPORT_CHART = "corpus_report.json", "corpus_report.txt", "corpus_report.png"


def build_report(read: dict[str, Any], steps: Sequence[StepStats], splits: dict[str, Any]) -> dict[str, Any]:
    docs_in = steps[0].docs_in if steps else read["documents"]
    docs_out = steps[-1].docs_out if steps else read["documents"]
    reasons: Counter[str] = Counter()
    for stats in steps:
        reasons.update(stats.drop_reasons)
    return {
        "read": read,
        "steps": [stats.as_dict() for stats in steps],
        "top_drop_reasons": dict(reasons.most_common(15)),
        "splits": splits,
        "totals": {
            "documents_read": read["documents"],
            "documents_in": docs_in,
            "documents_out": docs_out,
            "kept_share": round(docs_out / docs_in, 4) if docs_in else 0.0,
            "chars_in": steps[0].chars_in if steps else None,
            "chars_out": steps[-1].chars_out if steps else None,
        },
    }


def format_report(report: dict[str, Any]) -> str:
    header = ("step", "docs in", "docs out", "removed", "%", "chars in", "chars out", "seconds", "")
    rows = []
    for step in report["steps"]:
        share = 100 * step["docs_removed"] / step["docs_in"] if step["docs_in"] else 0.0
        rows.append(
            (
                step["name"],
                f"{step['docs_in']:,}",
                f"{step['docs_out']:,}",
                f"{step['docs_removed']:,}",
                f"{share:.1f}",
                f"{step['chars_in']:,}",
                f"{step['chars_out']:,}",
                f"{step['seconds']:.1f}",
                "(cached)" if step["cached"] else "",
            )
        )
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)] + [_row(row, widths) for row in rows]

    read = report["read"]
    lines += ["", f"read: {read['documents']:,} documents from {len(read['sources'])} source(s)"]
    for key in ("malformed", "empty", "decode_errors"):
        if read.get(key):
            lines.append(f"  {key.replace('_', ' ')}: {read[key]:,}")
    for example in read.get("malformed_examples", [])[:5]:
        lines.append(f"    {example}")
    if report["top_drop_reasons"]:
        lines += ["", "top drop reasons:"]
        width = max(len(reason) for reason in report["top_drop_reasons"])
        lines += [f"  {reason:<{width}}  {count:,}" for reason, count in report["top_drop_reasons"].items()]
    for step in report["steps"]:
        details = step["details"]
        if details.get("clusters"):
            lines += ["", f"{step['name']}: {details['clusters']:,} clusters of near duplicates, e.g."]
            for cluster in details.get("examples", [])[:3]:
                lines.append(f"  {cluster['size']} documents (rows {cluster['rows'][:5]}): {cluster['texts'][0]!r}")
        elif details.get("duplicates") and details.get("examples"):
            lines += ["", f"{step['name']}: {details['duplicates']:,} exact duplicates, e.g."]
            for example in details["examples"][:3]:
                lines.append(f"  row {example['dropped']} repeats row {example['kept']}: {example['text']!r}")
    if report["splits"]:
        lines += ["", "splits: " + ", ".join(f"{name} {count:,}" for name, count in report["splits"].items())]
    return "\n".join(lines)


def _row(cells: Sequence[Any], widths: Sequence[int]) -> str:
    first, *rest = [str(cell) for cell in cells]
    return "  ".join([first.ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(rest, widths[1:], strict=True))])


def plot_report(report: dict[str, Any], path: str | Path) -> None:
    """Two bar charts, documents and characters removed per step, so the aggressive step stands out."""
    steps = report["steps"]
    names = [step["name"] for step in steps]
    # a bare Figure, not pyplot: no GUI backend to pick, and nothing left open in a global figure list
    fig = Figure(figsize=(11, 0.45 * len(names) + 1.6))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (title, removed) in zip(
        axes,
        (
            ("documents removed", [s["docs_removed"] for s in steps]),
            ("characters removed", [s["chars_in"] - s["chars_out"] for s in steps]),
        ),
        strict=True,
    ):
        ax.barh(names, removed, color="#c0504d")
        ax.set_title(title)
        for y, value in enumerate(removed):
            ax.annotate(f"{value:,}", (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    axes[0].invert_yaxis()  # first step on top; the axes share y, so once inverts both
    totals = report["totals"]
    fig.suptitle(f"corpus: {totals['documents_in']:,} -> {totals['documents_out']:,} documents")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_report(folder: str | Path, report: dict[str, Any]) -> str:
    """Write the JSON, table and chart into `folder`; returns the table."""
    folder = Path(folder)
    write_json_atomically(folder / REPORT_JSON, report)
    table = format_report(report)
    (folder / REPORT_TABLE).write_text(table + "\n", encoding="utf-8")
    if report["steps"]:
        plot_report(report, folder / REPORT_CHART)
    return table
