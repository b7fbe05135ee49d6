"""Running a dedup batch function over a Dataset's text column (on worker processes) and reading its one output
column back as numpy; previews of documents for the report."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from llm_recipes.corpus.parallel import map_batches
from llm_recipes.errors import UserError

if TYPE_CHECKING:
    from datasets import Dataset

# `datasets` and pyarrow are imported where a Dataset is built, not at module level: the worker processes that
# run the batch functions (`llm_recipes.corpus.parallel`) import these modules, and must stay small

BATCH_SIZE = 1000
EXAMPLE_CHARS = 80


def check_text_column(ds: Dataset, text_field: str, what: str = "the dataset") -> None:
    if text_field not in ds.column_names:
        raise UserError(f"text_field: column '{text_field}' not in {what} (columns: {', '.join(ds.column_names)})")


def map_to_numpy(
    ds: Dataset, function, column: str, num_proc: int | None = None, feature=None, width: int | None = None
) -> np.ndarray:
    """Run a batch function over a dataset and return its one output column as a numpy array."""
    import pyarrow as pa  # noqa: PLC0415  corpus workers import this module: no datasets/pyarrow
    from datasets import Features  # noqa: PLC0415  corpus workers import this module: no datasets/pyarrow

    if len(ds) == 0:
        return np.empty((0, width) if width else 0, dtype=np.uint32 if width else np.uint64)
    out = map_batches(
        ds,
        function,
        batch_size=BATCH_SIZE,
        num_proc=num_proc,
        remove_columns=ds.column_names,
        features=Features({column: feature}) if feature is not None else None,
        desc=column,
    )
    # through arrow, not the numpy formatter: that one casts uint64 to int64
    values = out.with_format("arrow")[column]
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if width:
        return values.flatten().to_numpy().reshape(len(out), width)
    return values.to_numpy()


class LazyColumn:
    """Row access to one text column without loading the whole column (verification reads few rows)."""

    def __init__(self, ds: Dataset, column: str):
        self.ds, self.column = ds, column

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, row: int) -> str:
        return self.ds[int(row)][self.column]


def preview_text(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "..."
