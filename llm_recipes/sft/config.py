"""The SFT stage's arguments beyond TRL's `SFTConfig` and `ModelConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from llm_recipes.data.config import DatasetArguments


@dataclass
class SFTScriptArguments(DatasetArguments):
    """What the SFT recipe needs beyond TRL's `SFTConfig` and `ModelConfig`."""

    trainable_top_layers: int | None = field(
        default=None,
        metadata={
            "help": "Partial fine-tuning: train only the top N transformer blocks (plus the final norm and LM head); "
            "everything else is frozen."
        },
    )
    trainable_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Partial fine-tuning: also train the input embeddings (alone when trainable_top_layers unset)."
        },
    )
