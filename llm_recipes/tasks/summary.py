"""The table the fine-tuning stage prints (and records in its manifest) when it ends."""

from __future__ import annotations

from typing import Any

from llm_recipes.tasks.data import QUESTION_ANSWERING

PER_LABEL_ROWS_UP_TO = 10  # more labels than this: only the averages are printed (all are in trainer_state.json)
SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def pipeline_hint(task: str) -> str:
    from llm_recipes.tasks.models import AUTO_CLASS_NAMES, PIPELINE_TASKS

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


def training_summary(
    args: Any,
    model_args: Any,
    trainer: Any,
    facts: dict[str, Any],
    train_result: Any,
    eval_metrics: dict[str, float],
    seconds: float,
) -> dict[str, Any]:
    from llm_recipes.training.resume import last_logged

    data, features = facts["data"], facts["features"]
    state = trainer.state
    trainable, total = facts["parameters"]
    summary: dict[str, Any] = {
        "task": args.task,
        "model": model_args.model_name_or_path or f"{args.preset} (from scratch)",
        "fine-tuning": fine_tuning_mode(args, model_args),
        "training rows": len(data.train),
        "eval rows": len(data.eval) if data.eval is not None else 0,
        "max length": facts["max_length"],
    }
    if data.labels:
        summary["labels"] = ", ".join(data.labels) if len(data.labels) <= 20 else len(data.labels)
    if args.task == QUESTION_ANSWERING:
        summary["training windows"] = len(features.train)
        summary["eval windows"] = len(features.eval) if features.eval is not None else 0
    if facts["class_weights"] is not None:
        summary["class weights"] = ", ".join(f"{weight:.3g}" for weight in facts["class_weights"])
    if args.layerwise_lr_decay is not None:
        summary["layer-wise lr decay"] = args.layerwise_lr_decay
    summary.update(
        {
            "trainable parameters": trainable,
            "total parameters": total,
            "optimizer steps": state.global_step,
            "epochs": round(state.epoch or 0.0, 2),
            "final train loss": last_logged(state.log_history, "loss"),
            "mean train loss": train_result.training_loss,
        }
    )
    if state.best_model_checkpoint:
        summary["best checkpoint"] = state.best_model_checkpoint
        summary[f"best eval {trainer.args.metric_for_best_model}"] = state.best_metric
    summary.update(eval_rows(eval_metrics, data.labels))
    summary["use with"] = pipeline_hint(args.task)
    summary["seconds"] = round(seconds, 1)
    return summary
