"""Small pieces every training stage shares."""

from __future__ import annotations

import os
from typing import Any


def checkpoint_to_resume(training_args: Any) -> str | None:
    """The checkpoint a rerun into the same output_dir continues from (or the one the config names)."""
    from transformers.trainer_utils import get_last_checkpoint

    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    if os.path.isdir(training_args.output_dir):
        return get_last_checkpoint(training_args.output_dir)
    return None


def last_logged(log_history: list[dict[str, Any]], key: str) -> Any:
    """The latest value of `key` in a Trainer's log history, or None."""
    for entry in reversed(log_history):
        if key in entry:
            return entry[key]
    return None
