"""A bridge to EleutherAI's lm-evaluation-harness for users who have it (`pip install lm-eval`): run named tasks
-- its own (hellaswag, arc_easy, ...) or YAML task files in a folder of yours -- on any model folder a stage wrote.

We hand the model to the harness by path rather than reimplementing its tasks; what we add is the part our
stages need: PEFT adapter folders loaded on their base, our recurrent LM registered, task names checked first, and
the results flattened to `{task: {metric: value}}` for the report.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llm_recipes.models  # noqa: F401  (registers our recurrent LM with the Auto classes)
from llm_recipes.errors import UserError
from llm_recipes.evaluation.loading import ADAPTER_CONFIG, is_adapter


def lm_eval_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def lm_eval_model_args(model_path: str, *, dtype: str | None = None, trust_remote_code: bool = False) -> dict:
    """The harness's `hf` model arguments for a stage's folder (an adapter is loaded on its base model)."""
    args: dict[str, Any] = {"pretrained": model_path, "trust_remote_code": trust_remote_code}
    if is_adapter(model_path):
        adapter_config = json.loads(Path(os.path.expanduser(model_path), ADAPTER_CONFIG).read_text(encoding="utf-8"))
        args.update(pretrained=adapter_config["base_model_name_or_path"], peft=model_path, tokenizer=model_path)
    if dtype:
        args["dtype"] = dtype
    return args


def _task_manager(tasks: Sequence[str], include_path: str | None):
    from lm_eval.tasks import TaskManager  # optional extra: imported where used

    if include_path is not None:
        if not Path(include_path).exists():
            raise UserError(f"lm_eval_include_path: folder not found: {include_path}")
        # indexing the harness's own thousands of task files takes seconds; skip it when ours are all we need
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(task in local.all_tasks for task in tasks):
            return local
    manager = TaskManager(include_path=include_path)
    for task in tasks:
        if task not in manager.all_tasks:
            match = difflib.get_close_matches(task, manager.all_tasks, n=1)
            hint = f"; did you mean {match[0]}?" if match else ""
            raise UserError(f"lm_eval_tasks: unknown task '{task}'{hint}")
    return manager


def flatten_lm_eval_results(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The harness's `results` section -> {task: {metric: value}}; "acc,none" becomes "acc", a filter other than
    "none" is kept as a suffix ("exact_match,strict-match" -> "exact_match/strict-match"), stderr is dropped."""
    flat: dict[str, dict[str, float]] = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, _, filter_name = key.partition(",")
            name = metric if filter_name in ("", "none") else f"{metric}/{filter_name}"
            flat.setdefault(task, {})[name] = float(value)
    return flat


def run_lm_eval(
    model_path: str,
    tasks: Sequence[str],
    *,
    include_path: str | None = None,
    limit: int | float | None = None,
    batch_size: int | str = 8,
    num_fewshot: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    bootstrap_iters: int = 100_000,
    trust_remote_code: bool = False,
) -> dict[str, dict[str, float]]:
    """Run lm-evaluation-harness `tasks` on the model at `model_path`; returns {task: {metric: value}}.

    `include_path` is a folder of your own task YAML files; `limit` caps examples per task (a count, or a share
    below 1); `bootstrap_iters=0` skips the bootstrapped standard errors (faster; they are not reported here).
    """
    if not lm_eval_available():
        raise UserError("lm_eval_tasks needs lm-evaluation-harness: pip install lm-eval")
    if not tasks:
        raise UserError("lm_eval_tasks: no task named")

    import lm_eval  # optional extra: imported where used

    manager = _task_manager(list(tasks), include_path)
    output = lm_eval.simple_evaluate(
        model="hf",
        model_args=lm_eval_model_args(model_path, dtype=dtype, trust_remote_code=trust_remote_code),
        tasks=list(tasks),
        task_manager=manager,
        limit=limit,
        batch_size=batch_size,
        num_fewshot=num_fewshot,
        device=device,
        bootstrap_iters=bootstrap_iters,
        log_samples=False,
    )
    if output is None:  # the harness returns None on ranks other than 0
        return {}
    return flatten_lm_eval_results(output["results"])
