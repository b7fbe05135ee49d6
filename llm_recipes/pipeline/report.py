"""The pipeline's tables: the plan before a run (or instead of one), what each stage did after it, and every model
the run made measured on the evaluation protocol.

What a stage did is read back from its manifest, and the models' measures from the files the stages wrote
(evaluate's eval_results.json, each compression stage's compression_report.json), so a stage finished by an
earlier invocation reports the same figures as one that ran just now. The stage table says what each stage did in
its own terms, never a protocol measure under another definition; the model table has one row per model and one
column per protocol measure, a compression row is followed by its source as measured in the same run, and each
measure's definition is printed once under it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_recipes.evaluation.protocol import format_measure, measure_title
from llm_recipes.evaluation.report import text_table
from llm_recipes.runs.manifest import read_manifest, write_json_atomically
from llm_recipes.runs.summary import format_number

# stage -> (label, manifest metric before, manifest metric after); "before" None shows the one value. Labels say
# whose figure it is (a stage's own eval split), so none reads as a protocol measure.
HEADLINES: dict[str, list[tuple[str, str | None, str]]] = {
    "clean-corpus": [("documents", "documents_in", "documents_out")],
    "train-tokenizer": [("vocabulary", None, "vocabulary"), ("tokens per word", None, "tokens per word")],
    "tokenize": [("blocks", None, "blocks"), ("tokens", None, "tokens"), ("shards", None, "shards")],
    "pretrain": [
        ("optimizer steps", None, "optimizer steps"),
        ("loss on its eval blocks", "eval loss before training", "eval loss"),
    ],
    "sft": [("loss on its eval split", None, "eval loss"), ("trainable share", None, "trainable share")],
    "reward": [("pairwise accuracy on its eval split", None, "eval pairwise accuracy")],
    "ppo": [
        ("PPO steps", None, "PPO steps"),
        ("score on its eval prompts", "eval score before", "eval score after"),
        ("KL to reference", None, "eval KL to reference"),
    ],
    "grpo": [("reward on its eval prompts", "eval reward before", "eval reward after")],
    "rloo": [("reward on its eval prompts", "eval reward before", "eval reward after")],
    "dpo": [("eval reward accuracy", None, "eval reward accuracy"), ("eval margin", None, "eval reward margin")],
    "kto": [("eval margin (good - bad answers)", None, "eval reward margin"), ("eval KL", None, "eval KL")],
    "distill": [("student", None, "student"), ("optimizer steps", None, "optimizer steps"), ("loss", None, "loss")],
    "quantize": [("method", None, "method")],
    "prune": [
        ("method", None, "method"),
        ("sparsity", None, "sparsity of pruned layers"),
        ("recovery steps", None, "recovery optimizer steps"),
    ],
    "export": [("exported", None, "exported"), ("parameters", None, "parameters")],
}
# manifest figures derived from others (older manifests have the perplexity only)
DERIVED: dict[str, tuple[str, Any]] = {"eval loss before training": ("eval perplexity before training", math.log)}
COMPRESSION_STAGES = ("distill", "quantize", "prune")
EVALUATE_METRICS = ("perplexity", "judge_score", "mean_reward", "exact_match", "accuracy")


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
    figures = dict(metrics)
    for name, (source, derive) in DERIVED.items():
        if figures.get(name) is None and isinstance(figures.get(source), int | float) and figures[source] > 0:
            figures[name] = derive(figures[source])
    parts = []
    for label, before, after in HEADLINES.get(stage, []):
        if figures.get(after) is None:
            continue
        value = format_number(figures[after])
        if before and figures.get(before) is not None:
            value = f"{format_number(figures[before])} -> {value}"
        parts.append(f"{label} {value}")
    return "; ".join(parts), metrics


def _evaluate_headline(folder: Path) -> str:
    results_file = folder / "eval_results.json"
    if not results_file.is_file():
        return ""
    document = json.loads(results_file.read_text(encoding="utf-8"))
    models = document.get("models", {})
    if "protocol" in document:
        where = document["protocol"].get("source") or "its protocol"
        return f"{len(models)} models measured on {where} (the model table below)"
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
    """The stage table, then (when the stages measured models on a protocol) the model table."""
    rows = []
    for result in results:
        seconds = f"{result.seconds:.1f}s" if result.seconds is not None else ""
        rows.append([result.stage, result.status, seconds, result.output or "", result.headline])
    total = sum(result.seconds or 0 for result in results if result.status in ("ran", "resumed"))
    table = format_table(["stage", "status", "time", "output", "what it did"], rows)
    text = f"{table}\n\nthis run: {total:.1f}s of stage time"
    header, models = model_rows(results)
    if header is not None and models:
        text += "\n\n" + format_model_table(header, models)
    return text


# --------------------------------------------------------------------------------------------------------------
# Every model on the protocol


@dataclass
class ModelRow:
    label: str
    result: dict[str, Any]  # a ProtocolResult as a dict: model, protocol (fingerprint), measures, samples, details
    is_source: bool = False  # a compression stage's source, measured again in that stage's run


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def _same_path(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def model_rows(results: list[StageResult]) -> tuple[dict[str, Any] | None, list[ModelRow]]:
    """(the protocol's header, one row per model measured on it): the evaluated models, then each compression
    stage's model followed by its source as that stage measured it."""
    header, rows, labels = None, [], {}
    for result in results:
        if not result.output or result.status == "skipped" or not Path(result.output).expanduser().is_dir():
            continue
        folder = Path(result.output).expanduser()
        if result.stage == "evaluate":
            document = _read_json(folder / "eval_results.json") or {}
            header = header or document.get("protocol")
            for path, entry in document.get("models", {}).items():
                if "protocol" in entry:
                    labels[_same_path(path)] = entry.get("stage") or Path(path).name
                    rows.append(ModelRow(labels[_same_path(path)], entry["protocol"]))
        elif result.stage in COMPRESSION_STAGES:
            report = _read_json(folder / "compression_report.json") or {}
            comparison = report.get("comparison") or {}
            if "protocol" not in comparison:
                continue  # written before the protocol
            header = header or comparison["protocol"]
            rows.append(ModelRow(result.stage, comparison["compressed"]))
            if "pruned_before_recovery" in report:
                rows.append(ModelRow("  before recovery", report["pruned_before_recovery"]))
            if "labels_only" in report:  # distill's baseline: the same student and budget without the teacher
                rows.append(ModelRow("  labels only, same budget", report["labels_only"]))
            source = comparison["source"]
            name = labels.get(_same_path(source["model"]), Path(source["model"]).name) if source["model"] else "?"
            rows.append(ModelRow(f"  its source, {name}", source, is_source=True))
    return header, rows


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_model_table(header: dict[str, Any], rows: list[ModelRow]) -> str:
    """One row per model, one column per protocol measure, the definitions once, then what the models answer."""

    names = header["measures"]
    other = [row for row in rows if row.result.get("protocol") != header["fingerprint"]]
    table_rows = [
        [row.label + (" *" if row in other else ""), *(format_measure(n, row.result["measures"].get(n)) for n in names)]
        for row in rows
    ]
    where = header.get("source") or "(in code)"
    lines = [f"every model on the protocol {where}:", "", text_table(["model", *map(measure_title, names)], table_rows)]
    lines += ["", "a compression stage's row is followed by its source, measured again in the same run"]
    lines += _relative_perplexity(rows)
    if other:
        lines.append(
            f"* measured under another protocol than {header['fingerprint']} (the protocol file changed since): "
            "rerun that stage (--rerun <stage>) to compare"
        )
    lines += ["", "definitions:"]
    lines += [f"  {measure_title(name)}: {text}" for name, text in header["definitions"].items()]
    lines += _answers([row for row in rows if not row.is_source], header["spec"].get("samples") or {})
    return "\n".join(lines)


def _relative_perplexity(rows: list[ModelRow]) -> list[str]:
    """Each model's corpus perplexity as a multiple of the first model's (the pretrained one in a full pipeline):
    how much language modelling each later stage kept."""
    first = rows[0].result["measures"].get("corpus_perplexity") if rows else None
    if not first:
        return []
    ratios = [
        f"{row.label.strip()} {row.result['measures']['corpus_perplexity'] / first:.3g}x"
        for row in rows[1:]
        if not row.is_source and row.result["measures"].get("corpus_perplexity") is not None
    ]
    return [f"corpus ppl relative to {rows[0].label}: " + ", ".join(ratios)] if ratios else []


def _answers(rows: list[ModelRow], settings: dict[str, Any]) -> list[str]:
    """Each model's greedy and sampled answers to the protocol's fixed prompts, a line each, long enough to read the
    answer itself (an arithmetic answer ends with its result)."""
    prompts = list(dict.fromkeys(sample["prompt"] for row in rows for sample in row.result.get("samples", [])))
    if not prompts:
        return []
    width = max(len(row.label.strip()) for row in rows)
    sampling = ", ".join(f"{key} {settings[key]}" for key in ("temperature", "top_p", "seed") if key in settings)
    lines = ["", f"answers to the protocol's fixed prompts (greedy, then sampled: {sampling}):"]
    for prompt in prompts:
        lines.append(f"  {prompt}")
        for row in rows:
            sample = next((s for s in row.result.get("samples", []) if s["prompt"] == prompt), None)
            if sample is not None:
                lines.append(f"    {row.label.strip():<{width}}  greedy   {_clip(sample['greedy'], 110)}")
                lines.append(f"    {'':<{width}}  sampled  {_clip(sample['sampled'], 110)}")
    return lines


def write_report(run_dir: Path, results: list[StageResult], table: str) -> None:
    """report.json (each stage), models.json (each model on the protocol, with its definitions) and report.txt."""
    header, models = model_rows(results)
    if header is not None:
        write_json_atomically(
            run_dir / "models.json",
            {
                "protocol": header,
                "models": [{"label": row.label.strip(), "is_source": row.is_source, **row.result} for row in models],
            },
        )
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
