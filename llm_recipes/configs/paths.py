"""Path checks shared by the stages: local files and folders must exist (Hub ids are checked when loaded), except
the folders an earlier stage of a pipeline run will write; and where a path a stage recorded is found from here.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from llm_recipes.configs.parsing import (
    DATA_FILE_SUFFIXES,
    ConfigError,
)


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


def locate_recorded_path(path: str, recorded_in: Path) -> Path:
    """A relative path a stage recorded (in its manifest, or PEFT in adapter_config.json) is relative to where the
    stage ran, usually the project root: when it is not found from here, try it from each folder above the folder
    that recorded it. Returned unchanged when not found (it may be a Hub id)."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    for ancestor in Path(recorded_in).resolve().parents:
        if (ancestor / candidate).exists():
            return ancestor / candidate
    return candidate


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
        if not glob.glob(expanded):
            raise ConfigError(f"{what} '{path}' matches no file")
        return
    if not os.path.exists(expanded):
        raise ConfigError(f"{what} file not found: {path}")


# How a saved model names its weights: safetensors only (the project never loads pickles), model.safetensors or
# shards beside their index json; an adapter folder has adapter_model.safetensors.
WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")


def check_model_path(path: str | None, what: str = "model_name_or_path", weights: bool = True) -> None:
    """A local model folder exists, has a config and (unless `weights` is false: a config_name) its weights."""
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
    names = os.listdir(expanded)
    if weights and not any(name.endswith(WEIGHT_SUFFIXES) for name in names):
        pickles = sorted(name for name in names if name.endswith((".bin", ".pt", ".pth")))
        hint = f" (found {', '.join(pickles)}: load and save_pretrained it to convert)" if pickles else ""
        raise ConfigError(f"{what}: {path} has no weights -- no .safetensors file{hint}")


def check_quantized_training(model_args: Any) -> None:
    if model_args.load_in_4bit and not model_args.use_peft:
        raise ConfigError("load_in_4bit (QLoRA) needs use_peft: true -- a 4-bit base model cannot be fully fine-tuned")


def check_eval_split_size(value: float, unit: str = "rows") -> None:
    """A share below 1, or a whole number of rows: 1.5 is neither (it used to hold out one row)."""
    if value >= 1 and value != int(value):
        raise ConfigError(
            f"eval_split_size: {value:g} is neither a share below 1 (0.1 = 10%) nor a whole number of {unit}"
        )


def check_eval_data(script_args: Any, training_args: Any) -> None:
    """An eval schedule needs eval data: a held-out share or an eval dataset."""
    check_eval_split_size(script_args.eval_split_size or 0)
    if training_args.eval_strategy != "no" and not (script_args.eval_split_size or script_args.eval_dataset_path):
        strategy = getattr(training_args.eval_strategy, "value", training_args.eval_strategy)
        raise ConfigError(
            f"eval_strategy is '{strategy}' but there is no eval data: set eval_split_size or eval_dataset_path"
        )
