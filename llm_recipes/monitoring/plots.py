"""The report's figures, as PNG files: thumbs-up rate and latency percentiles per version over time, prompt
lengths and language mix against the training data. Drawn on matplotlib's Agg canvas without pyplot, like the
evaluation stage's plots (no display, no global backend state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from llm_recipes.monitoring.report import PERCENTILES

STYLES = {50: "-", 90: "--", 99: ":"}


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path)
    return path


def _over_time(report: dict[str, Any]) -> tuple[list[str], Figure]:
    buckets = sorted({b for per in report["over_time"].values() for b in per})
    return buckets, Figure(figsize=(7, 3.8), dpi=100)


def plot_thumbs_up(report: dict[str, Any], output_dir: Path) -> Path:
    buckets, figure = _over_time(report)
    axes = figure.add_subplot()
    for version, per in report["over_time"].items():
        points = [(buckets.index(b), s["thumbs_up_rate"]) for b, s in per.items() if s["thumbs_up_rate"] is not None]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", label=version)
    axes.set_xticks(range(len(buckets)), buckets, rotation=30, ha="right", fontsize=8)
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel("thumbs-up rate")
    axes.set_title(f"Thumbs-up rate per version and {report['bucket']}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, output_dir / "thumbs_up_rate.png")


def plot_latency(report: dict[str, Any], output_dir: Path) -> Path:
    buckets, figure = _over_time(report)
    axes = figure.add_subplot()
    colors = {}
    for version, per in report["over_time"].items():
        for q in PERCENTILES:
            points = [(buckets.index(b), s[f"latency_ms_p{q}"]) for b, s in per.items() if s[f"latency_ms_p{q}"]]
            if not points:
                continue
            line = axes.plot(*zip(*points, strict=True), STYLES[q], marker="o", markersize=3, color=colors.get(version))
            colors[version] = line[0].get_color()
            line[0].set_label(f"{version} p{q}")
    axes.set_xticks(range(len(buckets)), buckets, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("latency (ms)")
    axes.set_title(f"Latency p50 / p90 / p99 per version and {report['bucket']}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    return _save(figure, output_dir / "latency.png")


def plot_prompt_lengths(served: list[int], training: list[int], output_dir: Path) -> Path:
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    top = max(max(served, default=1), max(training, default=1))
    bins = list(range(0, top + 2, max(1, (top + 1) // 30)))
    axes.hist(training, bins=bins, density=True, alpha=0.5, label=f"training ({len(training)})")
    axes.hist(served, bins=bins, density=True, alpha=0.5, label=f"served ({len(served)})")
    axes.set_xlabel("prompt length (words)")
    axes.set_ylabel("density")
    axes.set_title("Prompt length: served vs training")
    axes.legend(fontsize=8)
    return _save(figure, output_dir / "prompt_length.png")


def plot_language_mix(mix: dict[str, dict[str, float]], output_dir: Path) -> Path:
    languages = sorted(set(mix["served"]) | set(mix["training"]))
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.add_subplot()
    width = 0.4
    for offset, name in ((-width / 2, "training"), (width / 2, "served")):
        axes.bar(
            [i + offset for i in range(len(languages))], [mix[name].get(k, 0) for k in languages], width, label=name
        )
    axes.set_xticks(range(len(languages)), languages)
    axes.set_ylabel("share of prompts")
    axes.set_title("Language mix: served vs training")
    axes.legend(fontsize=8)
    return _save(figure, output_dir / "language_mix.png")
