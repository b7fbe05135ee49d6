"""The evaluation stage's results for a model (its eval_results.json), as huggingface_hub `EvalResult`s for the
card's model-index, and the evaluation report copied beside the model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

from llm_recipes.errors import UserError

EVAL_RESULTS_NAME = "eval_results.json"
EVAL_REPORT_EXTRAS = ("eval_report.md", "plots")  # what the evaluation stage writes beside it for people to read
EVAL_ENTRY_KEYS = ("task_type", "dataset_name", "dataset_type", "metric_type", "metric_value")


@dataclass
class EvalReport:
    file: Path
    key: str  # the model's key in the file
    results: list[EvalResult]  # its model-index entries
    summary: dict[str, Any]  # its {"metrics": ..., "dataset": ...} entry


def eval_results_file(path: str | Path) -> Path:
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / EVAL_RESULTS_NAME
    if not file.is_file():
        raise UserError(f"eval_results_path: {path} is not an {EVAL_RESULTS_NAME} file or a folder holding one")
    return file


def read_eval_results(path: str | Path, model_path: str | Path) -> EvalReport:
    """The results `eval_results.json` holds for `model_path`, as huggingface_hub `EvalResult`s.

    Schema: {"models": {<path>: {"metrics": {...}, "dataset": {...}}}, "model_index": {<path>: [{"task_type",
    "dataset_name", "dataset_type", "dataset_split", "metric_type", "metric_name", "metric_value"}, ...]}}.
    A key matches when it names the same folder as `model_path`.
    """
    file = eval_results_file(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{file}: not valid JSON ({err.msg}, line {err.lineno})") from None
    model_index = data.get("model_index") or {}
    models = data.get("models") or {}
    key = _matching_key([*model_index, *models], model_path)
    if key is None:
        known = ", ".join(sorted({*model_index, *models})) or "none"
        raise UserError(f"{file} has no results for {model_path} (it has results for: {known})")
    results = []
    for index, entry in enumerate(model_index.get(key) or []):
        missing = [name for name in EVAL_ENTRY_KEYS if entry.get(name) is None]
        if missing:
            raise UserError(f"{file}: model_index[{key!r}][{index}] lacks {', '.join(missing)}")
        results.append(
            EvalResult(
                task_type=entry["task_type"],
                dataset_type=entry["dataset_type"],
                dataset_name=entry["dataset_name"],
                metric_type=entry["metric_type"],
                metric_value=entry["metric_value"],
                task_name=entry.get("task_name"),
                dataset_split=entry.get("dataset_split"),
                dataset_config=entry.get("dataset_config"),
                dataset_revision=entry.get("dataset_revision"),
                metric_name=entry.get("metric_name"),
            )
        )
    return EvalReport(file=file, key=key, results=results, summary=models.get(key) or {})


def _matching_key(keys: Iterable[str], model_path: str | Path) -> str | None:
    """The key naming the same folder; else the only key with the same folder name (the evaluation ran from
    another directory, so its relative path differs)."""
    keys = list(dict.fromkeys(keys))
    wanted = Path(model_path).expanduser().resolve()
    for key in keys:
        if key == str(model_path) or Path(key).expanduser().resolve() == wanted:
            return key
    same_name = [key for key in keys if Path(key.rstrip("/")).name == wanted.name]
    return same_name[0] if len(same_name) == 1 else None


def copy_eval_results(path: str | Path, folder: Path) -> list[str]:
    """The evaluation report goes with the model: eval_results.json, and the evaluation stage's Markdown report
    with its plots when they sit beside it, copied into the folder that is pushed. Returns the names copied."""
    source = eval_results_file(path)
    shutil.copy2(source, folder / EVAL_RESULTS_NAME)
    copied = [EVAL_RESULTS_NAME]
    for name in EVAL_REPORT_EXTRAS:
        extra = source.parent / name
        if extra.is_file():
            shutil.copy2(extra, folder / name)
        elif extra.is_dir():
            shutil.copytree(extra, folder / name, dirs_exist_ok=True)
        else:
            continue
        copied.append(name)
    return copied
