"""Every stage that made a model, read from the stage manifests: from the model folder back through the folders
each stage read (e.g. clean-corpus -> train-tokenizer -> pretrain -> sft -> export), and the Hub ids they started
from, for the model card."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_recipes.configs.paths import locate_recorded_path, looks_local
from llm_recipes.models.loading import preset_names
from llm_recipes.runs.manifest import read_manifest

INPUT_MODEL_KEYS = ("model", "base_model")
INPUT_DATASET_KEYS = ("datasets", "dataset", "inputs")


@dataclass
class StageRecord:
    """One stage that contributed to a model, as its manifest recorded it."""

    stage: str
    path: str
    inputs: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]
    versions: dict[str, str]
    local_inputs: set[str] = field(default_factory=set)  # inputs found on disk ("org/name" could be either)


def stage_history(model_path: str | Path) -> list[StageRecord]:
    """Every stage that produced the model in `model_path`, oldest first.

    Starts at the folder's manifest and follows each input (model, tokenizer, dataset ...) that is a local folder
    with a manifest of its own; a folder reached twice (a model and its tokenizer from the same place) counts once.
    """
    records: list[StageRecord] = []
    seen: set[Path] = set()

    def visit(path: str) -> None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            return
        key = folder.resolve()
        if key in seen:
            return
        seen.add(key)
        manifest = read_manifest(folder)
        if manifest is None:
            return
        local = set()
        for value in _input_values(manifest.get("inputs") or {}):
            located = locate_recorded_path(value, key)
            if located.exists():
                local.add(value)
                visit(str(located))
        records.append(
            StageRecord(
                stage=manifest.get("stage", "unknown"),
                path=str(path),
                inputs=manifest.get("inputs") or {},
                config=manifest.get("config") or {},
                metrics=manifest.get("metrics") or {},
                versions=manifest.get("versions") or {},
                local_inputs=local,
            )
        )

    visit(str(model_path))
    return records


def _input_values(inputs: dict[str, Any]) -> Iterable[str]:
    for value in inputs.values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str):
                yield item


def is_hub_id(value: str) -> bool:
    return bool(value) and not looks_local(value) and value not in preset_names()


def hub_models(records: Sequence[StageRecord]) -> list[str]:
    """Hub model ids the stages started from, the most recent stage's first."""
    found = []
    for record in reversed(records):
        for key in INPUT_MODEL_KEYS:
            value = record.inputs.get(key)
            if isinstance(value, str) and is_hub_id(value) and value not in record.local_inputs | set(found):
                found.append(value)
    return found


def hub_datasets(records: Sequence[StageRecord]) -> list[str]:
    """Hub dataset ids any stage read (local files cannot be linked from a card)."""
    found = []
    for record in records:
        for key in INPUT_DATASET_KEYS:
            value = record.inputs.get(key)
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, str) and is_hub_id(item) and item not in record.local_inputs | set(found):
                    found.append(item)
    return found
