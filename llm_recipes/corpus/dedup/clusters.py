"""Near-duplicate clusters: signatures -> band keys -> buckets (a group-by) -> candidate pairs, confirmed by
signature agreement or true Jaccard, -> connected components; `near_dedup` keeps the first of every cluster."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from llm_recipes.corpus.dedup.columns import LazyColumn, check_text_column, preview_text
from llm_recipes.corpus.dedup.hashing import POLY, jaccard, mix64, shingle_hashes
from llm_recipes.corpus.dedup.minhash import SHINGLES_PER_PASS, MinHashConfig, dataset_signatures
from llm_recipes.errors import UserError

if TYPE_CHECKING:
    from datasets import Dataset


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: one hash per band of each signature. Equal bands give equal keys; unequal bands collide
    with probability about 2**-64."""
    signatures = np.asarray(signatures).astype(np.uint64)
    keys = np.empty((signatures.shape[0], bands), dtype=np.uint64)
    for band in range(bands):
        key = np.full(signatures.shape[0], band + 1, dtype=np.uint64)
        for column in range(band * rows, (band + 1) * rows):
            key *= POLY
            key ^= signatures[:, column]
        keys[:, band] = mix64(key)
    return keys


def _buckets(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group documents by one band's key: (documents in key order, where each bucket starts in that order).

    The sort is stable, so inside a bucket documents stay in index order and the first is the smallest index.
    """
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return order, starts


def candidate_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct candidate pairs (a < b) over all bands: in every bucket, each member paired with the bucket's first
    member and with the member before it.

    The first-member star alone connects a bucket; the chain adds a second route, so two near duplicates still
    meet when a check rejects the unrelated document that happens to head their bucket. Either way a bucket of
    k documents costs under 2k pairs, never k(k-1)/2.
    """
    n = keys.shape[0]
    firsts, seconds = [], []
    for band in range(keys.shape[1]):
        order, starts = _buckets(keys[:, band])
        is_start = np.zeros(n, dtype=bool)
        is_start[starts] = True
        first_position = np.maximum.accumulate(np.where(is_start, np.arange(n), 0))
        later = np.flatnonzero(~is_start)
        firsts += [order[first_position[later]], order[later - 1]]
        seconds += [order[later], order[later]]
    if not firsts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    pairs = np.unique(np.concatenate(firsts).astype(np.int64) * n + np.concatenate(seconds))
    return pairs // n, pairs % n


def signature_agreement(signatures: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of equal signature values for each pair (a[i], b[i]): MinHash's unbiased estimate of Jaccard."""
    agreement = np.empty(a.size, dtype=np.float64)
    step = max(1, SHINGLES_PER_PASS * 8 // max(1, signatures.shape[1]))
    for at in range(0, a.size, step):
        equal = signatures[a[at : at + step]] == signatures[b[at : at + step]]
        agreement[at : at + step] = equal.mean(axis=1)
    return agreement


class UnionFind:
    """Disjoint sets over 0..n-1 with path compression; the root of a set is always its smallest member."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, item: int) -> int:
        parent = self.parent
        root = item
        while parent[root] != root:
            root = parent[root]
        while parent[item] != root:
            parent[item], item = root, parent[item]
        return root

    def union(self, a: int, b: int) -> bool:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return False
        if root_a < root_b:
            self.parent[root_b] = root_a
        else:
            self.parent[root_a] = root_b
        return True

    def labels(self) -> np.ndarray:
        return np.fromiter((self.find(i) for i in range(len(self.parent))), dtype=np.int64, count=len(self.parent))


def connected_components(n: int, firsts: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Component label of each of n documents (its smallest member's index) for the given pairs."""
    sets = UnionFind(n)
    for a, b in zip(firsts.tolist(), members.tolist(), strict=True):
        sets.union(a, b)
    return sets.labels()


@dataclass
class NearDedupStats:
    documents: int
    bands: int
    rows: int
    candidate_pairs: int  # distinct pairs put forward by the buckets (see `candidate_pairs`)
    check: str = "none"  # how candidates were confirmed: "jaccard" (verify), "signatures" or "none"
    verified_pairs: int = 0  # candidate pairs confirmed as near duplicates and merged
    rejected_pairs: int = 0  # candidate pairs found below the threshold (with verify: pairs already joined
    # through other verified pairs are neither)
    clusters: int = 0
    duplicates: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _ShingleSets:
    """Sorted unique shingle hashes per document, hashed on first use (verification touches few documents)."""

    def __init__(self, texts: Sequence[str], ngram: int):
        self.texts, self.ngram, self.cache = texts, ngram, {}

    def __getitem__(self, doc: int) -> np.ndarray:
        if doc not in self.cache:
            self.cache[doc] = np.unique(shingle_hashes([self.texts[doc]], self.ngram)[0])
        return self.cache[doc]


def plausible_agreement(config: MinHashConfig) -> float:
    """The signature agreement below which `verify` rejects a pair without reading its texts: the threshold less 5
    standard deviations of MinHash's estimate (at least 0.05)."""
    threshold = config.threshold
    return threshold - max(0.05, 5 * float(np.sqrt(threshold * (1 - threshold) / config.num_perm)))


def _verified_components(
    n: int, a: np.ndarray, b: np.ndarray, agreement: np.ndarray, texts: Sequence[str], config: MinHashConfig, stats
) -> np.ndarray:
    """Components over the candidate pairs whose true Jaccard reaches the threshold.

    Pairs whose signatures agree far below the threshold (by more than 5 standard deviations of the estimate, at
    least 0.05) are rejected without reading their texts, and pairs already joined through other verified pairs
    are not compared; the rest cost one intersection of sorted shingle-hash arrays each.
    """
    threshold = config.threshold
    plausible = agreement >= plausible_agreement(config)
    stats.rejected_pairs = int(np.count_nonzero(~plausible))
    sets, shingle_sets = UnionFind(n), _ShingleSets(texts, config.ngram)
    for first, second in zip(a[plausible].tolist(), b[plausible].tolist(), strict=True):
        if sets.find(first) == sets.find(second):
            continue
        if jaccard(shingle_sets[first], shingle_sets[second]) >= threshold:
            sets.union(first, second)
            stats.verified_pairs += 1
        else:
            stats.rejected_pairs += 1
    return sets.labels()


def near_duplicate_clusters(
    signatures: np.ndarray, config: MinHashConfig | None = None, texts: Sequence[str] | None = None
) -> tuple[np.ndarray, NearDedupStats]:
    """Cluster id of each document (the index of its cluster's first document) and what happened.

    Documents sharing any band of their signature are candidates. Candidate pairs are confirmed by their true
    Jaccard (`config.verify`, which needs `texts`), by their signatures' agreement (`config.check_signatures`) or
    not at all, and confirmed pairs are joined into connected components.
    """
    config = config or MinHashConfig()
    signatures = np.asarray(signatures)
    if signatures.ndim != 2 or signatures.shape[1] != config.num_perm:
        raise UserError(f"signatures must have shape (n, {config.num_perm}), got {signatures.shape}")
    if config.verify and texts is None:
        raise UserError("verify=True compares the documents' shingle sets: pass texts to near_duplicate_clusters")
    n = signatures.shape[0]
    bands, rows = config.band_layout()
    if n == 0:
        return np.empty(0, dtype=np.int64), NearDedupStats(documents=0, bands=bands, rows=rows, candidate_pairs=0)
    keys = band_keys(signatures, bands, rows)
    a, b = candidate_pairs(keys)
    stats = NearDedupStats(documents=n, bands=bands, rows=rows, candidate_pairs=int(a.size))
    if config.verify:
        stats.check = "jaccard"
        labels = _verified_components(n, a, b, signature_agreement(signatures, a, b), texts, config, stats)
    elif config.check_signatures:
        stats.check = "signatures"
        confirmed = signature_agreement(signatures, a, b) >= config.threshold
        stats.verified_pairs, stats.rejected_pairs = int(confirmed.sum()), int((~confirmed).sum())
        labels = connected_components(n, a[confirmed], b[confirmed])
    else:
        labels = connected_components(n, a, b)
    sizes = np.bincount(labels, minlength=n)
    stats.clusters = int((sizes > 1).sum())
    stats.duplicates = int(n - (sizes > 0).sum())
    return labels, stats


def cluster_examples(labels: np.ndarray, texts: Sequence[str], limit: int = 3, members: int = 4) -> list[dict]:
    """The largest clusters (ties: earliest first) as row indices and the first characters of each document."""
    sizes = np.bincount(labels, minlength=labels.size)
    roots = [int(root) for root in np.lexsort((np.arange(sizes.size), -sizes)) if sizes[root] > 1][:limit]
    examples = []
    for root in roots:
        rows = np.flatnonzero(labels == root)
        shown = rows[:members].tolist()
        examples.append({"size": int(rows.size), "rows": shown, "texts": [preview_text(texts[row]) for row in shown]})
    return examples


def near_dedup(
    ds: Dataset, config: MinHashConfig | None = None, text_field: str = "text", num_proc: int | None = None
) -> tuple[Dataset, NearDedupStats]:
    """Keep one document (the first) of every cluster of near-duplicates."""
    config = config or MinHashConfig()
    check_text_column(ds, text_field)
    signatures = dataset_signatures(ds, config, text_field, num_proc)
    texts = LazyColumn(ds, text_field)
    labels, stats = near_duplicate_clusters(signatures, config, texts if config.verify else None)
    stats.examples = cluster_examples(labels, texts)
    return ds.select(np.flatnonzero(labels == np.arange(labels.size))), stats
