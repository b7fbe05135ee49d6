"""SFT-specific checks and reporting: is anything actually supervised, and what did the run do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from llm_recipes.errors import UserError
from llm_recipes.training.resume import last_logged

IGNORE_INDEX = -100


@dataclass
class LossMaskStats:
    rows: int
    rows_without_targets: int  # dropped by TRL because every label was masked (e.g. truncated away)
    loss_tokens: int
    tokens: int


def check_loss_mask(prepared: Dataset, rows_before: int) -> LossMaskStats:
    """Count the tokens the loss sees in TRL's prepared dataset; fail loudly when there are none.

    A template without generation markers, or a max_length shorter than every prompt, masks every label:
    the run would "train" on nothing and report a loss of zero or NaN. TRL drops fully masked rows, so we
    see that as rows gone missing.
    """
    loss_tokens = tokens = 0
    has_labels = "labels" in prepared.column_names
    for batch in prepared.select_columns(["input_ids"] + (["labels"] if has_labels else [])).iter(1024):
        for index, ids in enumerate(batch["input_ids"]):
            tokens += len(ids)
            if has_labels:
                loss_tokens += sum(1 for label in batch["labels"][index] if label != IGNORE_INDEX)
            else:
                loss_tokens += len(ids)
    if len(prepared) == 0 or loss_tokens == 0:
        raise UserError(
            "every label is masked: no example has a token to learn from (is max_length shorter than the prompts, "
            "or does the chat template lack {% generation %} markers?)"
        )
    return LossMaskStats(
        rows=len(prepared),
        rows_without_targets=max(rows_before - len(prepared), 0),
        loss_tokens=loss_tokens,
        tokens=tokens,
    )


def sft_summary(
    trainer: Any,
    data: Any,
    mask: LossMaskStats,
    train_result: Any,
    eval_metrics: dict[str, float],
    parameters: tuple[int, int],
    seconds: float,
) -> dict[str, Any]:
    state = trainer.state
    trainable, total = parameters
    tokens = last_logged(state.log_history, "num_tokens")  # TRL counts them in its logs only: none before a log step
    summary = {
        "data shape": data.shape,
        "processes": trainer.accelerator.num_processes,
        "training examples": len(data.train),
        "examples without targets (dropped)": mask.rows_without_targets,
        "examples seen": round((state.epoch or 0) * len(data.train)),
        "optimizer steps": state.global_step,
        "trainable parameters": trainable,
        "total parameters": total,
        "trainable share": round(trainable / total, 6) if total else 0.0,
        "tokens trained on": int(tokens) if tokens is not None else None,
        "tokens per epoch": mask.tokens,
        "loss tokens per epoch": mask.loss_tokens,
        "final train loss": last_logged(state.log_history, "loss"),
        "mean train loss": train_result.training_loss,
        "eval loss": eval_metrics.get("eval_loss"),
        "seconds": round(seconds, 1),
    }
    for source, report in data.reports:
        summary[f"rows kept from {source}"] = report.describe()
    return summary
