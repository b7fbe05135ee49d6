"""Local `evaluate` metric modules, so `evaluate.load` works offline.

`evaluate.load("bleu")` fetches the metric's script from the Hub on first use, which fails on an offline machine
and changes under you when the Hub copy changes. Each folder here is one metric in evaluate's local-module layout
(`<name>/<name>.py` defining an `evaluate.Metric` subclass) that calls the reference implementation directly
(sacrebleu, rouge-score), so results match those libraries exactly.

    from llm_recipes.metrics import load_metric
    bleu = load_metric("bleu")                      # same as evaluate.load(metric_path("bleu"))
    bleu.compute(predictions=["a cat"], references=[["a cat"]])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import evaluate

from llm_recipes.errors import UserError

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("bleu", "chrf", "rouge", "exact_match")


def metric_path(name: str) -> str:
    """The folder of metric `name`, ready for `evaluate.load`."""
    folder = METRICS_DIR / name
    if name not in METRIC_NAMES or not (folder / f"{name}.py").is_file():
        raise UserError(f"unknown metric '{name}'; choose from {', '.join(METRIC_NAMES)}")
    return str(folder)


def load_metric(name: str, **kwargs: Any):
    """`evaluate.load` of our local copy of metric `name` (bleu, chrf, rouge, exact_match); never touches the Hub."""

    return evaluate.load(metric_path(name), **kwargs)
