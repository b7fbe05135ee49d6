"""What a stage will run with, as the estimates read it: its config section over the stage's dataclass defaults.

Read, not parsed: the recipes check the values themselves (the dry run runs those checks separately).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from transformers import TrainingArguments
from trl import DPOConfig, GRPOConfig, KTOConfig, ModelConfig, RewardConfig, RLOOConfig, SFTConfig

from llm_recipes.compress.config import DistillArguments, PruneArguments, QuantizeArguments
from llm_recipes.evaluation.config import EvaluateArguments
from llm_recipes.export.config import ExportArguments
from llm_recipes.pretrain.config import PretrainScriptArguments
from llm_recipes.rl.config import (
    DPOScriptArguments,
    KTOScriptArguments,
    PPOConfig,
    PPOScriptArguments,
    RewardScriptArguments,
    RLScriptArguments,
)
from llm_recipes.sft.config import SFTScriptArguments

TRAINING_STAGES = ("pretrain", "sft", "reward", "ppo", "grpo", "rloo", "dpo", "kto", "distill")
WEIGHTS_ONLY_STAGES = ("evaluate", "quantize", "prune", "export")
DATA_STAGES = ("clean-corpus", "train-tokenizer", "tokenize", "feedback-to-data")
RL_STAGES = ("ppo", "grpo", "rloo", "dpo", "kto")

# each stage's dataclasses, later ones' defaults overridden by earlier ones' (as the recipes parse them)
_STAGE_TYPES: dict[str, tuple[type, ...]] = {
    "pretrain": (PretrainScriptArguments, TrainingArguments),
    "sft": (SFTScriptArguments, SFTConfig, ModelConfig),
    "reward": (RewardScriptArguments, RewardConfig, ModelConfig),
    "dpo": (DPOScriptArguments, DPOConfig, ModelConfig),
    "kto": (KTOScriptArguments, KTOConfig, ModelConfig),
    "grpo": (RLScriptArguments, GRPOConfig, ModelConfig),
    "rloo": (RLScriptArguments, RLOOConfig, ModelConfig),
    "ppo": (PPOScriptArguments, PPOConfig, ModelConfig),
    "distill": (DistillArguments, TrainingArguments),
    "prune": (PruneArguments, TrainingArguments),
    "quantize": (QuantizeArguments,),
    "export": (ExportArguments,),
    "evaluate": (EvaluateArguments,),
}
# the recipes' own defaults that change what is held in memory
_RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {"reward": {"lora_task_type": "SEQ_CLS"}, "prune": {"max_steps": 100}}
_TRL_STAGES = ("sft", "reward", "dpo", "kto", "grpo", "rloo")


@functools.cache
def _defaults(stage: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for cls in reversed(_STAGE_TYPES.get(stage, ())):
        for item in dataclasses.fields(cls):
            if item.default is not dataclasses.MISSING:
                values[item.name] = item.default
            elif item.default_factory is not dataclasses.MISSING:
                values[item.name] = item.default_factory()
    return {**values, **_RECIPE_DEFAULTS.get(stage, {})}


def stage_settings(stage: str, section: dict) -> dict[str, Any]:
    """The stage's config section over its dataclasses' defaults (and the recipe's own)."""
    settings = {**_defaults(stage), **section}
    if stage in _TRL_STAGES and settings.get("bf16") is None:
        settings["bf16"] = not settings.get("fp16")  # TRL's configs default to bf16 unless fp16 is set
    return settings


def checkpointing_on(settings: dict[str, Any]) -> bool:
    value = settings.get("activation_checkpointing")
    if value is None:
        value = settings.get("gradient_checkpointing")
    return bool(value)
