"""Small pieces every training stage shares: where a run starts (the checkpoint it resumes from, a learning rate
changed on resume), and what its log says."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from transformers import TrainerCallback


def checkpoint_to_resume(training_args: Any) -> str | None:
    """The checkpoint a rerun into the same output_dir continues from (or the one the config names)."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    if os.path.isdir(training_args.output_dir):
        return last_complete_checkpoint(training_args.output_dir)
    return None


def resume_point(trainer: Any, run: Any) -> str | None:
    """Where training starts, decided after `StageRun.begin` on every process at once: the checkpoint to resume
    from (None for a fresh start). The manifest then says this run is under way (`complete: false`) before the
    trainer writes anything, and a learning rate changed on resume (`resume_with_changes`) replaces the one the
    restored optimizer and scheduler bring back."""
    trainer.accelerator.wait_for_everyone()  # the first process has finished clearing the folder (overwrite)
    checkpoint = checkpoint_to_resume(getattr(trainer, "args", None) or trainer.config)
    if checkpoint:
        trainer.accelerator.print(f"resuming from {checkpoint}")
        if "learning_rate" in run.changes:
            before, after = run.changes["learning_rate"]
            if hasattr(trainer, "add_callback"):
                trainer.add_callback(RescaleLearningRate(after / before))
            else:  # our PPO trainer applies it once it has loaded the checkpoint's optimizer and scheduler
                trainer.learning_rate_factor = after / before
    if trainer.accelerator.is_main_process:
        run.mark_started()
    return checkpoint


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint-N folder that was written to the end. `Trainer` writes trainer_state.json last, so a
    run killed while saving leaves a folder without it (or with it cut short); transformers' `get_last_checkpoint`
    would still pick that folder, and resuming from it fails."""
    found = []
    for name in os.listdir(output_dir):
        match = re.fullmatch(r"checkpoint-(\d+)", name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    for _, folder in sorted(found, reverse=True):
        try:
            with open(os.path.join(folder, "trainer_state.json"), encoding="utf-8") as state:
                json.load(state)
        except (OSError, ValueError):
            print(f"note: {folder} was not written to the end (no readable trainer_state.json); not resuming from it")
            continue
        return folder
    return None


def last_logged(log_history: list[dict[str, Any]], key: str) -> Any:
    """The latest value of `key` in a Trainer's log history, or None."""
    for entry in reversed(log_history):
        if key in entry:
            return entry[key]
    return None


class RescaleLearningRate(TrainerCallback):
    """Scale every parameter group's rate, and the scheduler's base rates, by `factor` once the checkpoint's
    optimizer and scheduler are loaded (the Trainer loads them before `on_train_begin`). Groups keep their ratios,
    so layer-wise rates stay layer-wise; the schedule's shape comes from this run's settings as usual."""

    def __init__(self, factor: float):
        self.factor = factor

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        rescale_learning_rate(optimizer, lr_scheduler, self.factor)
        return control


def rescale_learning_rate(optimizer: Any, scheduler: Any, factor: float) -> None:
    """Multiply the current and initial rates of every group, and a scheduler's base rates, by `factor`."""
    for group in getattr(optimizer, "param_groups", []):
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    if scheduler is not None:
        scheduler = getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper
        if hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [rate * factor for rate in scheduler.base_lrs]
        if hasattr(scheduler, "_last_lr"):
            scheduler._last_lr = [rate * factor for rate in scheduler._last_lr]
