"""Hyperparameter search for the fine-tuning stage: the `search:` config section, the Optuna search space it
describes, the objective of each trial, and the best configuration written back as a ready-to-run YAML.

The search itself is `Trainer.hyperparameter_search` with the Optuna backend; what is ours is the config
surface and two details upstream leaves open: a trial's objective is the best evaluation of the chosen metric
during the trial (the checkpoint that trial would keep), not merely its last one, and the LoRA rank -- not a
`TrainingArguments` field -- reaches the model through `model_init`.

    search:
      trials: 10
      metric: f1_macro          # default: metric_for_best_model
      direction: maximize       # default: from greater_is_better
      space:                    # default: DEFAULT_SPACE (+ lora_r with use_peft)
        learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}
        per_device_train_batch_size: [8, 16, 32]
        num_train_epochs: {low: 2, high: 6}
        lora_r: [4, 8, 16]
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainingArguments

from llm_recipes.errors import UserError, did_you_mean
from llm_recipes.runs.manifest import SECRET_FIELDS

SEARCH_KEYS = ("trials", "metric", "direction", "space")
DIRECTIONS = ("maximize", "minimize")
LORA_FIELDS = ("lora_r", "lora_alpha", "lora_dropout")
DEFAULT_SPACE: dict[str, Any] = {
    "learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
    "per_device_train_batch_size": [8, 16, 32],
    "num_train_epochs": {"low": 1, "high": 5},
    "weight_decay": {"low": 0.0, "high": 0.1},
    "warmup_steps": {"low": 0.0, "high": 0.2},  # below 1: a share of the training steps
}
DEFAULT_LORA_SPACE: dict[str, Any] = {"lora_r": [4, 8, 16, 32]}
INSTALL_HINT = "pip install 'llm-recipes[search]'"
BEST_CONFIG_NAME = "best_config.yaml"
TRIALS_NAME = "search_trials.json"
SEARCH_DIR_NAME = "search"


@dataclass
class SearchSpec:
    trials: int
    metric: str
    direction: str
    space: dict[str, Any] = field(default_factory=dict)


def optuna_available() -> bool:
    return importlib.util.find_spec("optuna") is not None


def parse_search(
    value: Any, training_field_names: set[str], use_peft: bool, default_metric: str, greater_is_better: bool | None
) -> SearchSpec | None:
    """The `search` section (a YAML mapping, or a JSON object on the command line), checked; None when unset."""
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, dict):
        raise UserError("search: expected a mapping such as {trials: 10, metric: f1, space: {...}}")
    for key in value:
        if key not in SEARCH_KEYS:
            raise UserError(
                f"search: unknown key '{key}'{did_you_mean(str(key), SEARCH_KEYS)} (keys: {', '.join(SEARCH_KEYS)})"
            )
    if not optuna_available():
        raise UserError(f"search needs Optuna: {INSTALL_HINT}")
    trials = value.get("trials", 10)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise UserError(f"search.trials: {trials!r} must be an integer >= 1")
    metric = str(value.get("metric") or default_metric).removeprefix("eval_")
    direction = value.get("direction")
    if direction is None:
        better = greater_is_better if value.get("metric") is None and greater_is_better is not None else None
        direction = "maximize" if (better if better is not None else not metric.endswith("loss")) else "minimize"
    if direction not in DIRECTIONS:
        raise UserError(f"search.direction: {direction!r} must be maximize or minimize")
    space = value.get("space")
    if space is None:
        space = {**DEFAULT_SPACE, **(DEFAULT_LORA_SPACE if use_peft else {})}
    if not isinstance(space, dict) or not space:
        raise UserError("search.space: expected a mapping of field: [choices] or {low, high, log, step}")
    for name, spec in space.items():
        _check_dimension(name, spec, training_field_names, use_peft)
    return SearchSpec(trials=trials, metric=metric, direction=direction, space=dict(space))


def search_spec(args: Any, training_args: Any, model_args: Any) -> SearchSpec | None:
    """The stage's `search:` section checked against its config: the fields it may vary, LoRA or not, and the
    metric and direction the run would keep its best checkpoint by."""

    return parse_search(
        args.search,
        {item.name for item in dataclasses.fields(TrainingArguments)},
        model_args.use_peft,
        training_args.metric_for_best_model or "loss",
        training_args.greater_is_better,
    )


def _check_dimension(name: str, spec: Any, training_field_names: set[str], use_peft: bool) -> None:
    where = f"search.space.{name}"
    if name in LORA_FIELDS:
        if not use_peft:
            raise UserError(f"{where}: searching a LoRA setting needs use_peft: true")
    elif name not in training_field_names:
        raise UserError(
            f"{where}: not a training field{did_you_mean(name, sorted(training_field_names | set(LORA_FIELDS)))}"
        )
    if isinstance(spec, list):
        if not spec:
            raise UserError(f"{where}: the list of choices is empty")
        return
    if not isinstance(spec, dict) or "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: expected a list of choices or a mapping {{low, high}} (optional log, step)")
    unknown = set(spec) - {"low", "high", "log", "step"}
    if unknown:
        raise UserError(f"{where}: unknown key '{sorted(unknown)[0]}' (keys: low, high, log, step)")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
        raise UserError(f"{where}: low and high must be numbers with low <= high, got {low!r} and {high!r}")
    if spec.get("log") and low <= 0:
        raise UserError(f"{where}: a log scale needs low > 0, got {low!r}")


def suggest(trial: Any, spec: SearchSpec) -> dict[str, Any]:
    """This trial's value of every dimension (Optuna returns the same value when asked twice in one trial)."""
    values = {}
    for name, dimension in spec.space.items():
        if isinstance(dimension, list):
            values[name] = trial.suggest_categorical(name, dimension)
        elif all(isinstance(dimension[key], int) for key in ("low", "high")) and isinstance(
            dimension.get("step", 1), int
        ):
            values[name] = trial.suggest_int(
                name, dimension["low"], dimension["high"], step=dimension.get("step", 1), log=bool(dimension.get("log"))
            )
        else:
            values[name] = trial.suggest_float(
                name,
                float(dimension["low"]),
                float(dimension["high"]),
                step=dimension.get("step"),
                log=bool(dimension.get("log")),
            )
    return values


def hp_space(spec: SearchSpec):
    """The Trainer's `hp_space`: only TrainingArguments fields (the LoRA ones reach the model via model_init)."""

    def space(trial: Any) -> dict[str, Any]:
        return {name: value for name, value in suggest(trial, spec).items() if name not in LORA_FIELDS}

    return space


def lora_overrides(spec: SearchSpec):
    """`model_init`'s view of a trial: its LoRA settings."""

    def overrides(trial: Any) -> dict[str, Any]:
        return {name: value for name, value in suggest(trial, spec).items() if name in LORA_FIELDS}

    return overrides


class BestObjective:
    """The Trainer's `compute_objective`: the best value of `metric` seen so far in the current trial. `reset()`
    at the start of each trial (model_init is the hook: the Trainer calls it first thing in every trial)."""

    def __init__(self, metric: str, maximize: bool):
        self.key = metric if metric.startswith("eval_") else f"eval_{metric}"
        self.maximize = maximize
        self.best: float | None = None

    def reset(self) -> None:
        self.best = None

    def __call__(self, metrics: dict[str, float]) -> float:
        if self.key not in metrics:
            known = ", ".join(sorted(k.removeprefix("eval_") for k in metrics if k.startswith("eval_")))
            raise UserError(f"search.metric: '{self.key.removeprefix('eval_')}' was not evaluated (have: {known})")
        value = float(metrics[self.key])
        if self.best is None or (value > self.best if self.maximize else value < self.best):
            self.best = value
        return self.best


# --------------------------------------------------------------------------------------------------------------
# The best configuration, as YAML


_UNWRITABLE = object()  # a value YAML cannot hold (an object): such a field stays at its default when the config runs


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        items = [_plain(item) for item in value]
        return _UNWRITABLE if any(item is _UNWRITABLE for item in items) else items
    if isinstance(value, dict):
        items = {str(key): _plain(item) for key, item in value.items()}
        return _UNWRITABLE if any(item is _UNWRITABLE for item in items.values()) else items
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _UNWRITABLE


def changed_fields(instance: Any, skip: set[str]) -> dict[str, Any]:
    """The fields of a parsed config dataclass that differ from a default instance of its class, as plain
    values. Fields set by __post_init__ compare equal on both sides, so only what the run chose is kept."""
    baseline = type(instance)()
    changed = {}
    for item in dataclasses.fields(instance):
        if not item.init or item.name in skip:
            continue
        value = _plain(getattr(instance, item.name))
        if value is not _UNWRITABLE and value != _plain(getattr(baseline, item.name)):
            changed[item.name] = value
    return changed


def best_config(instances: list[Any], best_params: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """The run's config (every field that differs from its default) with the best trial's values, without the
    search section and with the final output_dir: ready for `llm-recipes finetune-task --config`."""

    config: dict[str, Any] = {}
    for instance in instances:
        config.update(changed_fields(instance, skip=SECRET_FIELDS | {"search", "output_dir"}))
    config.update({name: _plain(value) for name, value in best_params.items()})
    config["output_dir"] = output_dir
    return config


def write_best_config(
    path: str | Path, config: dict[str, Any], spec: SearchSpec, best_value: float, trials: int
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Best of {trials} trials of llm-recipes finetune-task's hyperparameter search "
        f"({time.strftime('%Y-%m-%d %H:%M')}):\n"
        f"# eval {spec.metric} = {best_value:.6g} ({spec.direction}). Train with it:\n"
        f"#   llm-recipes finetune-task --config {path}\n"
    )
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def trial_records(study: Any) -> list[dict[str, Any]]:
    """Every trial of the Optuna study: number, state, objective value and parameters."""
    return [
        {"trial": trial.number, "state": trial.state.name, "value": trial.value, "params": trial.params}
        for trial in study.trials
    ]


def run_trials(
    trainer: Any, spec: SearchSpec, objective: BestObjective, seed: int, study_name: str
) -> tuple[Any, list[dict[str, Any]]]:
    """`Trainer.hyperparameter_search` over the spec with Optuna (a seeded TPE sampler, trials named trial-N);
    returns the best run and, on the main process (the one that holds the study), every trial's record."""
    import optuna

    storage = optuna.storages.InMemoryStorage()
    best = trainer.hyperparameter_search(
        hp_space=hp_space(spec),
        compute_objective=objective,
        n_trials=spec.trials,
        direction=spec.direction,
        backend="optuna",
        hp_name=lambda trial: f"trial-{trial.number}",
        sampler=optuna.samplers.TPESampler(seed=seed),
        storage=storage,
        study_name=study_name,
    )
    if not trainer.accelerator.is_main_process:
        return best, []
    return best, trial_records(optuna.load_study(study_name=study_name, storage=storage))
