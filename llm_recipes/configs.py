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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
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


def given_values(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Fields the user set in the YAML or on the command line (raw values), so a stage's derived defaults can
    follow them (e.g. eval_strategy following save_strategy)."""
    args = list(sys.argv[1:] if argv is None else argv)
    values: dict[str, Any] = {}
    if "--config" in args and args.index("--config") + 1 < len(args):
        values.update(load_yaml_config(args[args.index("--config") + 1]))
    for index, token in enumerate(args):
        if token.startswith("--") and token != "--config":
            key, _, value = token[2:].partition("=")
            following = args[index + 1] if index + 1 < len(args) else ""
            values[key.replace("-", "_")] = value or (following if not following.startswith("--") else True)
    return values


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


def run_recipe(main: Callable[..., Any], parse_args: Callable[[], tuple], *, first_process_only: bool = False):
    """A recipe's `__main__`: parse, run, and turn a user error into one line on stderr with exit code 2.

    `first_process_only` is for data stages, which do their work on rank 0 (see `is_first_process`)."""
    if first_process_only and not is_first_process():
        sys.exit(0)
    try:
        main(*parse_args())
    except UserError as err:
        exit_with_config_error(err)
    sys.exit(0)


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


# Folders a pipeline run will create before the stage that reads them runs: checking a stage's config ahead of
# time (a dry run, or the pipeline's check of every stage before the first starts) accepts them unseen.
_PLANNED_OUTPUTS: ContextVar[frozenset[str]] = ContextVar("planned_outputs", default=frozenset())


def _normalized(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


@contextmanager
def planned_outputs(paths: Iterable[str]) -> Iterator[None]:
    """Within this block, the path checks accept these folders as if they existed."""
    token = _PLANNED_OUTPUTS.set(frozenset(_normalized(path) for path in paths))
    try:
        yield
    finally:
        _PLANNED_OUTPUTS.reset(token)


def is_planned(path: str | None) -> bool:
    """A folder an earlier pipeline stage will write (so it cannot be looked into yet)."""
    return bool(path) and _normalized(path) in _PLANNED_OUTPUTS.get()


def check_dataset_path(path: str, what: str = "dataset") -> None:
    if not looks_local(path) or is_planned(path):
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
    if not looks_local(path) or is_planned(path):
        return
    expanded = os.path.expanduser(path)
    if not os.path.isdir(expanded):
        raise ConfigError(f"{what}: model folder not found: {path}")
    if not os.path.isfile(os.path.join(expanded, "config.json")) and not os.path.isfile(
        os.path.join(expanded, "adapter_config.json")
    ):
        raise ConfigError(f"{what}: {path} has no config.json; is it a saved model folder?")


def check_quantized_training(model_args: Any) -> None:
    if model_args.load_in_4bit and not model_args.use_peft:
        raise ConfigError("load_in_4bit (QLoRA) needs use_peft: true -- a 4-bit base model cannot be fully fine-tuned")


def check_eval_data(script_args: Any, training_args: Any) -> None:
    """An eval schedule needs eval data: a held-out share or an eval dataset."""
    if training_args.eval_strategy != "no" and not (script_args.eval_split_size or script_args.eval_dataset_path):
        strategy = getattr(training_args.eval_strategy, "value", training_args.eval_strategy)
        raise ConfigError(
            f"eval_strategy is '{strategy}' but there is no eval data: set eval_split_size or eval_dataset_path"
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


# --------------------------------------------------------------------------------------------------------------
# Reward modelling, DPO and TRL's RL trainers (GRPO, RLOO)

PREFERENCE_FORMATS = ("auto", "prompt_chosen_rejected", "implicit_prompt", "sharegpt", "hh_rlhf")


@dataclass
class PreferenceDataArguments:
    """Pairwise preference data (see llm_recipes/data/preferences.py): one file or Hub id, an eval split."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Preference data: a data file (json, jsonl, csv, parquet), a `save_to_disk` folder or a Hub "
            "dataset id with prompt/chosen/rejected, chosen/rejected, ShareGPT or HH-RLHF rows."
        },
    )
    data_format: str = field(
        default="auto",
        metadata={"help": "Format of `dataset_path`; `auto` detects it.", "choices": PREFERENCE_FORMATS},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path` to train on."})
    eval_dataset_path: str | None = field(default=None, metadata={"help": "A separate evaluation dataset."})
    eval_split_size: float = field(
        default=0.1,
        metadata={"help": "Pairs held out for evaluation: a share (0 <= x < 1) or a count (>= 1); 0 for none."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training pairs."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many eval pairs."})


@dataclass
class RewardScriptArguments(PreferenceDataArguments):
    """What the reward recipe needs beyond TRL's `RewardConfig` (which has `center_rewards_coefficient`) and
    `ModelConfig` (full or LoRA training; with LoRA the score head is trained and saved in full)."""

    use_margin: bool = field(
        default=True,
        metadata={"help": "Use the data's `margin` column, when it has one, in the loss (Llama 2's margin loss)."},
    )


@dataclass
class DPOScriptArguments(PreferenceDataArguments):
    """What the DPO recipe needs beyond TRL's `DPOConfig` and `ModelConfig`; the reference model is the starting
    policy (a frozen copy, or the base under a LoRA adapter)."""


@dataclass
class RLScriptArguments:
    """What the GRPO and RLOO recipes need beyond TRL's configs: prompts and exactly one reward."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Prompts: a `prompt` column (text or messages), or any SFT/preference format, whose prompt side "
            "is used (the conversation up to its last assistant turn)."
        },
    )
    data_format: str = field(
        default="auto",
        metadata={"help": "Format of `dataset_path`; `auto` detects it from the columns.", "choices": DATA_FORMATS},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path`."})
    eval_dataset_path: str | None = field(default=None, metadata={"help": "Separate evaluation prompts."})
    eval_split_size: float = field(
        default=0.0,
        metadata={"help": "Prompts held out for evaluation: a share (0 <= x < 1) or a count (>= 1); 0 for none."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training prompts."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many eval prompts."})
    reward_model_path: str | None = field(
        default=None, metadata={"help": "The reward: a model folder written by the reward stage (or a LoRA adapter)."}
    )
    reward_function: str | None = field(
        default=None,
        metadata={
            "help": "The reward: a Python function `package.module:function` (or `file.py:function`) taking "
            "(prompts, completions, **kwargs) and returning floats, e.g. llm_recipes.data.synthetic:synthetic_reward."
        },
    )
    reward_batch_size: int = field(default=16, metadata={"help": "Completions per reward-model forward pass."})
    eval_before_training: bool = field(
        default=True, metadata={"help": "With eval prompts: also measure the starting policy's mean eval reward."}
    )


RANGE_CHECKS["center_rewards_coefficient"] = (lambda v: v is None or v >= 0, "must be >= 0 (0.01 is usual)")
RANGE_CHECKS["reward_batch_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["beta"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["max_completion_length"] = (lambda v: v is None or v >= 1, "must be >= 1")


DISTILL_METHODS = ("logits", "gkd")
DISTILL_DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


@dataclass
class DistillArguments:
    """Teacher -> smaller student: what the distill recipe needs beyond `TrainingArguments`."""

    # teacher and student
    teacher_name_or_path: str | None = field(
        default=None, metadata={"help": "The model to distill (folder or Hub id); its tokenizer is the student's."}
    )
    teacher_dtype: str = field(
        default="auto",
        metadata={
            "help": "Teacher weights dtype (auto: as saved). The student trains in float32; use bf16: true for "
            "mixed precision.",
            "choices": ("auto", "float32", "bfloat16", "float16"),
        },
    )
    student_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Student = the teacher with only these decoder layers (embeddings, final norm and LM head "
            "copied). The default when no student is named: every other layer, [0, 2, 4, ...]."
        },
    )
    student_preset: str | None = field(
        default=None, metadata={"help": "Student = a random model of this size (llama-tiny ... llama-1b)."}
    )
    student_config_overrides: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Config fields to change on the preset student, e.g. {num_hidden_layers: 3}."}
    )
    student_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Student = this existing model; its tokenizer must be the teacher's (checked)."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})
    # the loss
    method: str = field(
        default="logits",
        metadata={
            "help": "logits: our Trainer, KL on the teacher's logits blended with the label loss, on text or chat "
            "data. gkd: TRL's experimental on-policy GKDTrainer (chat data; the student also learns from its own "
            "samples).",
            "choices": DISTILL_METHODS,
        },
    )
    divergence: str = field(
        default="forward_kl",
        metadata={
            "help": "forward_kl: KL(teacher || student), the classic; reverse_kl: KL(student || teacher); jsd: "
            "generalized Jensen-Shannon with jsd_beta.",
            "choices": DISTILL_DIVERGENCES,
        },
    )
    temperature: float = field(
        default=2.0,
        metadata={"help": "Softens both distributions (the KD term is scaled by T^2); gkd: the sampling temperature."},
    )
    alpha: float = field(
        default=0.5, metadata={"help": "Weight of the distillation term; 1 - alpha weighs the label loss (logits)."}
    )
    jsd_beta: float = field(default=0.5, metadata={"help": "The teacher's weight in the jsd mixture, in (0, 1)."})
    gkd_lmbda: float = field(
        default=0.5, metadata={"help": "gkd: share of steps trained on the student's own generations."}
    )
    gkd_max_new_tokens: int = field(default=64, metadata={"help": "gkd: tokens the student generates per prompt."})
    gkd_seq_kd: bool = field(
        default=False, metadata={"help": "gkd: on the other steps, train on the teacher's generations."}
    )
    # data
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Text (packed into max_length blocks), chats or prompt/completion pairs: a data file, a "
            "`save_to_disk` folder or a Hub dataset id."
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
        metadata={"help": "Rows held out for evaluation: a share (0 <= x < 1) or a count (>= 1); 0 for none."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many eval rows."})
    max_length: int = field(
        default=512,
        metadata={"help": "Tokens per row: text is packed into blocks this long, chats are cut to it."},
    )
    assistant_only_loss: bool = field(
        default=True, metadata={"help": "Chats: distill and train on the assistant turns only."}
    )
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenizing and packing."})
    # the comparison report
    compare_with_teacher: bool = field(
        default=True,
        metadata={
            "help": "Write compression_report.json: student vs teacher parameters, size on disk, eval perplexity, "
            "CPU generation latency."
        },
    )
    report_eval_texts: int = field(default=64, metadata={"help": "Eval rows scored for the report's perplexity."})
    latency_new_tokens: int = field(default=16, metadata={"help": "Tokens generated per latency measurement."})
    latency_repeats: int = field(default=3, metadata={"help": "Timed generations per model (the median is kept)."})
    report_reward_model: str | None = field(
        default=None,
        metadata={
            "help": "A reward model folder (chat or prompt/completion data): the report adds the mean reward of the "
            "teacher's and the student's greedy answers to the eval prompts and the student's win rate."
        },
    )
    report_max_new_tokens: int = field(default=64, metadata={"help": "Longest answer generated for the reward."})


RANGE_CHECKS["temperature"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["alpha"] = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
RANGE_CHECKS["jsd_beta"] = (lambda v: 0 < v < 1, "must be in (0, 1)")
RANGE_CHECKS["gkd_lmbda"] = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
RANGE_CHECKS["gkd_max_new_tokens"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["report_eval_texts"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["latency_new_tokens"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["latency_repeats"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["report_max_new_tokens"] = (lambda v: v >= 1, "must be >= 1")


# --------------------------------------------------------------------------------------------------------------
# PPO (our trainer, llm_recipes/trainers/ppo.py)

PPO_KL_ESTIMATORS = ("k1", "k3")
PPO_LR_SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class PPOScriptArguments(RLScriptArguments):
    """What the PPO recipe needs beyond `PPOConfig` and `ModelConfig`: prompts, exactly one reward (a reward model
    or a Python function), and where the value model starts."""

    value_model_path: str | None = field(
        default=None,
        metadata={
            "help": "Start the value model from this sequence-classifier folder. Default: the reward model (its "
            "backbone already reads the task), else the policy with a fresh scalar head."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})


@dataclass
class PPOConfig:
    """RLHF PPO settings (llm_recipes.trainers.ppo.PPOTrainer). Batch sizes are per process: each PPO step samples
    `rollout_batch_size` prompts per process, then runs `ppo_epochs` passes over them in mini-batches of
    `mini_batch_size` (one optimizer step each, split into `gradient_accumulation_steps` forward/backward passes)."""

    output_dir: str = field(default="outputs/ppo", metadata={"help": "Where the policy and checkpoints are written."})
    seed: int = field(default=42, metadata={"help": "Seed of the prompt order, sampling and value-head init."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU even when a GPU is there."})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (a GPU that supports it)."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass to save memory."}
    )
    # optimisation
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate (policy and value model)."})
    lr_scheduler_type: str = field(
        default="linear", metadata={"help": "Learning-rate schedule over all updates.", "choices": PPO_LR_SCHEDULES}
    )
    warmup_steps: int = field(default=0, metadata={"help": "Optimizer updates of linear warm-up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the gradient norm to this (0: no clipping)."})
    # batches and length of training
    rollout_batch_size: int = field(
        default=64, metadata={"help": "Prompts sampled per PPO step, per process (episodes of one rollout)."}
    )
    mini_batch_size: int = field(
        default=16, metadata={"help": "Episodes per optimizer update, per process; divides rollout_batch_size."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Forward/backward passes per mini-batch; divides mini_batch_size."}
    )
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    num_ppo_steps: int = field(default=100, metadata={"help": "PPO steps (rollout batches) to train for."})
    total_episodes: int | None = field(
        default=None,
        metadata={"help": "Train on this many episodes (prompts sampled, all processes) instead of num_ppo_steps."},
    )
    rollout_forward_batch_size: int = field(
        default=32,
        metadata={"help": "Prompts per generate call and per no-gradient forward pass of the rollout (memory)."},
    )
    # sampling
    max_prompt_length: int = field(
        default=512, metadata={"help": "Prompts longer than this (tokens) keep their end, next to the answer."}
    )
    response_length: int = field(default=64, metadata={"help": "Most tokens a response may have."})
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature (log-probabilities are taken at it too)."}
    )
    top_k: int | None = field(default=None, metadata={"help": "Sample among the k likeliest tokens (null: all)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1: all tokens)."})
    stop_at_eos: bool = field(
        default=True,
        metadata={"help": "A response ends at its first EOS (tokens after it are not part of the episode)."},
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtracted from the score of a response that reaches response_length without an EOS."},
    )
    # KL to the reference policy
    kl_coef: float = field(default=0.05, metadata={"help": "Weight of the per-token KL penalty (its start value)."})
    kl_estimator: str = field(
        default="k1",
        metadata={
            "help": "k1: log-ratio (unbiased); k3: (ratio - 1) - log ratio (unbiased, never negative, lower variance).",
            "choices": PPO_KL_ESTIMATORS,
        },
    )
    adaptive_kl: bool = field(
        default=False, metadata={"help": "Adapt kl_coef so the KL tracks kl_target (Ziegler et al. 2019)."}
    )
    kl_target: float = field(default=6.0, metadata={"help": "adaptive_kl: the KL (nats per response) to track."})
    kl_horizon: float = field(default=10000, metadata={"help": "adaptive_kl: episodes over which kl_coef adapts."})
    kl_stop: float | None = field(
        default=100.0,
        metadata={
            "help": "Stop when the mean KL per response exceeds this (a blow-up); the last good checkpoint stays. "
            "null: never."
        },
    )
    # advantages and losses
    gamma: float = field(default=1.0, metadata={"help": "Discount factor over response tokens."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (bias-variance trade-off of the advantages)."})
    cliprange: float = field(default=0.2, metadata={"help": "PPO policy ratio clip: 1 +- cliprange."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip around the rollout-time values."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss in the total loss."})
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Scale the per-token rewards to unit variance (mean kept) before GAE."}
    )
    whiten_advantages: bool = field(
        default=True, metadata={"help": "Normalise advantages to zero mean and unit variance per rollout batch."}
    )
    # output
    merge_adapter: bool = field(
        default=True,
        metadata={"help": "With use_peft: save the policy merged into its base (false: the adapter alone)."},
    )
    # logging, evaluation, checkpoints
    logging_steps: int = field(default=1, metadata={"help": "Log every N PPO steps."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate on the held-out prompts every N steps (null: at the end only)."}
    )
    sample_every: int = field(default=10, metadata={"help": "Print sample generations every N steps (0: never)."})
    num_samples: int = field(default=3, metadata={"help": "Generations printed each time."})
    save_steps: int = field(default=50, metadata={"help": "Write a checkpoint every N PPO steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "Resume from this checkpoint (default: the last one in output_dir)."}
    )
    # Hub
    push_to_hub: bool = field(default=False, metadata={"help": "Push the policy to the Hub (private by default)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo id for the push."})
    hub_private_repo: bool = field(default=True, metadata={"help": "Create the Hub repo as private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN or the login)."})


RANGE_CHECKS["rollout_batch_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["mini_batch_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["ppo_epochs"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["num_ppo_steps"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["total_episodes"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["rollout_forward_batch_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["max_prompt_length"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["response_length"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["top_k"] = (lambda v: v is None or v >= 0, "must be >= 0 (0 or null: no top-k)")
RANGE_CHECKS["top_p"] = (lambda v: 0 < v <= 1, "must be in (0, 1]")
RANGE_CHECKS["missing_eos_penalty"] = (lambda v: v is None or v >= 0, "must be >= 0 (it is subtracted)")
RANGE_CHECKS["kl_coef"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["kl_target"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["kl_horizon"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["kl_stop"] = (lambda v: v is None or v > 0, "must be > 0 (or null: never stop)")
RANGE_CHECKS["gamma"] = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
RANGE_CHECKS["lam"] = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
RANGE_CHECKS["cliprange"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["cliprange_value"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["vf_coef"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["sample_every"] = (lambda v: v >= 0, "must be >= 0 (0: never)")
RANGE_CHECKS["save_total_limit"] = (lambda v: v is None or v >= 1, "must be >= 1")


# --------------------------------------------------------------------------------------------------------------
# Quantize and prune: compressed models compared with their source (llm_recipes/compression_report.py)


@dataclass
class CompressionEvalArguments:
    """How the quantize and prune stages compare the compressed model with its source."""

    eval_dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Data for the report: perplexity of its texts (and reward/accuracy on its prompts when asked). "
            "Any format SFT reads; without it the report has sizes and latency only."
        },
    )
    data_format: str = field(
        default="auto",
        metadata={"help": "Format of every dataset of the stage; `auto` detects it.", "choices": DATA_FORMATS},
    )
    text_field: str = field(default="text", metadata={"help": "Column holding plain text for the `text` format."})
    eval_dataset_split: str = field(default="train", metadata={"help": "Split of `eval_dataset_path` to use."})
    max_eval_samples: int | None = field(default=64, metadata={"help": "Eval rows used for the report."})
    reward_model_path: str | None = field(
        default=None,
        metadata={"help": "Also compare the models' answers to the eval prompts under this reward model."},
    )
    eval_accuracy: bool = field(
        default=False,
        metadata={"help": "Also compare exact-match accuracy of greedy answers to the eval prompts (needs answers)."},
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens generated per answer (reward, accuracy)."})
    latency_new_tokens: int = field(default=16, metadata={"help": "Tokens generated per latency measurement."})
    latency_repeats: int = field(default=3, metadata={"help": "Timed generations per model (the median is kept)."})
    calibration_dataset_path: str | None = field(
        default=None, metadata={"help": "Text the method calibrates on (Wanda, structured pruning, GPTQ)."}
    )
    calibration_samples: int = field(default=128, metadata={"help": "Calibration windows of calibration_length."})
    calibration_length: int = field(
        default=512, metadata={"help": "Tokens per calibration window (capped at the model's positions)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})


QUANTIZE_METHODS = ("bnb_int8", "bnb_4bit", "torchao_int8_weight_only", "torchao_int8_dynamic", "gptq")


@dataclass
class QuantizeArguments(CompressionEvalArguments):
    """A full-precision model (or an adapter merged into its full-precision base) saved quantized, with a report."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The full-precision model folder to quantize, or a LoRA/DoRA adapter folder."}
    )
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The full-precision base an adapter merges into (default: its own record)."}
    )
    output_dir: str = field(default="outputs/quantized", metadata={"help": "Where the quantized model is written."})
    method: str = field(
        default="bnb_int8",
        metadata={
            "help": "bnb_int8, bnb_4bit (bitsandbytes); torchao_int8_weight_only, torchao_int8_dynamic (CPU "
            "deployment); gptq (CUDA, pip install optimum gptqmodel).",
            "choices": QUANTIZE_METHODS,
        },
    )
    bnb_4bit_quant_type: str = field(
        default="nf4", metadata={"help": "bnb_4bit: NormalFloat4 or plain FP4.", "choices": ("nf4", "fp4")}
    )
    bnb_4bit_use_double_quant: bool = field(
        default=False, metadata={"help": "bnb_4bit: also quantize the quantization constants (~0.4 bit/weight)."}
    )
    bnb_4bit_compute_dtype: str = field(
        default="auto",
        metadata={
            "help": "bnb_4bit: dtype the layers compute in (auto: the model's saved dtype).",
            "choices": ("auto", "float32", "bfloat16", "float16"),
        },
    )
    gptq_bits: int = field(default=4, metadata={"help": "gptq: bits per weight.", "choices": (2, 3, 4, 8)})
    gptq_group_size: int = field(default=128, metadata={"help": "gptq: weights sharing one scale (-1: a row)."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "An adapter is merged in this dtype before quantizing (auto: the base's).",
            "choices": ("auto", "float32", "float16", "bfloat16"),
        },
    )
    max_shard_size: str = field(default="5GB", metadata={"help": "Largest safetensors shard, e.g. 500MB, 5GB."})
    compare_samples: int = field(
        default=8, metadata={"help": "Windows of eval text on which logits are compared (source, reloaded)."}
    )
    compare_length: int = field(default=64, metadata={"help": "Tokens per comparison window."})
    seed: int = field(default=42, metadata={"help": "Seed of the calibration and comparison windows."})


RANGE_CHECKS["calibration_samples"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["calibration_length"] = (lambda v: v >= 2, "must be >= 2")
RANGE_CHECKS["compare_samples"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["compare_length"] = (lambda v: v >= 2, "must be >= 2")
RANGE_CHECKS["gptq_group_size"] = (lambda v: v == -1 or v >= 1, "must be >= 1 (or -1: one group per row)")


PRUNE_METHODS = ("magnitude", "wanda", "structured")


@dataclass
class PruneArguments(CompressionEvalArguments):
    """A model pruned (unstructured, N:M or structured), optionally fine-tuned to recover, with a report. Parsed
    with `TrainingArguments`, which set output_dir, seed and the recovery fine-tune."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The full-precision model folder to prune, or a LoRA/DoRA adapter folder."}
    )
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The full-precision base an adapter merges into (default: its own record)."}
    )
    method: str = field(
        default="wanda",
        metadata={
            "help": "magnitude: smallest |W| per layer; wanda: smallest |W| x input norm per output row (needs "
            "calibration data); structured: remove attention heads and MLP channels (the model really shrinks).",
            "choices": PRUNE_METHODS,
        },
    )
    sparsity: float = field(default=0.5, metadata={"help": "magnitude/wanda: share of weights zeroed per layer."})
    sparsity_pattern: str = field(
        default="unstructured",
        metadata={"help": "magnitude/wanda: unstructured, or N:M such as 2:4 (N of every M inputs zeroed)."},
    )
    sparsity_group: str = field(
        default="auto",
        metadata={
            "help": "Unstructured: compare scores within each output row or over the whole matrix; auto: Wanda per "
            "row, magnitude per matrix (each paper's choice). Small models can do better per matrix (see "
            "benchmarks/README.md).",
            "choices": ("auto", "row", "layer"),
        },
    )
    heads_to_prune: int = field(default=0, metadata={"help": "structured: query heads removed per layer."})
    prune_kv_heads: bool = field(
        default=True,
        metadata={
            "help": "structured: remove whole KV groups (heads_to_prune a multiple of heads per KV head); false: "
            "the same number of query heads from every KV group."
        },
    )
    mlp_channels_to_prune: int = field(default=0, metadata={"help": "structured: MLP channels removed per layer."})
    recovery_dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Fine-tune the pruned model on this text to recover (the pretrain stage's trainer; pruned "
            "weights stay zero). Length and optimizer from the training fields (max_steps, learning_rate, ...)."
        },
    )
    recovery_block_size: int = field(default=256, metadata={"help": "Tokens per recovery training block."})
    max_recovery_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many recovery documents."}
    )


RANGE_CHECKS["sparsity"] = (lambda v: 0 <= v < 1, "must be in [0, 1)")
RANGE_CHECKS["heads_to_prune"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["mlp_channels_to_prune"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["recovery_block_size"] = (lambda v: v >= 8, "must be >= 8")
RANGE_CHECKS["max_recovery_samples"] = (lambda v: v is None or v >= 1, "must be >= 1")


# --------------------------------------------------------------------------------------------------------------
# Task fine-tuning: classification, token classification (NER), extractive QA (recipes/finetune_task.py)

FINETUNE_TASKS = ("classification", "token-classification", "question-answering")


@dataclass
class FinetuneTaskArguments:
    """What the task fine-tuning recipe needs beyond `TrainingArguments` and TRL's `ModelConfig` (model path, LoRA)."""

    task: str | None = field(
        default=None,
        metadata={
            "help": "classification (text or text pair -> label), token-classification (words -> tags, e.g. NER) or "
            "question-answering (extractive: question + context -> answer span).",
            "choices": FINETUNE_TASKS,
        },
    )
    # data
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "Training data: a csv, json, jsonl or parquet file, a `save_to_disk` folder or a Hub id."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Config name of a Hub dataset."})
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path` to train on."})
    eval_dataset_path: str | None = field(
        default=None, metadata={"help": "Evaluation data (may be the same Hub id as dataset_path, another split)."}
    )
    eval_dataset_split: str = field(
        default="validation", metadata={"help": "Split of `eval_dataset_path` (data files have one split: ignored)."}
    )
    eval_split_size: float = field(
        default=0.1,
        metadata={"help": "Without eval_dataset_path: rows held out for eval, a share (< 1) or a count (0: none)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many eval rows."})
    text_column: str = field(default="text", metadata={"help": "classification: the text column."})
    text_pair_column: str | None = field(
        default=None, metadata={"help": "classification: a second text column (sentence pairs, e.g. NLI)."}
    )
    label_column: str = field(default="label", metadata={"help": "classification: the label column (names or ids)."})
    tokens_column: str = field(default="tokens", metadata={"help": "token-classification: the list-of-words column."})
    tags_column: str = field(
        default="ner_tags", metadata={"help": "token-classification: the list-of-tags column (names or ids)."}
    )
    question_column: str = field(default="question", metadata={"help": "question-answering: the question column."})
    context_column: str = field(default="context", metadata={"help": "question-answering: the context column."})
    answers_column: str = field(
        default="answers",
        metadata={"help": "question-answering: SQuAD-style answers {text: [...], answer_start: [...]}."},
    )
    labels: list[str] | None = field(
        default=None,
        metadata={
            "help": "The label (tag) names in id order; integer labels in the data are ids into it. Default: the "
            "dataset's ClassLabel names, else the names found in the data (sorted; tags: O first)."
        },
    )
    label_all_tokens: bool = field(
        default=False,
        metadata={
            "help": "token-classification: label every sub-word token of a word (B-X continues as I-X), not just "
            "the first. Evaluation always scores each word once."
        },
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per example or window (default 128; question-answering 384)."}
    )
    doc_stride: int = field(
        default=128, metadata={"help": "question-answering: tokens of overlap between windows of a long context."}
    )
    max_answer_length: int = field(default=30, metadata={"help": "question-answering: longest answer, in tokens."})
    n_best_size: int = field(
        default=20, metadata={"help": "question-answering: start and end candidates per window in the span search."}
    )
    # model
    preset: str | None = field(
        default=None,
        metadata={"help": "From scratch (no model_name_or_path): a named size, e.g. bert-tiny or llama-tiny."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "The tokenizer (needed with preset; default: model_name_or_path's)."}
    )
    config_overrides: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Config fields to change, e.g. {hidden_dropout_prob: 0.2} (YAML or JSON)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})
    freeze_layers: int | None = field(
        default=None,
        metadata={
            "help": "Freeze the embeddings and the lowest N transformer blocks; the blocks above and the head "
            "train (0: only the embeddings frozen). Excludes use_peft."
        },
    )
    layerwise_lr_decay: float | None = field(
        default=None,
        metadata={
            "help": "Layer-wise learning-rate decay: the head trains at learning_rate, each block below at this "
            "factor times the one above (0.8-0.95 is usual); null: one learning rate."
        },
    )
    class_weights: list[str] | None = field(
        default=None,
        metadata={
            "help": "Loss weights per label for imbalanced data: balanced (inverse frequency), a list in label "
            "order, or (YAML) a mapping label: weight."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop when metric_for_best_model has not improved for this many evaluations."},
    )
    # hyperparameter search
    search: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Run an Optuna hyperparameter search instead of one training (pip install 'llm-recipes[search]'): "
            "{trials, metric, direction, space: {field: [choices] or {low, high, log}}}; writes best_config.yaml."
        },
    )


RANGE_CHECKS["doc_stride"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["max_answer_length"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["n_best_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["freeze_layers"] = (lambda v: v is None or v >= 0, "must be >= 0")
RANGE_CHECKS["layerwise_lr_decay"] = (lambda v: v is None or 0 < v <= 1, "must be in (0, 1]")
