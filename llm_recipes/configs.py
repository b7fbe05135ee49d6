"""Script arguments for each stage, and one parser that turns YAML + command line into checked dataclasses.

Parsing is TRL's (`TrlParser`: `--config file.yaml`, every field overridable on the command line). What we add
is the part a user meets when they get something wrong: unknown keys are named with the closest valid key,
values are type- and range-checked, and local paths are checked to exist -- all before any model is loaded.
Every such problem is a `ConfigError`, printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llm_recipes.errors import UserError

# What a local data file or a saved dataset may look like; anything else that does not exist is taken as a Hub id.
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt", ".gz", ".zst")
DATA_FORMATS = ("auto", "alpaca", "sharegpt", "messages", "prompt_completion", "text")
TXT_UNITS = ("line", "file", "paragraph")


class ConfigError(UserError):
    """A user error in a config or on the command line; its message is one line saying what to fix."""


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
class SFTScriptArguments:
    """What the SFT recipe needs beyond TRL's `SFTConfig` and `ModelConfig`."""

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


# --------------------------------------------------------------------------------------------------------------
# Range checks. Keyed by field name, so they apply to whichever dataclass of a stage carries the field.

Check = tuple[Callable[[Any], bool], str]

RANGE_CHECKS: dict[str, Check] = {
    "learning_rate": (lambda v: v > 0, "must be > 0"),
    "num_train_epochs": (lambda v: v > 0, "must be > 0"),
    "max_steps": (lambda v: v == -1 or v > 0, "must be > 0 (or -1 to train by epochs)"),
    "per_device_train_batch_size": (lambda v: v >= 1, "must be >= 1"),
    "per_device_eval_batch_size": (lambda v: v >= 1, "must be >= 1"),
    "gradient_accumulation_steps": (lambda v: v >= 1, "must be >= 1"),
    "weight_decay": (lambda v: v >= 0, "must be >= 0"),
    "warmup_steps": (lambda v: v >= 0, "must be >= 0"),
    "max_grad_norm": (lambda v: v >= 0, "must be >= 0"),
    "logging_steps": (lambda v: v > 0, "must be > 0"),
    "save_steps": (lambda v: v > 0, "must be > 0"),
    "eval_steps": (lambda v: v is None or v > 0, "must be > 0"),
    "max_length": (lambda v: v is None or v >= 1, "must be >= 1 (or null for no limit)"),
    "lora_r": (lambda v: v >= 1, "must be >= 1 (the LoRA rank)"),
    "lora_alpha": (lambda v: v > 0, "must be > 0"),
    "lora_dropout": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "eval_split_size": (lambda v: v >= 0, "must be >= 0 (a share below 1, or a row count)"),
    "max_train_samples": (lambda v: v is None or v >= 1, "must be >= 1"),
    "max_eval_samples": (lambda v: v is None or v >= 1, "must be >= 1"),
    "trainable_top_layers": (lambda v: v is None or v >= 0, "must be >= 0"),
}


# --------------------------------------------------------------------------------------------------------------
# Parsing


def _closest(word: str, candidates: Sequence[str]) -> str:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


class _OneLineErrorParser:
    """Mixin: argparse's own errors (bad type, bad choice) become a ConfigError instead of usage + exit."""

    def error(self, message: str):
        # "argument --lr/--lr-x: invalid float value" -> "--lr: invalid float value"
        raise ConfigError(re.sub(r"^argument (--[\w]+)(/--[\w-]+)?: ", r"\1: ", message))


def _make_parser(dataclass_types: Sequence[type]):
    from trl import TrlParser

    parser_cls = type("RecipeParser", (_OneLineErrorParser, TrlParser), {})
    return parser_cls(list(dataclass_types))


def _option_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    actions = {}
    for action in parser._actions:
        # a bool field defaulting to true also gets a `--no_<field>` action with the same dest, added after it;
        # the first (`--<field>`) is the one whose default a YAML value must replace, or `field: false` is lost
        if action.dest != "help":
            actions.setdefault(action.dest, action)
    return actions


def _check_yaml_value(key: str, value: Any, action: argparse.Action) -> None:
    """argparse converts only string defaults, so a YAML 2.5 for an int field would pass unchecked."""
    if value is None:
        return
    if action.nargs in ("+", "*"):
        if not isinstance(value, list):
            value = [value]
        items = value
    elif isinstance(value, (list, dict)):
        # dict-typed fields (e.g. model_init_kwargs) are parsed as JSON strings by argparse; YAML mappings are fine
        if isinstance(value, dict) and action.type is str:
            return
        raise ConfigError(f"{key}: expected a single value, got {type(value).__name__} {value!r}")
    else:
        items = [value]
    for item in items:
        if isinstance(item, dict):
            continue
        if action.type is not None and action.type is not str and action.type is not Any:
            try:
                action.type(str(item))
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                expected = getattr(action.type, "__name__", "a valid value")
                raise ConfigError(f"{key}: invalid value {item!r} (expected {expected})") from None
            if action.type is int and isinstance(item, float) and not item.is_integer():
                raise ConfigError(f"{key}: invalid value {item!r} (expected an integer)")
        if action.choices is not None and item not in action.choices:
            names = [str(c) for c in action.choices]
            raise ConfigError(
                f"{key}: invalid choice {item!r}{_closest(str(item), names)} (choose from {', '.join(names)})"
            )


def load_yaml_config(path: str) -> dict[str, Any]:
    config_path = Path(path)
    if not config_path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of field: value")
    return config


def parse_config(dataclass_types: Sequence[type], argv: Sequence[str] | None = None, **defaults: Any) -> tuple:
    """Parse `--config file.yaml` plus command-line overrides into one instance per dataclass, checked.

    `defaults` change a field's default for this stage (the YAML and the command line still win).
    Raises ConfigError; recipes call `parse_or_exit`, which prints it as one line and exits 2.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _make_parser(dataclass_types)
    actions = _option_actions(parser)
    valid_keys = sorted(actions)

    config: dict[str, Any] = {}
    if "--config" in args:
        at = args.index("--config")
        if at + 1 >= len(args):
            raise ConfigError("--config needs a path to a YAML file")
        config = load_yaml_config(args[at + 1])
        del args[at : at + 2]
    for key, value in (config.pop("env", None) or {}).items():
        os.environ[str(key)] = str(value)

    for key, value in config.items():
        if key not in actions:
            raise ConfigError(f"unknown key '{key}' in the config{_closest(key, valid_keys)}")
        _check_yaml_value(key, value, actions[key])
    for key, value in defaults.items():
        actions[key].default = value
    for key, value in config.items():
        actions[key].default = value
        actions[key].required = False

    for token in args:
        if token.startswith("--"):
            key = token[2:].split("=", 1)[0].replace("-", "_")
            if key not in actions and key != "help":  # --help: argparse prints every field and exits 0
                raise ConfigError(f"unknown option '--{key}'{_closest(key, valid_keys)}")

    try:
        parsed = parser.parse_args_into_dataclasses(args=args)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        # dataclass __post_init__ checks (transformers, TRL) raise long messages; the first line says it
        raise ConfigError(str(err).strip().splitlines()[0]) from None

    for instance in parsed:
        check_ranges(instance)
    return tuple(parsed)


def check_ranges(instance: Any) -> None:
    for name, (is_ok, requirement) in RANGE_CHECKS.items():
        if hasattr(instance, name):
            value = getattr(instance, name)
            if value is not None and not isinstance(value, (int, float)):
                continue
            if not is_ok(value):
                raise ConfigError(f"{name}: {value!r} {requirement}")


def parse_or_exit(dataclass_types: Sequence[type], argv: Sequence[str] | None = None, **defaults: Any) -> tuple:
    """`parse_config` for recipes: a ConfigError is one line on stderr (main process only) and exit code 2."""
    try:
        return parse_config(dataclass_types, argv, **defaults)
    except ConfigError as err:
        exit_with_config_error(err)


def is_first_process() -> bool:
    """Rank 0 of a launch (or a plain `python` run). Data stages do their work there only: under
    `accelerate launch --num_processes N` the other ranks would write the same output; `num_proc` parallelises."""
    return os.environ.get("RANK", "0") == "0"


def exit_with_config_error(err: UserError):
    if is_first_process():
        print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


# --------------------------------------------------------------------------------------------------------------
# Path checks, shared by the stages


def looks_local(path: str) -> bool:
    """A path the user means as a local file or folder (rather than a Hub id)."""
    return (
        os.path.exists(path)
        or path.startswith((".", "/", "~"))
        or path.endswith(DATA_FILE_SUFFIXES)
        or path.count("/") > 1
        or "\\" in path
        or "*" in path
    )


def check_dataset_path(path: str, what: str = "dataset") -> None:
    if not looks_local(path):
        return  # a Hub id: checked when loaded, we have no network to ask now
    expanded = os.path.expanduser(path)
    if "*" in expanded:
        import glob

        if not glob.glob(expanded):
            raise ConfigError(f"{what} '{path}' matches no file")
        return
    if not os.path.exists(expanded):
        raise ConfigError(f"{what} file not found: {path}")


def check_model_path(path: str | None, what: str = "model_name_or_path") -> None:
    if not path:
        raise ConfigError(f"{what} is required: a local model folder or a Hub model id")
    if not looks_local(path):
        return
    expanded = os.path.expanduser(path)
    if not os.path.isdir(expanded):
        raise ConfigError(f"{what}: model folder not found: {path}")
    if not os.path.isfile(os.path.join(expanded, "config.json")) and not os.path.isfile(
        os.path.join(expanded, "adapter_config.json")
    ):
        raise ConfigError(f"{what}: {path} has no config.json; is it a saved model folder?")


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
                    raise ConfigError(f"datasets[{i}]: unknown key '{key}'{_closest(key, valid)}")
            spec = DatasetSpec(**entry)
            if spec.format not in DATA_FORMATS:
                raise ConfigError(
                    f"datasets[{i}].format: invalid choice {spec.format!r}{_closest(spec.format, DATA_FORMATS)}"
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


CORPUS_OUTPUT_FORMATS = ("arrow", "parquet")


@dataclass
class CleanCorpusArguments:
    """Raw text in, a cleaned, deduplicated, split `datasets` dataset out (see llm_recipes/data/corpus_steps.py)."""

    input_paths: list[str] | None = field(
        default=None,
        metadata={
            "help": "Files, globs, folders, `save_to_disk` folders or a Hub dataset id: txt, jsonl/json, parquet, csv, "
            "html, optionally .gz/.zst compressed."
        },
    )
    output_dir: str = field(default="outputs/corpus", metadata={"help": "Where the dataset and its report go."})
    text_field: str = field(default="text", metadata={"help": "The text column of structured inputs."})
    txt_unit: str = field(
        default="line",
        metadata={"help": "A .txt document is one line, one file, or one blank-line paragraph.", "choices": TXT_UNITS},
    )
    on_malformed: str = field(
        default="skip",
        metadata={"help": "A malformed record is skipped (and counted) or fails the run.", "choices": ("skip", "fail")},
    )
    html: str = field(
        default="extract",
        metadata={"help": "HTML files: main-text extraction, or the raw markup.", "choices": ("extract", "raw")},
    )
    input_split: str = field(default="train", metadata={"help": "Split of a Hub id or a saved DatasetDict."})
    hub_config: str | None = field(default=None, metadata={"help": "Config name of a Hub dataset."})
    streaming: bool = field(default=False, metadata={"help": "Stream a Hub dataset instead of downloading it all."})
    max_documents: int | None = field(default=None, metadata={"help": "Read at most this many documents."})
    preset: str | None = field(
        default=None,
        metadata={"help": "A ready pipeline when `steps` is unset: minimal or web.", "choices": ("minimal", "web")},
    )
    steps: list[Any] | None = field(
        default=None,
        metadata={
            "help": "The pipeline, in order (YAML only): normalize, filters by name or preset (length, gopher, c4, "
            "fineweb, language, bad_words, regex, callable), pii, exact_dedup, near_dedup, decontaminate, augment."
        },
    )
    validation_size: float = field(default=0.0, metadata={"help": "Validation split: a share below 1 or a count."})
    test_size: float = field(default=0.0, metadata={"help": "Test split: a share below 1 or a count."})
    cross_split_dedup: bool = field(
        default=True, metadata={"help": "Drop train documents that duplicate a validation/test document."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the split (and of augmentation)."})
    output_format: str = field(
        default="arrow",
        metadata={
            "help": "arrow: `save_to_disk`; parquet: Hub-style data/<split>-NNNNN-of-NNNNN.parquet shards.",
            "choices": CORPUS_OUTPUT_FORMATS,
        },
    )
    rows_per_shard: int = field(default=100_000, metadata={"help": "Rows per Parquet shard."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes for every map/filter step."})
    batch_size: int = field(default=1000, metadata={"help": "Documents per batch of a map step."})
    keep_intermediate: bool = field(
        default=False, metadata={"help": "Keep the per-step checkpoints (<output_dir>.partial) after success."}
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Push the dataset to the Hub (private by default)."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Hub repo id for push_to_hub."})
    hub_private: bool = field(default=True, metadata={"help": "Create the Hub dataset repo as private."})


RANGE_CHECKS["validation_size"] = (lambda v: v >= 0, "must be >= 0 (a share below 1, or a document count)")
RANGE_CHECKS["test_size"] = (lambda v: v >= 0, "must be >= 0 (a share below 1, or a document count)")
RANGE_CHECKS["rows_per_shard"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["num_proc"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["batch_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["max_documents"] = (lambda v: v is None or v >= 1, "must be >= 1")


@dataclass
class InitModelArguments:
    """A fresh model to start from: a tokenizer (trained here or taken from a folder) and a preset architecture."""

    output_dir: str = field(default="outputs/base", metadata={"help": "Where the model and tokenizer are written."})
    preset: str = field(default="llama-tiny", metadata={"help": "Architecture size preset (see modeling.py)."})
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


@dataclass
class TrainTokenizerArguments:
    """A tokenizer trained from a dataset's text (or an existing tokenizer retrained on it), with a fertility report."""

    output_dir: str = field(default="outputs/tokenizer", metadata={"help": "Where the tokenizer is written."})
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Text to train on: a data file (txt = one document per line, json, jsonl, csv, parquet), a "
            "`save_to_disk` folder or a Hub dataset id. Any format SFT reads works; chats are flattened to text."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path` to train on."})
    text_field: str = field(default="text", metadata={"help": "Column holding plain text for the `text` format."})
    data_format: str = field(
        default="auto",
        metadata={"help": "Format of `dataset_path`; `auto` detects it from the columns.", "choices": DATA_FORMATS},
    )
    algorithm: str = field(
        default="bpe",
        metadata={
            "help": "bpe (byte-level) or unigram (SentencePiece-style, byte fallback). Ignored with base_tokenizer.",
            "choices": ("bpe", "unigram"),
        },
    )
    vocab_size: int = field(default=8000, metadata={"help": "Vocabulary size, special and byte tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "BPE: a pair must occur this often to be merged."})
    chat_template: bool = field(
        default=False,
        metadata={"help": "Add ChatML tokens and template, with <|im_end|> as EOS (for chat models)."},
    )
    add_bos: bool = field(default=False, metadata={"help": "Prepend the BOS token when encoding."})
    special_tokens: list[str] | None = field(
        default=None, metadata={"help": "Extra special tokens (never split, never merged into other tokens)."}
    )
    model_max_length: int | None = field(
        default=None, metadata={"help": "Context length saved with the tokenizer (the model's max positions)."}
    )
    base_tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "Retrain this tokenizer (folder or Hub id) on the data instead: its algorithm, pre-tokenizer, "
            "special tokens and chat template are kept, only the vocabulary is learned anew."
        },
    )
    max_training_documents: int | None = field(
        default=None, metadata={"help": "Train on at most this many documents (a random sample)."}
    )
    heldout_size: float = field(
        default=0.05,
        metadata={"help": "Documents held out for the fertility report: a share (< 1) or a count (>= 1); 0 for none."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of the held-out split and the document sample."})


RANGE_CHECKS["vocab_size"] = (lambda v: v >= 300, "must be >= 300 (256 bytes plus special tokens and merges)")
RANGE_CHECKS["min_frequency"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["model_max_length"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["max_training_documents"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["heldout_size"] = (lambda v: v >= 0, "must be >= 0 (a share below 1, or a document count)")


PRETRAIN_CURRICULA = ("none", "length", "column", "model_loss")


@dataclass
class PretrainScriptArguments:
    """What the pretrain recipe needs beyond `TrainingArguments`: data, model source, blocks, curriculum."""

    # data
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Text to train on: a data file (txt = one document per line, json, jsonl, csv, parquet), a "
            "`save_to_disk` folder or a Hub dataset id. Chats and instructions are flattened to text."
        },
    )
    data_format: str = field(
        default="auto",
        metadata={"help": "Format of `dataset_path`; `auto` detects it from the columns.", "choices": DATA_FORMATS},
    )
    text_field: str = field(default="text", metadata={"help": "Column holding plain text for the `text` format."})
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path` to train on."})
    datasets: list[dict[str, Any]] | None = field(
        default=None,
        metadata={"help": "A mixture (YAML only): a list of {path, format, split, name, text_field, weight}."},
    )
    eval_dataset_path: str | None = field(default=None, metadata={"help": "A separate evaluation dataset."})
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


EXPORT_DTYPES = ("auto", "float32", "float16", "bfloat16")
EXPORT_QUANTIZATIONS = ("none", "int8", "nf4")
GGUF_TYPES = ("none", "f32", "f16", "q8_0")


@dataclass
class ExportArguments:
    """A trained model (or adapter) made deployable: merged, sharded, carded, optionally GGUF, optionally pushed."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The stage output to export: a full model folder or a PEFT adapter folder (LoRA, DoRA)."},
    )
    output_dir: str = field(default="outputs/export", metadata={"help": "Where the deployable folder is written."})
    base_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The full-precision base an adapter merges into (default: its adapter_config's)."},
    )
    merge_adapter: bool = field(
        default=True,
        metadata={"help": "Merge an adapter into its base; false exports (and pushes) the adapter on its own."},
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype of the export; auto keeps the base model's.", "choices": EXPORT_DTYPES},
    )
    max_shard_size: str = field(
        default="5GB", metadata={"help": "Largest safetensors shard, e.g. 500MB, 5GB (or a byte count)."}
    )
    quantization: str = field(
        default="none",
        metadata={
            "help": "Save the weights quantized with bitsandbytes (int8, nf4); they load the same way, with "
            "bitsandbytes installed.",
            "choices": EXPORT_QUANTIZATIONS,
        },
    )
    gguf_type: str = field(
        default="none",
        metadata={"help": "Also write a GGUF file for llama.cpp (Llama architectures).", "choices": GGUF_TYPES},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})
    # model card
    model_name: str | None = field(default=None, metadata={"help": "Name on the card (default: the repo name)."})
    license: str | None = field(default=None, metadata={"help": "License id for the card, e.g. apache-2.0."})
    language: list[str] | None = field(default=None, metadata={"help": "Language codes for the card, e.g. en."})
    tags: list[str] | None = field(default=None, metadata={"help": "Extra card tags (llm-recipes and stages added)."})
    datasets: list[str] | None = field(
        default=None, metadata={"help": "Hub dataset ids for the card (those found in the stage manifests added)."}
    )
    eval_results_path: str | None = field(
        default=None,
        metadata={"help": "The evaluation stage's eval_results.json (or its folder): metrics for the card."},
    )
    intended_use: str | None = field(default=None, metadata={"help": "The card's intended-use paragraph."})
    limitations: str | None = field(default=None, metadata={"help": "The card's limitations paragraph."})
    # Hub
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the export to the Hub (private by default)."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repo id for the push (default: the output folder's name, your namespace)."}
    )
    hub_private_repo: bool = field(default=True, metadata={"help": "Create the Hub repo as private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to (created if missing)."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message of the push."})


EVAL_METRICS = ("perplexity", "generation", "bleu", "chrf", "rouge", "exact_match", "reward", "classification")


@dataclass
class EvaluateArguments:
    """Evaluate one model, or compare several stages' models (base, SFT, RL, distilled, quantized, pruned) on the
    same data: perplexity, generation metrics, reward, classification, lm-evaluation-harness tasks, curves."""

    models: list[str] | None = field(
        default=None,
        metadata={
            "help": "Model folders (or Hub ids) to compare on the same data, one row each; the first is the "
            "baseline of the win rate. PEFT adapter folders load on their base model."
        },
    )
    model_name_or_path: str | None = field(default=None, metadata={"help": "One model to evaluate (or use models)."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Use this tokenizer for every model instead of each model's own."}
    )
    output_dir: str = field(
        default="outputs/evaluate", metadata={"help": "Where eval_results.json, eval_report.md and plots go."}
    )
    # data
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Evaluation data: plain text (perplexity), prompts with answers in any SFT format (perplexity "
            "of the whole rows, generation metrics against the answers), or labelled data for a classifier."
        },
    )
    data_format: str = field(
        default="auto",
        metadata={"help": "Format of `dataset_path`; `auto` detects it from the columns.", "choices": DATA_FORMATS},
    )
    text_field: str = field(
        default="text", metadata={"help": "Column holding plain text (or a classifier's input text / words)."}
    )
    label_field: str | None = field(
        default=None, metadata={"help": "Classification: the label column (a label, or a list of token labels)."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path`."})
    max_eval_samples: int | None = field(
        default=200, metadata={"help": "Use at most this many rows (the first) of each dataset; null for all."}
    )
    perplexity_dataset_path: str | None = field(
        default=None, metadata={"help": "Score perplexity on this (text) dataset instead of dataset_path."}
    )
    perplexity_dataset_split: str = field(default="train", metadata={"help": "Split of perplexity_dataset_path."})
    # what to measure
    metrics: list[str] | None = field(
        default=None,
        metadata={
            "help": "What to compute (default: all that the data and models allow): perplexity; generation (= bleu, "
            "chrf, rouge, exact_match) or any of those; reward (needs reward_model); classification.",
            "choices": EVAL_METRICS,
        },
    )
    context_length: int | None = field(
        default=None,
        metadata={"help": "Perplexity window in tokens (default: the model's maximum positions, at most 2048)."},
    )
    stride: int | None = field(
        default=None, metadata={"help": "Tokens the perplexity window moves by (default: half the window)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Windows, prompts or texts per forward pass."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest generated answer, in tokens."})
    generation_config: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "GenerationConfig fields on top of the model's own (YAML mapping or JSON), e.g. {do_sample: "
            "true, temperature: 0.7}. Greedy by default."
        },
    )
    reward_model: str | None = field(
        default=None,
        metadata={"help": "A reward model folder: mean reward of each model's answers and win rate vs the first."},
    )
    num_samples: int = field(default=5, metadata={"help": "Prompts with generations shown in the report."})
    plot_training_curves: bool = field(
        default=True, metadata={"help": "Plot loss, learning rate, reward and KL of models that have a trainer state."}
    )
    # lm-evaluation-harness
    lm_eval_tasks: list[str] | None = field(
        default=None,
        metadata={"help": "lm-evaluation-harness tasks to run on every model (needs `pip install lm-eval`)."},
    )
    lm_eval_include_path: str | None = field(default=None, metadata={"help": "A folder of your own task YAML files."})
    lm_eval_limit: float | None = field(
        default=None, metadata={"help": "Examples per lm-eval task: a count, or a share below 1."}
    )
    lm_eval_num_fewshot: int | None = field(default=None, metadata={"help": "Few-shot examples per lm-eval prompt."})
    # runtime
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... (default: cuda if available)."})
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weights dtype (default: float32 on CPU, the saved dtype on GPU).",
            "choices": ("auto", "float32", "bfloat16", "float16"),
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})
    seed: int = field(default=42, metadata={"help": "Seed for sampled generation."})


RANGE_CHECKS["context_length"] = (lambda v: v is None or v >= 2, "must be >= 2")
RANGE_CHECKS["stride"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["max_new_tokens"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["num_samples"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["lm_eval_limit"] = (lambda v: v is None or v > 0, "must be > 0 (a count, or a share below 1)")
RANGE_CHECKS["lm_eval_num_fewshot"] = (lambda v: v is None or v >= 0, "must be >= 0")
