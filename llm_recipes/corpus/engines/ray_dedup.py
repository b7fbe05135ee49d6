"""Exact and MinHash near-duplicate removal on Ray Data, each step a map or a group-by, none of them collecting
signatures, pairs or labels in this process.

    exact:  text --map--> hash --group by hash--> every document after its group's first --> marked dropped
    near:   text --map--> signature --flat map--> band keys --group by (band, key)--> candidate pairs (each bucket
            member with the bucket's first and with the one before it, as `candidate_pairs`) --group by pair-->
            distinct pairs --join signatures--> agreement --[verify: join the candidates' texts]--> true Jaccard
            --> confirmed pairs --> connected components (large-star / small-star rounds, each a group-by) -->
            every member but the smallest `_order` of a component marked dropped

The rules are the single-machine engine's own functions (`ExactHashBatch`, `MinHashBatch`, `band_keys`,
`plausible_agreement`, `shingle_hashes`, `jaccard`), so both engines keep the same documents. The datasets engine
skips a candidate pair whose documents are already joined; components are the same whether or not such a pair is
checked, and its report counts (`rejected_pairs`) are reproduced by replaying each component's pairs in that
engine's order (`_Replay`).

Group-bys and joins are `ray_ops`'; connected components `ray_components`'.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from llm_recipes.corpus.dedup.clusters import NearDedupStats, band_keys, plausible_agreement
from llm_recipes.corpus.dedup.columns import preview_text
from llm_recipes.corpus.dedup.exact import ExactHashBatch
from llm_recipes.corpus.dedup.hashing import jaccard, mix64, shingle_hashes
from llm_recipes.corpus.dedup.minhash import MinHashBatch, MinHashConfig
from llm_recipes.corpus.engines.ray_components import connected_components, replay_rejections, top_clusters
from llm_recipes.corpus.engines.ray_io import (
    ORDER,
    PART,
    RANK,
    TEXT_BATCH_ROWS,
    KeepOrders,
    MarkOrders,
    order_set,
    part_of,
    partitions_for,
    partitions_for_bytes,
    positions,
    texts_of,
)
from llm_recipes.corpus.engines.ray_ops import attach, group_apply, run_starts, smallest

EXAMPLE_CLUSTERS, EXAMPLE_MEMBERS = 3, 4  # as `cluster_examples`


# --------------------------------------------------------------------------------------------------------------
# Exact duplicates


class _HashRows:
    def __init__(self, text_field: str, partitions: int):
        self.hash, self.text_field, self.partitions = ExactHashBatch(text_field), text_field, partitions

    def __call__(self, table: pa.Table) -> pa.Table:
        hashes = self.hash({self.text_field: table[self.text_field].to_pylist()})["exact_hash"]
        columns = {ORDER: table[ORDER], "exact_hash": pa.array(hashes, pa.uint64())}
        return pa.table({**columns, PART: part_of(hashes, self.partitions)})


class _LaterCopies:
    """Group function: every document after the first (smallest `_order`) of its hash, with that first one."""

    def __call__(self, table: pa.Table) -> pa.Table:
        keys, orders = table["exact_hash"].to_numpy(), table[ORDER].to_numpy()
        sort = np.lexsort((orders, keys))
        keys, orders = keys[sort], orders[sort]
        start = run_starts(keys)
        first = orders[start][np.cumsum(start) - 1]
        return pa.table({"dropped": orders[~start], "kept": first[~start]})


def later_copies(ds: Any, text_field: str, partitions: int, batch_size: int = TEXT_BATCH_ROWS) -> Any:
    """(dropped, kept): every document whose normalized text hashes as an earlier one's, with the first of them."""
    hashed = ds.select_columns([ORDER, text_field]).map_batches(
        _HashRows(text_field, partitions), batch_size=batch_size, batch_format="pyarrow"
    )
    return group_apply(hashed, _LaterCopies(), partitions)


def exact_dedup_marked(
    ds: Any, text_field: str, documents: int, batch_size: int = TEXT_BATCH_ROWS
) -> tuple[Any, dict[str, Any]]:
    """`ds` with the exact duplicates marked dropped, and `ExactDedupStats` as a dict."""
    copies = later_copies(ds, text_field, partitions_for(documents), batch_size).materialize()
    duplicates = copies.count()
    marked = ds.map_batches(MarkOrders(order_set(copies, "dropped"), "exact_duplicate"), batch_format="pyarrow")
    first = sorted((row["dropped"], row["kept"]) for row in smallest(copies, "dropped", 3, ["kept"]))
    rows = positions(ds, [order for pair in first for order in pair])
    texts = texts_of(ds, [kept for _, kept in first], text_field)
    examples = [
        {"kept": rows[kept], "dropped": rows[dropped], "text": preview_text(texts[kept])} for dropped, kept in first
    ]
    details = {"documents": documents, "duplicates": duplicates, "kept": documents - duplicates}
    return marked, {**details, "examples": examples}


# --------------------------------------------------------------------------------------------------------------
# Near duplicates: signatures, candidate pairs, checks


def pack_signatures(signatures: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(signatures.ravel(), pa.uint32()), signatures.shape[1])


def unpack_signatures(column: pa.Array | pa.ChunkedArray, num_perm: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy().reshape(-1, num_perm)


class _Signatures:
    def __init__(self, config: MinHashConfig, text_field: str):
        self.minhash, self.text_field = MinHashBatch(config, text_field), text_field

    def __call__(self, table: pa.Table) -> pa.Table:
        signatures = self.minhash({self.text_field: table[self.text_field].to_pylist()})["minhash"]
        out = pa.table({ORDER: table[ORDER], "minhash": pack_signatures(signatures)})
        return out.append_column(RANK, table[RANK]) if RANK in table.column_names else out


class _BandKeys:
    """Flat map: one row per (document, band) with the band's key, partitioned by key."""

    def __init__(self, config: MinHashConfig, partitions: int):
        (self.bands, self.rows), self.num_perm, self.partitions = config.band_layout(), config.num_perm, partitions

    def __call__(self, table: pa.Table) -> pa.Table:
        keys = band_keys(unpack_signatures(table["minhash"], self.num_perm), self.bands, self.rows).ravel()
        columns = {ORDER: np.repeat(table[ORDER].to_numpy(), self.bands)}
        columns["band"] = np.tile(np.arange(self.bands, dtype=np.int32), table.num_rows)
        columns["key"] = pa.array(keys, pa.uint64())
        if RANK in table.column_names:
            columns[RANK] = np.repeat(table[RANK].to_numpy(), self.bands)
        return pa.table({**columns, PART: part_of(keys, self.partitions)})


def _pairs_table(a: np.ndarray, b: np.ndarray, partitions: int) -> pa.Table:
    pair_hash = mix64(a.astype(np.uint64)) ^ b.astype(np.uint64)
    return pa.table({"a": a.astype(np.int64), "b": b.astype(np.int64), PART: part_of(pair_hash, partitions)})


class _BucketPairs:
    """Group function: in each bucket (band, key), every member after the first paired with the first and with the
    member before it, in `_order` order: `candidate_pairs`' rule. With a `_rank` column (splits, across which
    `dedup_across_splits` numbers rows split after split), in (`_rank`, `_order`) order."""

    def __init__(self, partitions: int):
        self.partitions = partitions

    def __call__(self, table: pa.Table) -> pa.Table:
        band, key, order = (table[c].to_numpy() for c in ("band", "key", ORDER))
        rank = table[RANK].to_numpy() if RANK in table.column_names else np.zeros(order.size, dtype=np.int64)
        sort = np.lexsort((order, rank, key, band))
        band, key, order = band[sort], key[sort], order[sort]
        start = run_starts(band, key)
        first = order[start][np.cumsum(start) - 1]
        later = np.flatnonzero(~start)
        a = np.concatenate([first[later], order[later - 1]])
        return _pairs_table(a, np.concatenate([order[later], order[later]]), self.partitions)


class _DistinctPairs:
    def __call__(self, table: pa.Table) -> pa.Table:
        a, b = table["a"].to_numpy(), table["b"].to_numpy()
        sort = np.lexsort((b, a))
        a, b = a[sort], b[sort]
        keep = run_starts(a, b)
        return pa.table({"a": a[keep], "b": b[keep]})


class _Agreement:
    """Batch function: the share of equal signature values of each pair (`signature_agreement`)."""

    def __init__(self, num_perm: int):
        self.num_perm = num_perm

    def __call__(self, table: pa.Table) -> pa.Table:
        first = unpack_signatures(table["sig_a"], self.num_perm)
        second = unpack_signatures(table["sig_b"], self.num_perm)
        agreement = (first == second).mean(axis=1) if table.num_rows else np.empty(0)
        return table.drop_columns(["sig_a", "sig_b"]).append_column("agreement", pa.array(agreement, pa.float64()))


class _Jaccard:
    """Batch function: whether each pair's true Jaccard of shingle sets reaches the threshold (`verify`)."""

    def __init__(self, config: MinHashConfig):
        self.ngram, self.threshold = config.ngram, config.threshold

    def __call__(self, table: pa.Table) -> pa.Table:
        sets: dict[int, np.ndarray] = {}

        def shingle_set(order: int, text: str) -> np.ndarray:
            if order not in sets:
                sets[order] = np.unique(shingle_hashes([text], self.ngram)[0])
            return sets[order]

        columns = (table[c].to_pylist() for c in ("a", "b", "text_a", "text_b"))
        ok = [
            jaccard(shingle_set(a, text_a), shingle_set(b, text_b)) >= self.threshold
            for a, b, text_a, text_b in zip(*columns, strict=True)
        ]
        return table.drop_columns(["text_a", "text_b"]).append_column("ok", pa.array(ok, pa.bool_()))


class _Select:
    """Batch function: the rows where `column` (bool) is `value`, with only `keep` columns."""

    def __init__(self, column: str, value: bool, keep: list[str]):
        self.column, self.value, self.keep = column, value, keep

    def __call__(self, table: pa.Table) -> pa.Table:
        mask = table[self.column].to_numpy(zero_copy_only=False) == self.value
        return table.filter(pa.array(mask)).select(self.keep)


class _AtLeast:
    def __init__(self, column: str, threshold: float, keep: list[str]):
        self.column, self.threshold, self.keep = column, threshold, keep

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.filter(pa.array(table[self.column].to_numpy() >= self.threshold)).select(self.keep)


class _Endpoints:
    def __call__(self, table: pa.Table) -> pa.Table:
        return pa.table({ORDER: np.concatenate([table["a"].to_numpy(), table["b"].to_numpy()])})


def confirmed_pairs(
    ds: Any,
    config: MinHashConfig,
    text_field: str,
    documents: int,
    stats: NearDedupStats,
    ranked: bool = False,
    batch_size: int = TEXT_BATCH_ROWS,
) -> tuple[Any | None, Any | None]:
    """The pairs to join into components (a before b), and with `verify` the checked pairs for `_Replay` (a, b,
    ok); fills the pair counts of `stats`. `ranked`: `ds` has a `_rank` column that orders documents first."""
    partitions = partitions_for(documents * stats.bands)  # a row per document and band
    signatures = ds.select_columns([ORDER, text_field, *([RANK] if ranked else [])]).map_batches(
        _Signatures(config, text_field), batch_size=batch_size, batch_format="pyarrow"
    )
    signatures = signatures.materialize()
    keyed = signatures.map_batches(_BandKeys(config, partitions), batch_format="pyarrow")
    raw = group_apply(keyed, _BucketPairs(partitions), partitions)
    pairs = group_apply(raw, _DistinctPairs(), partitions).materialize()
    stats.candidate_pairs = pairs.count()
    if not stats.candidate_pairs or not (config.verify or config.check_signatures):
        return (pairs if stats.candidate_pairs else None), None
    pair_partitions = partitions_for(stats.candidate_pairs)
    # a join's reduce holds its share of the pairs and of the signatures they meet: sized by both
    signature_partitions = max(pair_partitions, partitions_for_bytes(signatures.size_bytes()))
    with_a = attach(pairs, signatures, "a", ORDER, {"minhash": "sig_a"}, signature_partitions)
    with_both = attach(with_a, signatures, "b", ORDER, {"minhash": "sig_b"}, signature_partitions)
    agreed = with_both.map_batches(_Agreement(config.num_perm), batch_format="pyarrow").materialize()
    if not config.verify:
        stats.check = "signatures"
        confirmed = agreed.map_batches(_AtLeast("agreement", config.threshold, ["a", "b"]), batch_format="pyarrow")
        confirmed = confirmed.materialize()
        stats.verified_pairs = confirmed.count()
        stats.rejected_pairs = stats.candidate_pairs - stats.verified_pairs
        return confirmed, None
    stats.check = "jaccard"
    plausible = agreed.map_batches(
        _AtLeast("agreement", plausible_agreement(config), ["a", "b"]), batch_format="pyarrow"
    ).materialize()
    plausible_count = plausible.count()
    stats.rejected_pairs = stats.candidate_pairs - plausible_count  # rejected on signatures, texts never read
    if not plausible_count:
        return None, None
    # only the texts of documents in a plausible pair travel to the check
    candidates = order_set(plausible.map_batches(_Endpoints(), batch_format="pyarrow"), ORDER)
    texts = ds.select_columns([ORDER, text_field]).map_batches(KeepOrders(candidates), batch_format="pyarrow")
    texts = texts.materialize()
    text_partitions = max(pair_partitions, partitions_for_bytes(texts.size_bytes()))
    with_a = attach(plausible, texts, "a", ORDER, {text_field: "text_a"}, text_partitions)
    with_both = attach(with_a, texts, "b", ORDER, {text_field: "text_b"}, text_partitions)
    checked = with_both.map_batches(_Jaccard(config), batch_size=batch_size, batch_format="pyarrow").materialize()
    confirmed = checked.map_batches(_Select("ok", True, ["a", "b"]), batch_format="pyarrow").materialize()
    return (confirmed if confirmed.count() else None), checked


def near_dedup_marked(
    ds: Any, config: MinHashConfig, text_field: str, documents: int, batch_size: int = TEXT_BATCH_ROWS
) -> tuple[Any, dict[str, Any]]:
    """`ds` with all but the first document of every cluster of near duplicates marked dropped, and
    `NearDedupStats` as a dict: the same counts and examples as `near_dedup`."""
    bands, rows = config.band_layout()
    stats = NearDedupStats(documents=documents, bands=bands, rows=rows, candidate_pairs=0)
    confirmed, checked = confirmed_pairs(ds, config, text_field, documents, stats, batch_size=batch_size)
    edges = confirmed.count() if confirmed is not None else 0
    star = connected_components(confirmed, edges) if edges else None
    stats.duplicates = star.count() if star is not None else 0
    if checked is not None:
        stats.verified_pairs = stats.duplicates  # each pair the datasets engine merges joins two components
        stats.rejected_pairs += replay_rejections(checked, star, checked.count())
    if star is None:
        return ds, stats.as_dict()
    stats.clusters, top = top_clusters(star, stats.duplicates, EXAMPLE_CLUSTERS, EXAMPLE_MEMBERS)
    shown = [order for cluster in top for order in cluster["members"]]
    rows_of, texts = positions(ds, shown), texts_of(ds, shown, text_field)
    stats.examples = [
        {
            "size": cluster["size"],
            "rows": [rows_of[order] for order in cluster["members"]],
            "texts": [preview_text(texts[order]) for order in cluster["members"]],
        }
        for cluster in top
    ]
    marked = ds.map_batches(MarkOrders(order_set(star, "child"), "near_duplicate"), batch_format="pyarrow")
    return marked, stats.as_dict()
