"""The pretrain and init-model stages' arguments: data, model source, blocks, curriculum; a fresh model to start
from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_recipes.configs.options import OutputOptions
from llm_recipes.configs.parsing import RANGE_CHECKS
from llm_recipes.data.config import DatasetArguments

PRETRAIN_CURRICULA = ("none", "length", "column", "model_loss")


@dataclass
class PretrainScriptArguments(DatasetArguments):
    """What the pretrain recipe needs beyond `TrainingArguments`: data, model source, blocks, curriculum."""

    # data
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Text to train on: a data file (txt = one document per line, json, jsonl, csv, parquet), a "
            "`save_to_disk` folder or a Hub dataset id. Chats and instructions are flattened to text."
        },
    )
    eval_split_size: float = field(
        default=0.05,
        metadata={"help": "Documents held out for evaluation: a share (0 <= x < 1) or a count (>= 1); 0 for none."},
    )
    shuffle_blocks: bool = field(
        default=True,
        metadata={
            "help": "A shard folder (tokenize's output): shuffle blocks within each row group, in a new order every "
            "epoch (false: the order tokenize wrote them). Other data is shuffled by the Trainer either way."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many documents."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on at most this many documents."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenizing and packing."})
    # tokenizer and model
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The tokenizer (folder or Hub id); defaults to model_name_or_path's when continuing."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continued pretraining: start from this model (folder or Hub id)."}
    )
    preset: str | None = field(
        default=None, metadata={"help": "From scratch: a named size (llama-tiny ... llama-1b, bert-*, lstm-*)."}
    )
    config_name: str | None = field(
        default=None, metadata={"help": "From scratch: any AutoConfig (folder or Hub id) as the architecture."}
    )
    config_overrides: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Config fields to change, e.g. {num_hidden_layers: 4} (YAML mapping or a JSON string)."},
    )
    dropout: float | None = field(
        default=None,
        metadata={"help": "Set every dropout field the config has (attention_dropout, hidden_dropout_prob, ...)."},
    )
    objective: str = field(
        default="clm",
        metadata={"help": "clm (causal LM, decoders) or mlm (masked LM, encoders).", "choices": ("clm", "mlm")},
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked for the mlm objective."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})
    # blocks
    block_size: int = field(
        default=512, metadata={"help": "Tokens per training row; capped at the model's maximum positions."}
    )
    packing: bool = field(
        default=True,
        metadata={"help": "Pack documents (EOS between them) into full blocks; false: one document per row, padded."},
    )
    packing_boundaries: str = field(
        default="cross",
        metadata={
            "help": "cross: attention spans the whole block; separate: each document attends only to itself.",
            "choices": ("cross", "separate"),
        },
    )
    # curriculum
    curriculum: str = field(
        default="none",
        metadata={
            "help": "Order the training documents easy -> hard by: length (tokens), column (a score column), or "
            "model_loss (a small causal LM's loss). none: shuffled as usual.",
            "choices": PRETRAIN_CURRICULA,
        },
    )
    curriculum_column: str | None = field(default=None, metadata={"help": "Score column for curriculum: column."})
    curriculum_model: str | None = field(
        default=None, metadata={"help": "A small causal LM (folder or Hub id) for curriculum: model_loss."}
    )
    curriculum_schedule: str = field(
        default="sorted",
        metadata={
            "help": "sorted: strictly easy -> hard; buckets: curriculum_buckets groups easy -> hard, shuffled inside.",
            "choices": ("sorted", "buckets"),
        },
    )
    curriculum_buckets: int = field(default=4, metadata={"help": "Number of difficulty buckets (schedule buckets)."})
    # training extras
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop when eval loss has not improved for this many evaluations."}
    )
    eval_before_training: bool = field(
        default=True, metadata={"help": "Also measure the eval perplexity of the model before training."}
    )


RANGE_CHECKS["block_size"] = (lambda v: v >= 8, "must be >= 8")
RANGE_CHECKS["mlm_probability"] = (lambda v: 0 < v < 1, "must be in (0, 1)")
RANGE_CHECKS["dropout"] = (lambda v: v is None or 0 <= v < 1, "must be in [0, 1)")
RANGE_CHECKS["curriculum_buckets"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["early_stopping_patience"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["dataset_num_proc"] = (lambda v: v is None or v >= 1, "must be >= 1")


@dataclass
class InitModelArguments(OutputOptions):
    """A fresh model to start from: a tokenizer (trained here or taken from a folder) and a preset architecture."""

    output_dir: str = field(default="outputs/base", metadata={"help": "Where the model and tokenizer are written."})
    preset: str = field(
        default="llama-tiny", metadata={"help": "Architecture size preset (see llm_recipes/models/loading.py)."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Use this tokenizer instead of training one."}
    )
    tokenizer_datasets: list[str] | None = field(
        default=None, metadata={"help": "Datasets whose text trains the tokenizer (any format SFT reads)."}
    )
    vocab_size: int = field(default=2000, metadata={"help": "Vocabulary size of the trained tokenizer."})
    chat_template: bool = field(
        default=False,
        metadata={"help": "Give the trained tokenizer ChatML tokens and template (base models usually have none)."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of the random initialisation."})


RANGE_CHECKS["vocab_size"] = (lambda v: v >= 300, "must be >= 300 (256 bytes plus special tokens and merges)")


@dataclass
class TokenizeArguments(DatasetArguments):
    """The tokenize stage: text -> packed blocks in Parquet shards that pretrain streams (`data/shards.py`)."""

    output_dir: str = field(default="outputs/shards", metadata={"help": "The shard folder to write."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "The tokenizer pretraining will use (folder or Hub id)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow tokenizer code from the Hub (off: safe)."})
    block_size: int = field(default=512, metadata={"help": "Tokens per block: pretrain's block_size must match."})
    packing: bool = field(
        default=True,
        metadata={"help": "Pack documents (EOS between them) into full blocks; false: one document per row."},
    )
    packing_boundaries: str = field(
        default="cross",
        metadata={
            "help": "separate: also store position ids restarting at each document (pretrain's packing_boundaries).",
            "choices": ("cross", "separate"),
        },
    )
    blocks_per_shard: int = field(
        default=4096,
        metadata={"help": "Blocks per Parquet shard; at least as many shards as data-parallel processes are needed."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Tokenize at most this many documents."})
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for reading and conversion."})
    engine: str = field(
        default="datasets",
        metadata={
            "help": "datasets: this machine; ray: read, tokenize and pack on a Ray cluster (`pip install "
            "'llm-recipes[ray]'`), the same shards written here.",
            "choices": ("datasets", "ray"),
        },
    )
    ray_address: str | None = field(
        default=None,
        metadata={
            "help": "engine ray: the cluster to join (host:port, 'auto', ray://host:10001); unset: RAY_ADDRESS, "
            "else a Ray started on this machine."
        },
    )


RANGE_CHECKS["blocks_per_shard"] = (lambda v: v >= 1, "must be >= 1")
