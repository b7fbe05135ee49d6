"""Reading datasets from wherever users keep them: data files, `save_to_disk` folders, or the Hub.

Everything comes back as a `datasets.Dataset`, so the rest of a recipe never cares where the data came from.
"""

from __future__ import annotations

import glob
import os
import re

import datasets
from datasets import Dataset, DatasetDict

from llm_recipes.configs import looks_local
from llm_recipes.errors import UserError

# file suffix -> the `datasets` builder that reads it
BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".txt": "text",
}
COMPRESSION_SUFFIXES = (".gz", ".zst", ".bz2", ".xz")


def builder_for(path: str) -> str:
    name = path.lower()
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    for suffix, builder in BUILDERS.items():
        if name.endswith(suffix):
            return builder
    raise UserError(f"cannot tell the format of '{path}' from its name; use one of {', '.join(BUILDERS)}")


def is_saved_dataset(path: str) -> bool:
    """A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return os.path.isfile(os.path.join(path, "dataset_info.json")) or os.path.isfile(
        os.path.join(path, "dataset_dict.json")
    )


def load_dataset_source(path: str, split: str = "train", name: str | None = None) -> Dataset:
    """Load one dataset: a file or glob, a `save_to_disk` folder, a folder of data files, or a Hub id."""
    try:
        if looks_local(path):
            return _load_local(os.path.expanduser(path), split)
        return datasets.load_dataset(path, name=name, split=split)
    except UserError:
        raise
    except (datasets.exceptions.DatasetGenerationError, ValueError, OSError) as err:
        cause = err.__cause__ or err
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(f"could not read dataset '{path}': {first_line}") from None


def load_saved_split(path: str, split: str) -> Dataset:
    """A `save_to_disk` folder: the dataset itself, or the named split of a saved DatasetDict."""
    loaded = datasets.load_from_disk(path)
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise UserError(f"'{path}' has splits {list(loaded)}, not '{split}'")
        return loaded[split]
    return loaded


def _load_local(path: str, split: str) -> Dataset:
    if os.path.isdir(path):
        if is_saved_dataset(path):
            return load_saved_split(path, split)
        files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True) if os.path.isfile(f))
        data_files = [f for f in files if _has_known_suffix(f)]
        if not data_files:
            raise UserError(f"'{path}' holds no data files ({', '.join(BUILDERS)}) and no saved dataset")
        data_files = _split_shards(path, data_files, split) or data_files
    else:
        data_files = sorted(glob.glob(path)) if "*" in path else [path]
        if not data_files:
            raise UserError(f"'{path}' matches no file")
        if not os.path.isfile(data_files[0]):
            raise UserError(f"data file not found: {path}")
    empty = [f for f in data_files if os.path.getsize(f) == 0]
    if empty:
        raise UserError(f"dataset file '{empty[0]}' is empty")
    builders = {builder_for(f) for f in data_files}
    if len(builders) > 1:
        raise UserError(f"'{path}' mixes file formats ({', '.join(sorted(builders))}); point at one kind")
    return datasets.load_dataset(builders.pop(), data_files=data_files, split="train")


# The Hub's shard names, which the corpus stage also writes: data/train-00000-of-00004.parquet
SPLIT_SHARD = re.compile(r"^(?P<split>\w+?)-\d{5}-of-\d{5}\.")


def _split_shards(folder: str, data_files: list[str], split: str) -> list[str]:
    """In a folder of split-named shards, the shards of `split` (and nothing else, not even a report file)."""
    by_split: dict[str, list[str]] = {}
    for path in data_files:
        match = SPLIT_SHARD.match(os.path.basename(path))
        if match:
            by_split.setdefault(match["split"], []).append(path)
    if by_split and split not in by_split:
        raise UserError(f"'{folder}' has splits {sorted(by_split)}, not '{split}'")
    return by_split.get(split, [])


def _has_known_suffix(path: str) -> bool:
    try:
        builder_for(path)
    except UserError:
        return False
    return True
