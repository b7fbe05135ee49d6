"""What a compression stage did, as typed records: each stage's summary (printed, recorded in the manifest, returned
by its recipe's main) is one of these, and `as_summary()` gives the dict under the names the pipeline table and the
tests read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_recipes.models.loading import count_parameters
from llm_recipes.training.resume import last_logged


def distill_loss(script_args: Any) -> str:
    """The distill stage's training objective in words (the summary's and the report's "loss"/"method")."""
    if script_args.method == "logits":
        return (
            f"{script_args.alpha} * T^2 * {script_args.divergence} + {1 - script_args.alpha:g} * CE, "
            f"T={script_args.temperature}"
        )
    return f"GKD, lmbda={script_args.gkd_lmbda}, {script_args.divergence}"


@dataclass
class DistillSummary:
    method: str
    student: str
    student_parameters: int
    data_shape: str
    max_length: int
    loss: str
    training_rows: int
    optimizer_steps: int
    final_train_loss: float | None
    mean_train_loss: float | None
    final_kd_loss: float | None
    final_ce_loss: float | None
    eval_loss: float | None
    eval_ce_loss: float | None
    eval_perplexity: float | None  # on the trainer's eval split, labelled tokens only
    teacher_eval_perplexity: float | None
    seconds: float
    rows_kept: dict[str, str] = field(default_factory=dict)  # dataset -> which rows its filters kept

    @classmethod
    def of_run(
        cls,
        script_args: Any,
        trainer: Any,
        inputs: Any,
        train_result: Any,
        eval_metrics: dict[str, Any],
        seconds: float,
    ) -> DistillSummary:
        """From the trained trainer, what build_trainer made (`DistillInputs`) and the eval metrics."""
        state = trainer.state
        _, parameters = count_parameters(trainer.accelerator.unwrap_model(trainer.model))
        return cls(
            method=script_args.method,
            student=inputs.student,
            student_parameters=parameters,
            data_shape=inputs.shape,
            max_length=inputs.max_length,
            loss=distill_loss(script_args),
            training_rows=inputs.training_rows if inputs.training_rows is not None else len(inputs.data.train),
            optimizer_steps=state.global_step,
            final_train_loss=last_logged(state.log_history, "loss"),
            mean_train_loss=train_result.training_loss,
            final_kd_loss=last_logged(state.log_history, "kd_loss"),
            final_ce_loss=last_logged(state.log_history, "ce_loss"),
            eval_loss=eval_metrics.get("eval_loss"),
            eval_ce_loss=eval_metrics.get("eval_ce_loss"),
            eval_perplexity=eval_metrics.get("eval_perplexity"),
            teacher_eval_perplexity=eval_metrics.get("teacher_perplexity"),
            seconds=round(seconds, 1),
            rows_kept={source: report.describe() for source, report in inputs.data.reports},
        )

    def as_summary(self) -> dict[str, Any]:
        summary = {
            "method": self.method,
            "student": self.student,
            "student parameters": self.student_parameters,
            "data shape": self.data_shape,
            "max length": self.max_length,
            "loss": self.loss,
            "training rows": self.training_rows,
            "optimizer steps": self.optimizer_steps,
            "final train loss": self.final_train_loss,
            "mean train loss": self.mean_train_loss,
            "final kd loss": self.final_kd_loss,
            "final ce loss": self.final_ce_loss,
            "eval loss": self.eval_loss,
            "eval ce loss": self.eval_ce_loss,
            "eval perplexity (labelled tokens)": self.eval_perplexity,
            "teacher eval perplexity (labelled tokens)": self.teacher_eval_perplexity,
            "seconds": self.seconds,
        }
        for source, description in self.rows_kept.items():
            summary[f"rows kept from {source}"] = description
        return {key: value for key, value in summary.items() if value is not None}


@dataclass
class QuantizeSummary:
    source: str
    method: str  # QuantizationSpec.describe()
    seconds: float
    # measured only where the quantized model runs on this machine (else the report's notes say why not)
    max_logit_difference: float | None = None
    reload_identical: bool | None = None

    @classmethod
    def of_report(cls, source: str, method: str, report: dict[str, Any], seconds: float) -> QuantizeSummary:
        """From the quantize stage's compression report (`compare_with_source`'s figures)."""
        summary = cls(source=source, method=method, seconds=round(seconds, 1))
        if "logit_difference" in report:
            summary.max_logit_difference = report["logit_difference"]["max"]
            summary.reload_identical = report["reload"]["identical_outputs"]
        return summary

    def as_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"source": self.source, "method": self.method}
        if self.max_logit_difference is not None:
            summary["max |logit difference|"] = self.max_logit_difference
            summary["reload gives same outputs"] = self.reload_identical
        summary["seconds"] = self.seconds
        return summary
