"""Trainers that upstream lacks or keeps in flux: RLHF PPO (`ppo`, TRL 1.x no longer ships one; its mathematics is
in `ppo_core`) and logit distillation (`distill`, TRL keeps it in `trl.experimental`).

Names are imported on first use, so importing one trainer never loads the other's dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PPOTrainer": "llm_recipes.trainers.ppo",
    "TrainingDiverged": "llm_recipes.trainers.ppo",
    "evaluate_policy": "llm_recipes.trainers.ppo",
    "DistillationTrainer": "llm_recipes.trainers.distill",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'llm_recipes.trainers' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
