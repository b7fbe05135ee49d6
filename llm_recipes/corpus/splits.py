"""Train/validation/test splits of a cleaned corpus, kept apart, and written as `save_to_disk` or Parquet shards."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from llm_recipes.corpus.dedup import dedup_across_splits
from llm_recipes.errors import UserError


def _count(size: float, total: int) -> int:
    """A share (below 1) of `total`, or a count (1 and above)."""
    return int(size) if size >= 1 else round(size * total)


def split_corpus(
    ds: Dataset,
    validation_size: float = 0.0,
    test_size: float = 0.0,
    *,
    seed: int = 42,
    cross_split_dedup: bool = True,
    text_field: str = "text",
) -> tuple[DatasetDict, dict[str, Any]]:
    """Seeded random splits. With `cross_split_dedup`, documents that duplicate (exactly or nearly) one in a
    later split are dropped from the earlier one, so no evaluation text is also trained on."""
    total = len(ds)
    n_test, n_validation = _count(test_size, total), _count(validation_size, total)
    if n_test + n_validation >= total:
        raise UserError(
            f"validation_size + test_size ask for {n_validation + n_test:,} of {total:,} documents; "
            "leave some for train"
        )
    splits = {"train": ds}
    if n_test:
        parts = splits["train"].train_test_split(test_size=n_test, seed=seed)
        splits = {"train": parts["train"], "test": parts["test"]}
    if n_validation:
        parts = splits["train"].train_test_split(test_size=n_validation, seed=seed)
        splits = {**splits, "train": parts["train"], "validation": parts["test"]}
    stats: dict[str, Any] = {}
    if cross_split_dedup and len(splits) > 1:
        splits, stats = dedup_across_splits(splits, text_field=text_field)
    return DatasetDict({name: splits[name] for name in ("train", "validation", "test") if name in splits}), stats


def save_splits(splits: DatasetDict, folder: str | Path, output_format: str, rows_per_shard: int = 100_000) -> None:
    """arrow: `save_to_disk` (reload with `datasets.load_from_disk`). parquet: the Hub's layout,
    `data/<split>-NNNNN-of-NNNNN.parquet`, which `datasets.load_dataset(folder)` maps back to the splits."""
    folder = Path(folder)
    if output_format == "arrow":
        splits.save_to_disk(str(folder))
        return
    if output_format != "parquet":
        raise UserError(f"output_format: unknown '{output_format}'; choose arrow or parquet")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        shards = max(1, math.ceil(len(split) / rows_per_shard))
        for index in range(shards):
            shard = split.shard(num_shards=shards, index=index, contiguous=True)
            shard.to_parquet(str(folder / "data" / f"{name}-{index:05d}-of-{shards:05d}.parquet"))
