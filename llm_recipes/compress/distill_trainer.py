"""`DistillationTrainer`: `transformers.Trainer` whose loss is logit distillation from a frozen teacher.

Our own, and small, because TRL keeps distillation in `trl.experimental`, whose API moves between releases; this
needs only the Trainer's stable `compute_loss` hook. Per batch, the frozen teacher (eval mode, no gradients, on the
student's device) reads the same inputs as the student, and the loss is
`alpha * T^2 * D(teacher, student) + (1 - alpha) * CE(student, labels)` over the labelled tokens
(`llm_recipes.compress.distill`). With `alpha = 0` the teacher is never run: the same trainer is then the labels-only
baseline a distillation run is compared with.

Normalisation follows the Trainer's: with `num_items_in_batch` (the labelled tokens of the whole accumulated batch)
the loss is a sum divided by it, so gradient accumulation gives the same gradients as one large batch. The two
terms are logged separately as token-weighted means (`kd_loss`, `ce_loss`; `eval_ce_loss` with its
`eval_perplexity`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import PreTrainedModel, Trainer

from llm_recipes.compress.distill import DIVERGENCES, DistillationSums, blend, distillation_sums
from llm_recipes.errors import UserError


class DistillationTrainer(Trainer):
    """A Trainer for a student model, with `teacher_model` and the distillation settings as extra arguments."""

    def __init__(
        self,
        *args: Any,
        teacher_model: PreTrainedModel | None = None,
        alpha: float = 0.5,
        temperature: float = 2.0,
        divergence: str = "forward_kl",
        jsd_beta: float = 0.5,
        **kwargs: Any,
    ):
        if not 0 <= alpha <= 1:
            raise UserError(f"alpha: {alpha} must be in [0, 1] (the weight of the distillation term)")
        if temperature <= 0:
            raise UserError(f"temperature: {temperature} must be > 0")
        if divergence not in DIVERGENCES:
            raise UserError(f"divergence: unknown '{divergence}'; choose from {', '.join(DIVERGENCES)}")
        if teacher_model is None and alpha > 0:
            raise UserError("distillation needs a teacher_model (or alpha: 0 to train on the labels alone)")
        super().__init__(*args, **kwargs)
        self.alpha, self.temperature, self.divergence, self.jsd_beta = alpha, temperature, divergence, jsd_beta
        self.teacher_model = None
        if teacher_model is not None and alpha > 0:
            teacher_model.requires_grad_(False)
            teacher_model.eval()
            # placed on this process's device; evaluation mode: no DDP wrapper, it is never trained
            self.teacher_model = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)
        # running sums of [kd, ce, tokens] since the last log, per mode
        self._sums: dict[str, torch.Tensor] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        model_inputs = {key: value for key, value in inputs.items() if key != "labels"}
        model_inputs["use_cache"] = False  # no KV cache during training (and none to keep for the teacher)
        outputs = model(**model_inputs)
        teacher_logits = None
        if self.teacher_model is not None:
            self.teacher_model.eval()
            with torch.no_grad():
                teacher_logits = self.teacher_model(**model_inputs).logits
        sums = distillation_sums(
            outputs.logits,
            teacher_logits,
            labels,
            temperature=self.temperature,
            divergence=self.divergence,
            jsd_beta=self.jsd_beta,
        )
        loss = blend(sums, self.alpha, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # num_items_in_batch counts every rank's tokens while DDP averages gradients over ranks (as Trainer does)
            loss = loss * self.accelerator.num_processes
        self._record(sums, "train" if model.training else "eval")
        return (loss, outputs) if return_outputs else loss

    def _record(self, sums: DistillationSums, mode: str) -> None:
        batch = torch.stack([sums.kd.detach().float(), sums.ce.detach().float(), sums.tokens.float()])
        self._sums[mode] = self._sums[mode] + batch if mode in self._sums else batch

    @torch.no_grad()
    def labelled_perplexity(self, model: PreTrainedModel) -> float | None:
        """Perplexity of any model (the teacher) on the eval rows' labelled tokens -- the tokens the student's
        `eval_perplexity` is measured on, so the two compare directly. None without eval data."""
        if self.eval_dataset is None:
            return None
        was_training = model.training
        model.eval()
        totals = torch.zeros(2, device=self.args.device)
        for batch in self.get_eval_dataloader():
            batch = self._prepare_inputs(batch)
            inputs = {key: value for key, value in batch.items() if key != "labels"}
            sums = distillation_sums(model(**inputs, use_cache=False).logits, None, batch["labels"])
            totals += torch.stack([sums.ce.float(), sums.tokens.float()]).to(totals.device)
        model.train(was_training)
        nll, tokens = self.accelerator.reduce(totals, "sum").tolist()
        return math.exp(min(nll / tokens, 700.0)) if tokens else None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        evaluating = any(key.startswith("eval_") for key in logs)
        mode, prefix = ("eval", "eval_") if evaluating else ("train", "")
        sums = self._sums.pop(mode, None)
        if sums is not None:
            kd, ce, tokens = self.accelerator.reduce(sums, "sum").tolist()
            if tokens > 0:
                if self.teacher_model is not None:
                    logs[f"{prefix}kd_loss"] = kd / tokens
                logs[f"{prefix}ce_loss"] = ce / tokens
                if evaluating:
                    logs["eval_perplexity"] = math.exp(min(ce / tokens, 700.0))
        super().log(logs, start_time)
