"""Mixing several datasets by weight, and holding out an evaluation split. Deterministic for a given seed."""

from __future__ import annotations

import random
from collections.abc import Sequence

from datasets import Dataset, concatenate_datasets


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


def hold_out(dataset: Dataset, eval_size: float, seed: int = 42) -> tuple[Dataset, Dataset | None]:
    """Split off an evaluation set: a share when `eval_size` < 1, a row count otherwise; none when 0."""
    if not eval_size:
        return dataset, None
    test_size = int(eval_size) if eval_size >= 1 else eval_size
    split = dataset.train_test_split(test_size=test_size, seed=seed)
    return split["train"], split["test"]
