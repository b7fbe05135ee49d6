"""The training data every training stage reads (SFT, pretrain, distill, prune recovery): one dataset or a weighted
mixture (`DatasetSpec`, `dataset_specs`), and what is held out for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_recipes.configs.options import ResumeOptions
from llm_recipes.configs.parsing import DATA_FORMATS, ConfigError
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


def dataset_specs(script_args: DatasetArguments) -> list[DatasetSpec]:
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
