"""The table the fine-tuning stage prints (and records in its manifest) when it ends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_recipes.tasks.build import TaskBuild
from llm_recipes.tasks.data import QUESTION_ANSWERING
from llm_recipes.tasks.models import AUTO_CLASS_NAMES, PIPELINE_TASKS
from llm_recipes.training.resume import last_logged

PER_LABEL_ROWS_UP_TO = 10  # more labels than this: only the averages are printed (all are in trainer_state.json)
SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def pipeline_hint(task: str) -> str:
    extra = ", trust_remote_code=True" if task == QUESTION_ANSWERING else ""
    return f'{AUTO_CLASS_NAMES[task]}, pipeline("{PIPELINE_TASKS[task]}"{extra})'


def fine_tuning_mode(args: Any, model_args: Any) -> str:
    if model_args.use_peft:
        return f"LoRA r={model_args.lora_r} (merged into the saved model)"
    if args.freeze_layers is not None:
        if args.freeze_layers == 0:
            return "embeddings frozen"
        layers = "layer" if args.freeze_layers == 1 else "layers"
        return f"embeddings and lowest {args.freeze_layers} {layers} frozen"
    return "full"


def eval_rows(eval_metrics: dict[str, float], labels: list[str] | None) -> dict[str, Any]:
    """`eval_*` metrics without speed figures; of the per-label (per entity type) scores only F1, and only for a
    short label list (all of them are in trainer_state.json)."""
    rows = {}
    for key, value in eval_metrics.items():
        name = key.removeprefix("eval_")
        if not key.startswith("eval_") or key.endswith(SPEED_SUFFIXES) or name == "epoch":
            continue
        kind, _, label = name.partition("_")
        per_label = kind in ("precision", "recall", "f1") and label not in ("", "macro", "micro")
        if per_label and (kind != "f1" or len(labels or []) > PER_LABEL_ROWS_UP_TO):
            continue
        rows[f"eval {name}"] = value
    return rows


@dataclass
class TaskSummary:
    """The table a fine-tuning run ends with (and records in its manifest); QA adds its window counts, labelled
    tasks their labels, a best checkpoint its metric."""

    task: str
    model: str
    fine_tuning: str
    training_rows: int
    eval_rows: int
    max_length: int
    labels: list[str] | None
    windows: tuple[int, int] | None  # (training, eval) QA windows
    class_weights: list[float] | None
    layerwise_lr_decay: float | None
    trainable_parameters: int
    total_parameters: int
    optimizer_steps: int
    epochs: float
    final_train_loss: float | None
    mean_train_loss: float
    best_checkpoint: str | None
    best_metric_name: str | None
    best_metric: float | None
    eval_metrics: dict[str, float]
    seconds: float

    @classmethod
    def of(
        cls,
        args: Any,
        model_args: Any,
        trainer: Any,
        built: TaskBuild,
        train_result: Any,
        eval_metrics: dict[str, float],
        seconds: float,
    ) -> TaskSummary:
        data, features, state = built.data, built.features, trainer.state
        windows = None
        if args.task == QUESTION_ANSWERING:
            windows = (len(features.train), len(features.eval) if features.eval is not None else 0)
        return cls(
            task=args.task,
            model=model_args.model_name_or_path or f"{args.preset} (from scratch)",
            fine_tuning=fine_tuning_mode(args, model_args),
            training_rows=len(data.train),
            eval_rows=len(data.eval) if data.eval is not None else 0,
            max_length=built.max_length,
            labels=data.labels,
            windows=windows,
            class_weights=built.class_weights,
            layerwise_lr_decay=args.layerwise_lr_decay,
            trainable_parameters=built.parameters[0],
            total_parameters=built.parameters[1],
            optimizer_steps=state.global_step,
            epochs=round(state.epoch or 0.0, 2),
            final_train_loss=last_logged(state.log_history, "loss"),
            mean_train_loss=train_result.training_loss,
            best_checkpoint=state.best_model_checkpoint,
            best_metric_name=trainer.args.metric_for_best_model,
            best_metric=state.best_metric,
            eval_metrics=eval_metrics,
            seconds=seconds,
        )

    def as_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "task": self.task,
            "model": self.model,
            "fine-tuning": self.fine_tuning,
            "training rows": self.training_rows,
            "eval rows": self.eval_rows,
            "max length": self.max_length,
        }
        if self.labels:
            summary["labels"] = ", ".join(self.labels) if len(self.labels) <= 20 else len(self.labels)
        if self.windows is not None:
            summary["training windows"], summary["eval windows"] = self.windows
        if self.class_weights is not None:
            summary["class weights"] = ", ".join(f"{weight:.3g}" for weight in self.class_weights)
        if self.layerwise_lr_decay is not None:
            summary["layer-wise lr decay"] = self.layerwise_lr_decay
        summary.update(
            {
                "trainable parameters": self.trainable_parameters,
                "total parameters": self.total_parameters,
                "optimizer steps": self.optimizer_steps,
                "epochs": self.epochs,
                "final train loss": self.final_train_loss,
                "mean train loss": self.mean_train_loss,
            }
        )
        if self.best_checkpoint:
            summary["best checkpoint"] = self.best_checkpoint
            summary[f"best eval {self.best_metric_name}"] = self.best_metric
        summary.update(eval_rows(self.eval_metrics, self.labels))
        summary["use with"] = pipeline_hint(self.task)
        summary["seconds"] = round(self.seconds, 1)
        return summary


@dataclass
class SearchSummary:
    """The table a hyperparameter search ends with: the best trial, its values and where its config was written."""

    task: str
    trials: int
    metric: str
    direction: str
    best_trial: str
    best_value: float
    best_hyperparameters: dict[str, Any]
    best_config: str
    seconds: float

    def as_summary(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "trials": self.trials,
            "metric": f"eval {self.metric} ({self.direction})",
            "best trial": self.best_trial,
            f"best eval {self.metric}": self.best_value,
            **{f"best {name}": value for name, value in self.best_hyperparameters.items()},
            "best config": self.best_config,
            "seconds": round(self.seconds, 1),
        }
