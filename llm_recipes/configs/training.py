"""The training stages' data and script arguments: SFT and pretraining (with the dataset mixture both read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_recipes.configs.options import ResumeOptions
from llm_recipes.configs.parsing import DATA_FORMATS, RANGE_CHECKS, ConfigError
from llm_recipes.errors import did_you_mean


@dataclass
class DatasetSpec:
    """One dataset of a mixture: where it is, what format it has, and how much of it to use."""

    path: str
    format: str = "auto"
    split: str = "train"
    name: str | None = None
    text_field: str = "text"
    weight: float = 1.0


@dataclass
class DatasetArguments(ResumeOptions):
    """The training data of the SFT, pretrain and distill stages: one dataset or a weighted mixture, and what is
    held out for evaluation. A stage redeclares a field to change its default or help (its place stays)."""

    dataset_path: str | None = field(
        default=None,
        metadata={"help": "A data file (json, jsonl, csv, parquet), a `save_to_disk` folder or a Hub dataset id."},
    )
    data_format: str = field(
        default="auto",
        metadata={
            "help": "Format of `dataset_path`; `auto` detects it from the columns.",
            "choices": DATA_FORMATS,
        },
    )
    text_field: str = field(default="text", metadata={"help": "Column holding plain text for the `text` format."})
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path` to train on."})
    datasets: list[dict[str, Any]] | None = field(
        default=None,
        metadata={
            "help": "A mixture (YAML only): a list of {path, format, split, name, text_field, weight}. weight "
            "scales each dataset's row count (0.5 = a random half, 2 = every row twice)."
        },
    )
    eval_dataset_path: str | None = field(default=None, metadata={"help": "A separate evaluation dataset."})
    eval_split_size: float = field(
        default=0.0,
        metadata={"help": "Share of the training data held out for evaluation (0 <= x < 1), or a row count (>= 1)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many eval rows."})


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


def dataset_specs(script_args: SFTScriptArguments) -> list[DatasetSpec]:
    """The datasets a run trains on: the `datasets` mixture, or the single `dataset_path`."""
    if script_args.datasets and script_args.dataset_path:
        raise ConfigError("set either dataset_path or datasets (a mixture), not both")
    if script_args.datasets:
        specs = []
        valid = list(DatasetSpec.__dataclass_fields__)
        for i, entry in enumerate(script_args.datasets):
            if not isinstance(entry, dict) or "path" not in entry:
                raise ConfigError(f"datasets[{i}]: each entry needs a 'path'")
            for key in entry:
                if key not in valid:
                    raise ConfigError(f"datasets[{i}]: unknown key '{key}'{did_you_mean(key, valid)}")
            spec = DatasetSpec(**entry)
            if spec.format not in DATA_FORMATS:
                raise ConfigError(
                    f"datasets[{i}].format: invalid choice {spec.format!r}{did_you_mean(spec.format, DATA_FORMATS)}"
                )
            if not isinstance(spec.weight, (int, float)) or spec.weight <= 0:
                raise ConfigError(f"datasets[{i}].weight: {spec.weight!r} must be > 0")
            specs.append(spec)
        return specs
    if script_args.dataset_path:
        return [
            DatasetSpec(
                path=script_args.dataset_path,
                format=script_args.data_format,
                split=script_args.dataset_split,
                text_field=script_args.text_field,
            )
        ]
    raise ConfigError("no training data: set dataset_path (or datasets for a mixture)")


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
