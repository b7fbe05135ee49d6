"""The shuffles the Ray engine's dedup is made of: a group-by over coarse partitions, a join built on it, and sums.

A group-by here is by a coarse partition of the key (`_part`, ~200k rows each), one `map_groups` call per partition
doing its groups in numpy: Ray's per-group calls would cost a Python call per bucket. A join is a union of the two
sides tagged by side, grouped the same way (`attach`): Ray's own join needs polars and aggregator actors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from llm_recipes.corpus.engines.ray_io import PART, part_of

KEY, SIDE = "_key", "_side"


def group_apply(ds: Any, fn: Any, partitions: int) -> Any:
    """`fn` over each partition (`_part`) of `ds` as one Arrow table: every row of a key meets in one call. Needs
    the sort shuffle `connect` sets: it fills a column one side of a union lacks with nulls (`attach`)."""
    grouped = ds.groupby(PART, num_partitions=partitions)
    return grouped.map_groups(_call, fn_args=(fn,), batch_format="pyarrow")


def _call(table: pa.Table, fn: Any) -> pa.Table:
    # map_groups names its task after the function: a plain function, with the callable object as its argument
    return fn(table)


def column_sum(ds: Any, column: str) -> int:
    sums = ds.map_batches(_ColumnSum(column), batch_size=None, batch_format="pyarrow").take_all()
    return int(sum(row["sum"] for row in sums))


class _ColumnSum:
    def __init__(self, column: str):
        self.column = column

    def __call__(self, table: pa.Table) -> pa.Table:
        return pa.table({"sum": [int(table[self.column].to_numpy().astype(np.int64).sum())]})


class KeyBy:
    """Batch function: `_part` from one int64 column (the group-by key of the next `group_apply`)."""

    def __init__(self, column: str, partitions: int):
        self.column, self.partitions = column, partitions

    def __call__(self, table: pa.Table) -> pa.Table:
        parts = pa.array(part_of(table[self.column].to_numpy(), self.partitions))
        if PART in table.column_names:
            return table.set_column(table.schema.get_field_index(PART), PART, parts)
        return table.append_column(PART, parts)


def run_starts(*keys: np.ndarray) -> np.ndarray:
    """True where a run of equal (sorted) keys starts."""
    start = np.ones(keys[0].size, dtype=bool)
    if keys[0].size:
        start[1:] = np.logical_or.reduce([key[1:] != key[:-1] for key in keys])
    return start


class _Smallest:
    def __init__(self, column: str, count: int, columns: list[str]):
        self.column, self.count, self.columns = column, count, columns

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.select([self.column, *self.columns]).sort_by(self.column).slice(0, self.count)


def smallest(ds: Any, column: str, count: int, columns: list[str]) -> list[dict]:
    """The `count` rows with the smallest `column` (with `columns`), from each block's own smallest."""
    rows = ds.map_batches(_Smallest(column, count, columns), batch_size=None, batch_format="pyarrow").take_all()
    return sorted(rows, key=lambda row: row[column])[:count]


class _Tag:
    def __init__(self, key: str, side: int, partitions: int, columns: dict[str, str] | None = None):
        self.key, self.side, self.partitions, self.columns = key, side, partitions, columns or {}

    def __call__(self, table: pa.Table) -> pa.Table:
        keys = table[self.key].to_numpy()
        if self.side:
            table = table.select(list(self.columns)).rename_columns(list(self.columns.values()))
        table = table.append_column(KEY, pa.array(keys, pa.int64()))
        table = table.append_column(SIDE, pa.array(np.full(keys.size, self.side, dtype=np.int8)))
        return table.append_column(PART, pa.array(part_of(keys, self.partitions)))


class _Attach:
    def __init__(self, columns: list[str], own_key_when_missing: bool):
        self.columns, self.own_key_when_missing = columns, own_key_when_missing

    def __call__(self, table: pa.Table) -> pa.Table:
        sides = table[SIDE].to_numpy()
        left, right = table.filter(pa.array(sides == 0)), table.filter(pa.array(sides == 1))
        right_keys = right[KEY].to_numpy()
        order = np.argsort(right_keys, kind="stable")
        right_keys = right_keys[order]
        left_keys = left[KEY].to_numpy()
        at = np.minimum(np.searchsorted(right_keys, left_keys), max(0, right_keys.size - 1))
        found = right_keys[at] == left_keys if right_keys.size else np.zeros(left_keys.size, dtype=bool)
        out = left.drop_columns([c for c in [KEY, SIDE, PART, *self.columns] if c in left.column_names])
        if self.own_key_when_missing:  # int64 columns: a key with no right row maps to itself
            for column in self.columns:
                values = right[column].to_numpy()[order[at]] if right_keys.size else left_keys
                out = out.append_column(column, pa.array(np.where(found, values, left_keys), pa.int64()))
            return out
        out = out.filter(pa.array(found))
        taken = pa.array(order[at[found]])
        for column in self.columns:
            out = out.append_column(column, right[column].take(taken))
        return out


def attach(
    left: Any,
    right: Any,
    left_key: str,
    right_key: str,
    columns: dict[str, str],
    partitions: int,
    *,
    own_key_when_missing: bool = False,
) -> Any:
    """Each left row with `right`'s `columns` (renamed as mapped) from the right row whose `right_key` equals its
    `left_key` (right keys are unique). A left row without one is left out, or with `own_key_when_missing` gets its
    own key in each (int64) column."""
    tagged_left = left.map_batches(_Tag(left_key, 0, partitions), batch_format="pyarrow")
    tagged_right = right.select_columns([right_key, *columns]).map_batches(
        _Tag(right_key, 1, partitions, columns), batch_format="pyarrow"
    )
    joined = tagged_left.union(tagged_right)
    return group_apply(joined, _Attach(list(columns.values()), own_key_when_missing), partitions)
