"""Trainer callbacks that upstream lacks.

`NonFiniteLossGuard`: stop a run whose loss became NaN/Inf before it saves a checkpoint, and say which checkpoint is
the last good one. transformers' `logging_nan_inf_filter` only hides such losses from the logs, and training goes on
writing checkpoints of broken weights that a rerun would then resume from.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from transformers import TrainerCallback

from llm_recipes.training.resume import last_complete_checkpoint


class NonFiniteLossGuard(TrainerCallback):
    """Stops training at the first save, evaluation, log or end of training after a non-finite loss.

    The trainer feeds it every micro-batch loss with `observe()`; that only updates a flag on the loss's device,
    so the hot path never waits for the GPU. The flag is read (one sync) only when the step is about to save,
    evaluate or log; before a save the weights are checked too, since a finite loss can still be followed by an
    update that overflows them. On failure the step's save and evaluation are cancelled, training stops, and
    `failure` holds a one-line message; the recipe raises it.

    `reduce` (e.g. `accelerator.reduce`) sums the flag over processes, so that every process stops at the same
    step instead of the others waiting forever in the next collective.
    """

    def __init__(self, reduce: Callable[..., torch.Tensor] | None = None):
        self.reduce = reduce
        self.failure: str | None = None
        self._first_bad_step: torch.Tensor | None = None
        self._first_bad_loss: torch.Tensor | None = None

    def observe(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().float().reshape(-1)[:1].squeeze()
        if self._first_bad_step is None:
            self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._first_bad_loss = torch.zeros((), device=loss.device)
        first = (self._first_bad_step < 0) & ~torch.isfinite(loss)
        self._first_bad_step = torch.where(first, torch.full_like(self._first_bad_step, step), self._first_bad_step)
        self._first_bad_loss = torch.where(first, loss, self._first_bad_loss)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        due = control.should_save or control.should_evaluate or control.should_log or control.should_training_stop
        if due or state.global_step >= state.max_steps:
            self._check(args, state, control, model, check_weights=control.should_save)
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if control.should_save or control.should_evaluate:
            self._check(args, state, control, model, check_weights=control.should_save)
        return control

    def _check(self, args, state, control, model, check_weights: bool) -> None:
        if self.failure is not None:
            return
        problem = None
        if self._first_bad_step is not None:
            flag = (self._first_bad_step >= 0).float()
            if self.reduce is not None:
                flag = self.reduce(flag, "sum")
            if flag.item() > 0:
                step = int(self._first_bad_step.item())
                if step >= 0:
                    kind = "nan" if torch.isnan(self._first_bad_loss).item() else "inf"
                    problem = f"loss became {kind} at step {step}"
                else:
                    problem = f"loss became nan/inf on another process by step {state.global_step}"
        if problem is None and check_weights and model is not None and not _weights_finite(model, self.reduce):
            problem = f"weights became nan/inf at step {state.global_step}"
        if problem is None:
            return
        has_output = bool(args.output_dir) and os.path.isdir(args.output_dir)
        last_good = last_complete_checkpoint(args.output_dir) if has_output else None
        where = (
            f"the last good checkpoint is {last_good} (to continue from it at a lower rate, rerun with "
            "--learning_rate <lower> --resume_with_changes true)"
            if last_good
            else "no checkpoint was saved before it"
        )
        self.failure = f"{problem}; training stopped without saving, {where}"
        control.should_save = False
        control.should_evaluate = False
        control.should_training_stop = True


def _weights_finite(model: torch.nn.Module, reduce: Callable[..., torch.Tensor] | None) -> bool:
    checks = [torch.isfinite(p).all() for p in model.parameters() if p.numel() > 0]
    if not checks:
        return True
    bad = (~torch.stack(checks).all()).float()
    if reduce is not None:
        bad = reduce(bad, "sum")
    return bad.item() == 0
