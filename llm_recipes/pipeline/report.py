"""The pipeline's tables: the plan before a run (or instead of one), and what each stage did after it.

What a stage did is read back from its manifest, so a stage finished by an earlier invocation reports the same
figures as one that ran just now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_recipes.manifest import read_manifest
from llm_recipes.reporting import format_number

# stage -> (label, manifest metric before, manifest metric after); "before" None shows the one value
HEADLINES: dict[str, list[tuple[str, str | None, str]]] = {
    "clean-corpus": [("documents", "documents_in", "documents_out")],
    "train-tokenizer": [("vocabulary", None, "vocabulary"), ("tokens per word", None, "tokens per word")],
    "pretrain": [("eval perplexity", "eval perplexity before training", "eval perplexity")],
    "sft": [("eval loss", None, "eval loss"), ("trainable share", None, "trainable share")],
    "reward": [("eval pairwise accuracy", None, "eval pairwise accuracy")],
    "ppo": [
        ("eval reward", "eval score before", "eval score after"),
        ("KL to reference", None, "eval KL to reference"),
    ],
    "grpo": [("eval reward", "eval reward before", "eval reward after")],
    "rloo": [("eval reward", "eval reward before", "eval reward after")],
    "dpo": [("eval reward accuracy", None, "eval reward accuracy"), ("eval margin", None, "eval reward margin")],
    "distill": [
        ("teacher eval perplexity", None, "teacher eval perplexity (labelled tokens)"),
        ("student eval perplexity", None, "eval perplexity (labelled tokens)"),
    ],
    "quantize": [("size on disk", None, "size on disk (bytes)"), ("eval perplexity", None, "eval perplexity")],
    "prune": [
        ("parameters", None, "parameters"),
        ("sparsity", None, "sparsity of pruned layers"),
        ("eval perplexity", "eval perplexity (source)", "eval perplexity (pruned)"),
        ("after recovery", None, "eval perplexity (after recovery)"),
    ],
    "export": [("exported", None, "exported"), ("parameters", None, "parameters")],
}
EVALUATE_METRICS = ("perplexity", "mean_reward", "exact_match", "accuracy")


@dataclass
class StageResult:
    stage: str
    status: str  # ran | resumed | done earlier | skipped | existing
    output: str | None = None
    seconds: float | None = None
    headline: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def headline(stage: str, output: str | None) -> tuple[str, dict[str, Any]]:
    """One line of what a finished stage did, and its manifest metrics."""
    manifest = read_manifest(output) if output and Path(output).expanduser().is_dir() else None
    if manifest is None:
        return "", {}
    metrics = manifest.get("metrics", {})
    if stage == "evaluate":
        return _evaluate_headline(Path(output).expanduser()), metrics
    parts = []
    for label, before, after in HEADLINES.get(stage, []):
        if metrics.get(after) is None:
            continue
        value = format_number(metrics[after])
        if before and metrics.get(before) is not None:
            value = f"{format_number(metrics[before])} -> {value}"
        parts.append(f"{label} {value}")
    return "; ".join(parts), metrics


def _evaluate_headline(folder: Path) -> str:
    results_file = folder / "eval_results.json"
    if not results_file.is_file():
        return ""
    models = json.loads(results_file.read_text(encoding="utf-8")).get("models", {})
    parts = []
    for metric in EVALUATE_METRICS:
        values = [(Path(name).name, result.get("metrics", {}).get(metric)) for name, result in models.items()]
        values = [(name, value) for name, value in values if value is not None]
        if values:
            parts.append(f"{metric} " + " / ".join(f"{name} {format_number(value)}" for name, value in values))
    return "; ".join(parts[:2])


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(row[column])) for row in [headers, *rows]) for column in range(len(headers))]
    widths[-1] = 0  # the last column runs on
    lines = ["  ".join(f"{cell:<{width}}" for cell, width in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * max(width, len(header)) for header, width in zip(headers, widths, strict=True)))
    for row in rows:
        lines.append("  ".join(f"{str(cell):<{width}}" for cell, width in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def format_results(results: list[StageResult]) -> str:
    rows = []
    for result in results:
        seconds = f"{result.seconds:.1f}s" if result.seconds is not None else ""
        rows.append([result.stage, result.status, seconds, result.output or "", result.headline])
    total = sum(result.seconds or 0 for result in results if result.status in ("ran", "resumed"))
    table = format_table(["stage", "status", "time", "output", "what it did"], rows)
    return f"{table}\n\nthis run: {total:.1f}s of stage time"


def write_report(run_dir: Path, results: list[StageResult], table: str) -> None:
    from llm_recipes.manifest import write_json_atomically

    write_json_atomically(
        run_dir / "report.json",
        [
            {
                "stage": r.stage,
                "status": r.status,
                "output": r.output,
                "seconds": r.seconds,
                "headline": r.headline,
                "metrics": r.metrics,
            }
            for r in results
        ],
    )
    (run_dir / "report.txt").write_text(table + "\n", encoding="utf-8")
