"""Mixing several datasets by weight, and holding out an evaluation split. Deterministic for a given seed."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from datasets import Dataset, concatenate_datasets

from llm_recipes.configs.paths import check_eval_split_size
from llm_recipes.errors import UserError


def mix_datasets(parts: Sequence[tuple[Dataset, float]], seed: int = 42) -> Dataset:
    """Concatenate datasets, each scaled by its weight, and shuffle.

    A weight multiplies a dataset's row count: 2.0 uses every row twice, 0.5 a random half. Scaling counts
    (rather than normalising weights to shares) keeps every weight meaningful on its own.
    """
    rng = random.Random(seed)
    scaled = []
    for dataset, weight in parts:
        whole, fraction = divmod(weight, 1.0)
        indices = list(range(len(dataset))) * int(whole)
        indices += rng.sample(range(len(dataset)), round(fraction * len(dataset)))
        scaled.append(dataset.select(indices))
    if len(scaled) == 1 and parts[0][1] == 1.0:
        return scaled[0].shuffle(seed=seed)
    return concatenate_datasets(scaled).shuffle(seed=seed)


def hold_out(dataset: Dataset, eval_size: float, seed: int = 42, unit: str = "rows") -> tuple[Dataset, Dataset | None]:
    """Split off an evaluation set: a share when `eval_size` < 1, a row count otherwise; none when 0.

    A count that is not whole (1.5), or a split that leaves nothing to train on, is a UserError naming the
    `eval_split_size` (`unit` says what the rows are: pairs, documents) rather than one row or sklearn's error.
    """
    if not eval_size:
        return dataset, None
    rows = len(dataset)
    check_eval_split_size(eval_size, unit)
    # as datasets' train_test_split counts them: a share is rounded up, so a tiny dataset gives at least one
    eval_rows = int(eval_size) if eval_size >= 1 else math.ceil(eval_size * rows)
    if eval_rows >= rows:
        raise UserError(
            f"eval_split_size: {eval_size:g} holds out {eval_rows} of {rows} {unit}, leaving none to train on; "
            "lower it or add data"
        )
    test_size = int(eval_size) if eval_size >= 1 else eval_size
    split = dataset.train_test_split(test_size=test_size, seed=seed)
    return split["train"], split["test"]


def check_batches(train_rows: int, eval_rows: int | None, args: Any, unit: str = "rows") -> None:
    """With `dataloader_drop_last`, data smaller than one global batch gives no batch at all, and transformers
    then fails asking for max_steps; say which data is too small for which batch instead."""
    if not getattr(args, "dataloader_drop_last", False):
        return
    processes = max(getattr(args, "world_size", 1), 1)
    for which, rows, field in (("training", train_rows, "train"), ("eval", eval_rows, "eval")):
        per_device = getattr(args, f"per_device_{field}_batch_size")
        if rows is not None and rows < per_device * processes:
            raise UserError(
                f"the {which} data has {rows} {unit}, fewer than one batch ({per_device} per device x {processes} "
                f"processes) and dataloader_drop_last is true: lower per_device_{field}_batch_size or add data"
            )
