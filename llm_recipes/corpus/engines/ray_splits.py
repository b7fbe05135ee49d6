"""Splits on Ray Data: seeded splits of the datasets engine's sizes, duplicates removed across them as
`dedup_across_splits` does, and Hub-layout Parquet shards written by the cluster."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from llm_recipes.corpus.dedup.clusters import NearDedupStats
from llm_recipes.corpus.dedup.columns import preview_text
from llm_recipes.corpus.dedup.hashing import mix64
from llm_recipes.corpus.dedup.minhash import MinHashConfig
from llm_recipes.corpus.engines.ray_components import connected_components, top_clusters
from llm_recipes.corpus.engines.ray_dedup import confirmed_pairs, later_copies
from llm_recipes.corpus.engines.ray_io import (
    ORDER,
    RANK,
    TEXT,
    KeepRows,
    MarkOrders,
    order_set,
    partitions_for,
    positions,
    texts_of,
)
from llm_recipes.corpus.engines.ray_ops import KeyBy, attach, group_apply, run_starts, smallest
from llm_recipes.corpus.splits import _count
from llm_recipes.errors import UserError

PRIORITY = ("train", "validation", "test")  # `dedup_across_splits`' default: later splits are protected


class _SplitKey:
    def __init__(self, seed: int):
        self.salt = mix64(np.array([seed], dtype=np.uint64))[0]

    def __call__(self, table: pa.Table) -> pa.Table:
        keys = mix64(table[ORDER].to_numpy().astype(np.uint64) ^ self.salt)  # a bijection: no two keys tie
        return table.append_column("_split_key", pa.array(keys, type=pa.uint64()))


def split_on_ray(
    ds: Any, total: int, validation_size: float, test_size: float, seed: int
) -> dict[str, tuple[Any, int]]:
    """Seeded splits of exactly the datasets engine's sizes: documents ranked by a seeded hash of `_order` (a
    distributed sort), the first `test` of them test, the next `validation` validation. The same sizes; which
    documents go where is a different draw from `train_test_split`'s permutation, which would need every row index
    in one process."""
    n_test, n_validation = _count(test_size, total), _count(validation_size, total)
    if n_test + n_validation >= total:
        raise UserError(
            f"validation_size + test_size ask for {n_validation + n_test:,} of {total:,} documents; "
            "leave some for train"
        )
    if not n_test and not n_validation:
        return {"train": (ds, total)}
    ranked = ds.map_batches(_SplitKey(seed), batch_format="pyarrow").sort("_split_key").materialize()
    test, validation, train = ranked.split_at_indices([n_test, n_test + n_validation])
    splits = {"train": (train, total - n_test - n_validation), "validation": (validation, n_validation)}
    splits["test"] = (test, n_test)
    return {name: (split.drop_columns(["_split_key"]), size) for name, (split, size) in splits.items() if size}


ROW_GROUP_ROWS = 10_000


def write_splits(splits: dict[str, Any], folder: Path, rows_per_shard: int) -> None:
    """Hub-layout shards, `data/<split>-NNNNN-of-NNNNN.parquet`, written by the cluster, without `_order`."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        staging = folder / f".{name}"
        # row groups of at most ROW_GROUP_ROWS: pyarrow buffers a whole row group before writing it, and the
        # default (the file's rows) made a write task's memory grow with the shard
        split.drop_columns([ORDER]).write_parquet(
            str(staging), max_rows_per_file=rows_per_shard, row_group_size=min(ROW_GROUP_ROWS, rows_per_shard)
        )
        files = sorted(staging.glob("*.parquet"))
        for index, path in enumerate(files):
            os.replace(path, data / f"{name}-{index:05d}-of-{len(files):05d}.parquet")
        shutil.rmtree(staging)


class _WithRank:
    def __init__(self, rank: int):
        self.rank = rank

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.append_column(RANK, pa.array(np.full(table.num_rows, self.rank, dtype=np.int64)))


class _RankIs:
    def __init__(self, rank: int):
        self.rank = rank

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.filter(pa.array(table[RANK].to_numpy() == self.rank))


class _Edges:
    """Batch function: rows of two order columns as pairs (a, b)."""

    def __init__(self, first: str, second: str):
        self.first, self.second = first, second

    def __call__(self, table: pa.Table) -> pa.Table:
        return pa.table({"a": table[self.first], "b": table[self.second]})


class _OutRanked:
    """Group function by root: the members of a component whose split ranks below the component's top split."""

    def __call__(self, table: pa.Table) -> pa.Table:
        root, child = table["root"].to_numpy(), table["child"].to_numpy()
        root_rank, child_rank = table["root_rank"].to_numpy(), table["child_rank"].to_numpy()
        sort = np.argsort(root, kind="stable")
        root, child, root_rank, child_rank = root[sort], child[sort], root_rank[sort], child_rank[sort]
        start = np.flatnonzero(run_starts(root))
        top = np.maximum(np.maximum.reduceat(child_rank, start), root_rank[start]) if root.size else root_rank
        group = np.cumsum(run_starts(root)) - 1
        members = np.concatenate([root[start], child])
        ranks = np.concatenate([root_rank[start], child_rank])
        tops = np.concatenate([top, top[group]])
        out = ranks < tops
        return pa.table({ORDER: members[out], RANK: ranks[out], "top": tops[out]})


def dedup_splits_on_ray(
    splits: dict[str, tuple[Any, int]], text_field: str = TEXT, config: MinHashConfig | None = None
) -> tuple[dict[str, tuple[Any, int]], dict[str, Any]]:
    """`dedup_across_splits` on the cluster: a document is dropped from a split when it is an exact or near duplicate
    (transitively) of a document in a later split of train, validation, test. Same report."""
    config = config or MinHashConfig()
    names = [name for name in PRIORITY if name in splits]
    ranked = [splits[name][0].map_batches(_WithRank(rank), batch_format="pyarrow") for rank, name in enumerate(names)]
    union = ranked[0].union(*ranked[1:]).materialize()
    documents = sum(size for _, size in splits.values())
    bands, rows = config.band_layout()
    near_stats = NearDedupStats(documents=documents, bands=bands, rows=rows, candidate_pairs=0)
    near, _ = confirmed_pairs(union, config, text_field, documents, near_stats, ranked=True)
    near_star = connected_components(near, near.count()) if near is not None else None
    clusters = top_clusters(near_star, near_star.count(), 1, 1)[0] if near_star is not None else 0
    copies = later_copies(union, text_field, partitions_for(documents))
    edges = [copies.map_batches(_Edges("kept", "dropped"), batch_format="pyarrow")]
    if near_star is not None:
        edges.append(near_star.map_batches(_Edges("root", "child"), batch_format="pyarrow"))
    edges = (edges[0].union(*edges[1:]) if len(edges) > 1 else edges[0]).materialize()  # a union needs two
    star = connected_components(edges, edges.count()) if edges.count() else None

    report: dict[str, Any] = {"policy": f"drop from a split what duplicates a later split of {names}", "splits": {}}
    report["examples"] = []
    dropped = None
    if star is not None:
        partitions = partitions_for(star.count())
        ranks = union.select_columns([ORDER, RANK])
        with_child = attach(star, ranks, "child", ORDER, {RANK: "child_rank"}, partitions)
        with_both = attach(with_child, ranks, "root", ORDER, {RANK: "root_rank"}, partitions)
        keyed = with_both.map_batches(KeyBy("root", partitions), batch_format="pyarrow")
        dropped = group_apply(keyed, _OutRanked(), partitions).materialize()
    result = {}
    for rank, name in enumerate(names):
        split, size = splits[name]
        mine = None
        if dropped is not None:
            mine = dropped.map_batches(_RankIs(rank), batch_format="pyarrow").materialize()
        count = mine.count() if mine is not None else 0
        report["splits"][name] = {"documents": size, "dropped": count, "kept": size - count}
        if count:
            first = smallest(mine, ORDER, 2, ["top"])
            rows_of = positions(split, [row[ORDER] for row in first])
            texts = texts_of(split, [row[ORDER] for row in first], text_field)
            report["examples"] += [
                {
                    "split": name,
                    "row": rows_of[row[ORDER]],
                    "duplicates": names[row["top"]],
                    "text": preview_text(texts[row[ORDER]]),
                }
                for row in first
            ]
            split = split.map_batches(MarkOrders(order_set(mine, ORDER), "cross_split"), batch_format="pyarrow")
            split = split.map_batches(KeepRows(), batch_format="pyarrow")
        result[name] = (split, size - count)
    report["near_duplicate_clusters"] = clusters
    return result, report
