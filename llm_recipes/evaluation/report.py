"""The evaluation's outputs: `eval_results.json` (also read by the export stage's model card), a Markdown report
with the stage-over-stage comparison table, and the same table printed.

`eval_results.json`:

    {"models": {"<path>": {"metrics": {"perplexity": 12.3, "bits_per_byte": 1.1, "bleu": 20.5, ...},
                           "dataset": {"name": "alpaca", "split": "train"},
                           "samples": [{"prompt": ..., "reference": ..., "generation": ..., "reward": ...}]}},
     "model_index": {"<path>": [{"task_type": "text-generation", "dataset_name": ..., "dataset_type": ...,
                                 "dataset_split": ..., "metric_type": "perplexity", "metric_name": "Perplexity",
                                 "metric_value": 12.3}, ...]}}

Each `model_index` entry maps 1:1 onto `huggingface_hub.EvalResult` (see `eval_results_for_card`). With an
evaluation protocol, the document also holds `"protocol"` (its source, fingerprint, measure names and definitions)
and each model's full protocol result (measures, answers to the fixed prompts) under `models.<path>.protocol`; the
protocol's measures are among the model's metrics under their protocol names. With judges (a reward model, an LLM
judge: `judges`), a model's entry also holds `comparisons` (wins, ties, losses, win rate and its 95% interval over
the first model, per judge) and `answers` (one row per answered turn: question, answer, reward, judge score,
outcome against the first model), and the document holds `"judge"` (the LLM judge's model, modes and prompt files).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

from llm_recipes.errors import UserError
from llm_recipes.evaluation.protocol import format_measure, measure_title
from llm_recipes.runs.manifest import write_json_atomically

EVAL_RESULTS = "eval_results.json"
EVAL_REPORT = "eval_report.md"

# metric key -> (readable name, higher is better); anything else (lm-eval's task/metric) is shown by its key
METRIC_NAMES: dict[str, tuple[str, bool]] = {
    "perplexity": ("Perplexity", False),
    "bits_per_byte": ("Bits per byte", False),
    "bleu": ("BLEU", True),
    "chrf": ("chrF", True),
    "rouge1": ("ROUGE-1", True),
    "rouge2": ("ROUGE-2", True),
    "rougeL": ("ROUGE-L", True),
    "rougeLsum": ("ROUGE-Lsum", True),
    "exact_match": ("Exact match", True),
    "mean_reward": ("Mean reward", True),
    "win_rate": ("Win rate vs baseline", True),
    "judge_score": ("Judge score (1-10)", True),
    "judge_win_rate": ("Judge win rate vs baseline", True),
    "accuracy": ("Accuracy", True),
    "precision_macro": ("Precision (macro)", True),
    "recall_macro": ("Recall (macro)", True),
    "f1_macro": ("F1 (macro)", True),
    "precision_micro": ("Precision (micro)", True),
    "recall_micro": ("Recall (micro)", True),
    "f1_micro": ("F1 (micro)", True),
}
# the comparison table's columns, in order, when any model has them
TABLE_COLUMNS: list[tuple[str, str]] = [
    ("perplexity", "perplexity"),
    ("bits_per_byte", "bits/byte"),
    ("bleu", "BLEU"),
    ("chrf", "chrF"),
    ("rougeL", "ROUGE-L"),
    ("exact_match", "exact match"),
    ("mean_reward", "mean reward"),
    ("win_rate", "win rate vs first"),
    ("judge_score", "judge score"),
    ("judge_win_rate", "judge win rate vs first"),
    ("accuracy", "accuracy"),
    ("f1_macro", "F1 macro"),
    ("f1_micro", "F1 micro"),
]
# which metrics each task's model-index entries carry (the dataset they were measured on differs per group)
PERPLEXITY_METRICS = ("perplexity", "bits_per_byte")
WIN_RATES = ("win_rate", "judge_win_rate")
WIN_RATE_DEFINITION = (
    "win rate = (wins + ties/2) / judged turns, against the first model; 95% CI: Wilson score interval, "
    "a tie counted as half a win"
)


@dataclass
class DatasetRef:
    path: str
    name: str
    split: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "split": self.split}


@dataclass
class ModelResult:
    """Everything measured for one model."""

    path: str
    kind: str = "causal_lm"
    stage: str | None = None  # from the model folder's manifest
    dataset: DatasetRef | None = None
    perplexity_dataset: DatasetRef | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # counts and settings behind the metrics
    samples: list[dict[str, Any]] = field(default_factory=list)
    reward_scores: list[float] | None = None
    lm_eval: dict[str, dict[str, float]] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)  # relative to the output folder
    protocol: dict[str, Any] | None = None  # the model's ProtocolResult (as_dict), when evaluated on a protocol
    metric_datasets: dict[str, DatasetRef] = field(default_factory=dict)  # data of metrics not on `dataset`
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # judges.Comparison.as_dict(), vs the first
    answers: list[dict[str, Any]] = field(default_factory=list)  # one row per answered turn (judging.answer_rows)

    def protocol_names(self) -> list[str]:
        return list(self.protocol["measures"]) if self.protocol else []

    def all_metrics(self) -> dict[str, float]:
        flat = dict(self.metrics)
        for task, metrics in self.lm_eval.items():
            flat.update({f"{task}/{name}": value for name, value in metrics.items()})
        return flat


def task_type(kind: str) -> str:
    return {"sequence_classification": "text-classification", "token_classification": "token-classification"}.get(
        kind, "text-generation"
    )


def model_index_entries(result: ModelResult, baseline: str | None = None) -> list[dict[str, Any]]:
    """`huggingface_hub.EvalResult` fields for every metric of a model."""
    entries = []

    def add(metric_type: str, value: float, dataset: DatasetRef | None, task: str, name: str | None = None) -> None:
        if dataset is None:
            return
        entries.append(
            {
                "task_type": task,
                "dataset_name": dataset.name,
                "dataset_type": dataset.path,
                "dataset_split": dataset.split,
                "metric_type": metric_type,
                "metric_name": name or METRIC_NAMES.get(metric_type, (metric_type, True))[0],
                "metric_value": float(value),
            }
        )

    for key, value in result.metrics.items():
        if key in result.metric_datasets:
            add(key, value, result.metric_datasets[key], task_type(result.kind), measure_title(key))
            continue
        if key in result.protocol_names():
            continue  # a protocol measure without data (latency, size, parameters) is no eval result
        dataset = result.perplexity_dataset if key in PERPLEXITY_METRICS else result.dataset
        name = f"{METRIC_NAMES[key][0].removesuffix('baseline')}{baseline}" if key in WIN_RATES and baseline else None
        add(key, value, dataset, task_type(result.kind), name)
    for task, metrics in result.lm_eval.items():
        for metric, value in metrics.items():
            add(metric, value, DatasetRef(path=task, name=task, split="test"), "text-generation", f"{task} {metric}")
    return entries


def results_document(
    results: Sequence[ModelResult], protocol: dict[str, Any] | None = None, judge: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The eval_results.json document; `protocol` is the protocol's header (`protocol.protocol_header`), `judge`
    the LLM judge's settings (`judging.Judge.settings`)."""
    baseline = results[0].path if len(results) > 1 else None
    models = {}
    for r in results:
        entry = {
            "metrics": r.all_metrics(),
            "dataset": (r.dataset or r.perplexity_dataset or DatasetRef("", "", "")).as_dict(),
            "samples": r.samples,
            "stage": r.stage,
        }
        if r.protocol is not None:
            entry["protocol"] = r.protocol
        if r.comparisons:
            entry["comparisons"] = r.comparisons
        if r.answers:
            entry["answers"] = r.answers
        models[r.path] = entry
    document: dict[str, Any] = {
        "models": models,
        "model_index": {r.path: model_index_entries(r, baseline) for r in results},
    }
    if protocol is not None:
        document["protocol"] = protocol
    if judge is not None:
        document["judge"] = judge
    return document


def write_eval_results(
    results: Sequence[ModelResult],
    output_dir: str | Path,
    protocol: dict[str, Any] | None = None,
    judge: dict[str, Any] | None = None,
) -> Path:
    path = Path(output_dir) / EVAL_RESULTS
    write_json_atomically(path, results_document(results, protocol, judge))
    return path


def load_eval_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / EVAL_RESULTS
    if not path.is_file():
        raise UserError(f"eval results not found: {path}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"{path} is not valid JSON") from None
    if not isinstance(document, dict) or "models" not in document or "model_index" not in document:
        raise UserError(f"{path} is not an eval_results.json (no 'models' / 'model_index')")
    return document


def _same_model(a: str, b: str) -> bool:
    return a == b or os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def find_model_key(document: dict[str, Any], model_path: str) -> str:
    """The entry of `model_path` (the path as evaluated, the same folder by another path, or its folder name)."""
    keys = list(document["model_index"])
    for key in keys:
        if _same_model(key, model_path):
            return key
    by_name = [key for key in keys if Path(key.rstrip("/")).name == Path(model_path.rstrip("/")).name]
    if len(by_name) == 1:
        return by_name[0]
    raise UserError(f"no results for '{model_path}' in the eval results (models: {', '.join(keys)})")


def eval_results_for_card(path_to_eval_results_json: str | Path, model_path: str) -> list[Any]:
    """The model-index results of `model_path` as `huggingface_hub.EvalResult`s, for `ModelCardData(eval_results=)`."""
    document = load_eval_results(path_to_eval_results_json)
    entries = document["model_index"][find_model_key(document, model_path)]
    return [EvalResult(**entry) for entry in entries]


# ------------------------------------------------------------------------------------------------------------
# Tables and the Markdown report


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def comparison_rows(results: Sequence[ModelResult]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the stage-over-stage table: one row per model, the protocol's measures first (in the
    protocol's order), then the other metrics some model has."""
    protocol_names = list(dict.fromkeys(name for r in results for name in r.protocol_names()))
    extra = sorted({key for r in results for key in r.all_metrics() if "/" in key} - set(protocol_names))
    columns = [(key, measure_title(key)) for key in protocol_names]
    columns += [(key, title) for key, title in TABLE_COLUMNS if any(key in r.metrics for r in results)]
    columns += [(key, key) for key in extra]
    header = ["model", "stage", *(title for _, title in columns)]
    rows = []
    for r in results:
        values = r.all_metrics()
        cells = [
            format_measure(key, values.get(key)) if key in protocol_names else format_value(values.get(key))
            for key, _ in columns
        ]
        rows.append([r.path, r.stage or "-", *cells])
    return header, rows


def win_rate_rows(results: Sequence[ModelResult]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the win-rate table: one row per judge and model compared with the first."""
    header = ["judge", "model", "vs", "wins", "ties", "losses", "unparsed", "win rate", "95% CI"]
    rows = []
    for result in results:
        for c in result.comparisons:
            low, high = c["ci95"]
            interval = f"[{low:.3f}, {high:.3f}]" if low is not None else "-"
            rate = f"{c['win_rate']:.3f}" if c["win_rate"] is not None else "-"
            counts = [str(c[key]) for key in ("wins", "ties", "losses", "unparsed")]
            rows.append([c["judge"], c["model"], c["baseline"], *counts, rate, interval])
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The table aligned for a terminal."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else format_value(value)
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _truncate(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def protocol_notes(protocol: dict[str, Any]) -> str:
    """Each protocol measure's definition, once, for under a table (`protocol` is `protocol_header`'s)."""
    lines = [f"protocol {protocol.get('source') or '(in code)'}, fingerprint {protocol['fingerprint']}:"]
    return "\n".join(lines + [f"  {measure_title(name)}: {text}" for name, text in protocol["definitions"].items()])


def _notes(results: Sequence[ModelResult], settings: dict[str, Any]) -> list[str]:
    notes = []
    first = results[0]
    protocol = settings.get("protocol")
    if protocol:
        notes.append(f"Protocol `{protocol.get('source') or 'in code'}` (fingerprint {protocol['fingerprint']}):")
        notes += [f"*{measure_title(name)}*: {text}" for name, text in protocol["definitions"].items()]
    if first.perplexity_dataset is not None and "perplexity" in first.details:
        details = first.details["perplexity"]
        notes.append(
            f"Perplexity (per token) and bits per byte on `{first.perplexity_dataset.path}` "
            f"({first.perplexity_dataset.split}, {details['texts']} texts, {details['bytes']:,} bytes), sliding window "
            f"of {details['context_length']} tokens moving by {details['stride']}; lower is better. Bits per byte "
            "compares models with different tokenizers, perplexity per token only models sharing one."
        )
    if any(key in r.metrics for r in results for key in ("bleu", "rougeL")):
        generation = ", ".join(f"{k}={v}" for k, v in (settings.get("generation") or {}).items())
        notes.append(
            f"Generation metrics on `{first.dataset.path if first.dataset else '?'}` against its reference answers "
            f"({generation}): BLEU and chrF 0-100 (sacrebleu), ROUGE 0-1 (rouge-score F-measure), exact match 0-1."
        )
    if any("mean_reward" in r.metrics for r in results):
        notes.append(
            f"Reward under `{settings.get('reward_model')}`; win rate: share of prompts where a model's answer "
            f"scores higher than `{first.path}`'s (ties count half)."
        )
    judge = settings.get("judge")
    if judge:
        notes.append(
            f"LLM judge `{judge['model']}` ({', '.join(judge['modes'])}): judge score = mean 1-10 rating of a "
            "model's answers (a later turn rated with the whole conversation in view); judge win rate = answers "
            f"judged against `{first.path}`'s in both orders, the same verdict twice a win or loss, else a tie. "
            f"Prompts: {', '.join(f'`{path}`' for path in judge['prompts'].values())}."
        )
    if any(r.comparisons for r in results):
        notes.append(WIN_RATE_DEFINITION[0].upper() + WIN_RATE_DEFINITION[1:] + ".")
    return notes


def answer_sections(results: Sequence[ModelResult], limit: int = 600) -> list[str]:
    """Markdown: every answered turn, each model's answer with its reward, judge score and outcome against the
    first model."""
    answered = [r for r in results if r.answers]
    if not answered:
        return []
    lines = ["## Answers", ""]
    columns = [("reward", "reward"), ("judge_score", "judge score")]
    columns += [("reward_vs_first", "reward vs first"), ("judge_vs_first", "judge vs first")]
    for index, row in enumerate(answered[0].answers):
        meta = ", ".join(str(v) for v in (row.get("id") and f"id {row['id']}", row.get("category")) if v)
        lines += [f"### Prompt {row['prompt']}{f' ({meta})' if meta else ''}, turn {row['turn']}", ""]
        lines += ["> " + line for line in _truncate(row["question"], limit).splitlines() or [""]]
        shown = [(key, title) for key, title in columns if any(key in r.answers[index] for r in answered)]
        table = []
        for result in answered:
            mine = result.answers[index] if index < len(result.answers) else {}
            cells = [mine.get(key) if mine.get(key) is not None else "-" for key, _ in shown]
            table.append([result.path, _truncate(mine.get("answer", ""), limit), *map(format_value, cells)])
        lines += ["", markdown_table(["model", "answer", *(title for _, title in shown)], table), ""]
    return lines


def markdown_report(results: Sequence[ModelResult], settings: dict[str, Any] | None = None) -> str:
    settings = settings or {}
    header, rows = comparison_rows(results)
    lines = [
        "# Evaluation report",
        "",
        f"{len(results)} model{'s' if len(results) != 1 else ''}, evaluated {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "## Comparison" if len(results) > 1 else "## Results",
        "",
        markdown_table(header, rows),
        "",
    ]
    lines += [f"- {note}" for note in _notes(results, settings)]
    if any(r.comparisons for r in results):
        lines += ["", "## Win rates", "", markdown_table(*win_rate_rows(results)), ""]
    for result in results:
        lines += ["", f"## `{result.path}`", ""]
        if result.stage:
            lines += [f"Stage: {result.stage}.", ""]
        protocol = result.protocol_names()
        metric_rows = [
            [measure_title(key), format_measure(key, value)]
            if key in protocol
            else [METRIC_NAMES.get(key, (key, True))[0], format_value(value)]
            for key, value in result.all_metrics().items()
        ]
        if metric_rows:
            lines += [markdown_table(["metric", "value"], metric_rows), ""]
        if result.samples:
            lines += ["### Samples", ""]
            sample_header = ["#", "prompt", "reference", "generation"]
            with_reward = any("reward" in s for s in result.samples)
            if with_reward:
                sample_header.append("reward")
            sample_rows = []
            for number, sample in enumerate(result.samples, 1):
                row = [str(number), *(_truncate(sample.get(k, ""), 300) for k in ("prompt", "reference", "generation"))]
                if with_reward:
                    row.append(format_value(sample.get("reward")))
                sample_rows.append(row)
            lines += [markdown_table(sample_header, sample_rows), ""]
        if result.protocol and result.protocol.get("samples"):
            lines += ["### Answers to the protocol's fixed prompts", ""]
            rows = [
                [_truncate(sample["prompt"], 200), _truncate(sample["greedy"], 300), _truncate(sample["sampled"], 300)]
                for sample in result.protocol["samples"]
            ]
            lines += [markdown_table(["prompt", "greedy", "sampled"], rows), ""]
        if result.plots:
            lines += ["### Training curves", ""]
            lines += [f"![{Path(plot).stem}]({plot})" for plot in result.plots]
            lines.append("")
    lines += answer_sections(results)
    return "\n".join(lines).rstrip() + "\n"


def write_markdown_report(
    results: Sequence[ModelResult], output_dir: str | Path, settings: dict[str, Any] | None = None
) -> Path:
    path = Path(output_dir) / EVAL_REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(markdown_report(results, settings), encoding="utf-8")
    os.replace(tmp, path)
    return path
