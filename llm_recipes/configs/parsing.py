"""YAML + command line -> checked dataclasses, shared by every stage.

Parsing is TRL's (`TrlParser`: `--config file.yaml`, every field overridable on the command line). What we add
is the part a user meets when they get something wrong: unknown keys are named with the closest valid key,
values are type- and range-checked (`RANGE_CHECKS`, keyed by field name, extended by each stage's module) --
all before any model is loaded. Every such problem is a `ConfigError`, printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from llm_recipes.errors import StageComplete, UserError, did_you_mean, report_user_error
from llm_recipes.runs.outputs import abandon_started_outputs

# What a local data file or a saved dataset may look like; anything else that does not exist is taken as a Hub id.
DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt", ".gz", ".zst")
DATA_FORMATS = ("auto", "alpaca", "sharegpt", "messages", "prompt_completion", "text")
TXT_UNITS = ("line", "file", "paragraph")


class ConfigError(UserError):
    """A user error in a config or on the command line; its message is one line saying what to fix."""


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


class _OneLineErrorParser:
    """Mixin: argparse's own errors (bad type, bad choice) become a ConfigError instead of usage + exit."""

    def error(self, message: str):
        # "argument --lr/--lr-x: invalid float value" -> "--lr: invalid float value"
        raise ConfigError(re.sub(r"^argument (--[\w]+)(/--[\w-]+)?: ", r"\1: ", message))


def _make_parser(dataclass_types: Sequence[type]):
    from trl import TrlParser  # noqa: PLC0415  configs stay light: trl imports torch and transformers

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
                f"{key}: invalid choice {item!r}{did_you_mean(str(item), names)} (choose from {', '.join(names)})"
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


def mapping_field(value: dict[str, Any] | str | None, name: str) -> dict[str, Any]:
    """A mapping-valued field (generation_config, config_overrides, versions, ...): a mapping from YAML, or a JSON
    object from the command line, where it arrives as a string; None or "" is an empty mapping."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UserError(f"{name}: expected a mapping (YAML) or a JSON object, got {value!r}")
    return parsed


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
            raise ConfigError(f"unknown key '{key}' in the config{did_you_mean(key, valid_keys)}")
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
                raise ConfigError(f"unknown option '--{key}'{did_you_mean(key, valid_keys)}")

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
        abandon_started_outputs()
        exit_with_config_error(err)
    except StageComplete as done:
        if is_first_process():
            print(done)
    sys.exit(0)


def exit_with_config_error(err: UserError):
    report_user_error(err)
    sys.exit(2)
