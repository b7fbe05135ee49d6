"""MinHash signatures: every word n-gram shingle through `num_perm` multiply-add-shift hash functions at once, then
a segmented minimum per document; and the LSH band layout a threshold calls for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from llm_recipes.corpus.dedup.columns import BATCH_SIZE, map_to_numpy
from llm_recipes.corpus.dedup.hashing import shingle_hashes
from llm_recipes.errors import UserError

if TYPE_CHECKING:
    from datasets import Dataset

# how many (document, shingle) hash values one multiply-add pass holds: num_perm x this many uint64 (4 MiB at 128;
# larger passes are no faster, and each worker process holds one)
SHINGLES_PER_PASS = 4096


@dataclass
class MinHashConfig:
    """Near-duplicate detection settings; `bands`/`rows` are derived from `threshold` when left unset."""

    threshold: float = field(
        default=0.8, metadata={"help": "Jaccard similarity of word n-gram sets at which documents are duplicates."}
    )
    num_perm: int = field(default=128, metadata={"help": "Number of MinHash hash functions (signature length)."})
    ngram: int = field(default=5, metadata={"help": "Words per shingle (lowercase \\w+ words)."})
    bands: int | None = field(default=None, metadata={"help": "LSH bands; chosen from the threshold when unset."})
    rows: int | None = field(default=None, metadata={"help": "Signature rows per band; set together with bands."})
    seed: int = field(default=42, metadata={"help": "Seed of the hash functions."})
    verify: bool = field(
        default=True,
        metadata={
            "help": "Confirm each candidate pair by the true Jaccard of its shingle sets before merging: exact "
            "(F1 0.998 against 0.92 without, benchmarks/dedup_quality.py), at the cost of reading both texts of each "
            "candidate pair. False keeps the signature check only, for corpora too big to re-read."
        },
    )
    check_signatures: bool = field(
        default=True,
        metadata={
            "help": "Without verify: confirm each candidate pair by the share of equal signature values (the MinHash "
            "estimate of Jaccard) before merging. Needs no text; false turns it into plain LSH."
        },
    )

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise UserError(f"threshold: {self.threshold!r} must be in (0, 1] (a Jaccard similarity)")
        if self.num_perm < 1:
            raise UserError(f"num_perm: {self.num_perm!r} must be >= 1")
        if self.ngram < 1:
            raise UserError(f"ngram: {self.ngram!r} must be >= 1 (words per shingle)")
        if (self.bands is None) != (self.rows is None):
            raise UserError("bands and rows go together: set both, or neither to derive them from threshold")
        if self.bands is not None:
            if self.bands < 1 or self.rows < 1:
                raise UserError(f"bands, rows: {self.bands}, {self.rows} must both be >= 1")
            if self.bands * self.rows > self.num_perm:
                raise UserError(f"bands * rows = {self.bands * self.rows} must be <= num_perm ({self.num_perm})")

    def band_layout(self) -> tuple[int, int]:
        """(bands, rows): the configured ones, or those `choose_bands` picks for the threshold.

        When candidates are checked (`verify` or `check_signatures`), a false candidate costs one comparison and is
        then rejected, so the layout weighs a missed duplicate 19 times a false candidate; plain LSH weighs both
        equally, like datasketch.
        """
        if self.bands is not None:
            return self.bands, self.rows
        if self.verify or self.check_signatures:
            return choose_bands(self.threshold, self.num_perm, false_positive_weight=0.05, false_negative_weight=0.95)
        return choose_bands(self.threshold, self.num_perm)


@lru_cache(maxsize=64)
def choose_bands(
    threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """The (bands, rows) with b*r <= num_perm that minimise the weighted area of LSH errors.

    Two documents of Jaccard similarity s share at least one band with probability 1 - (1 - s^r)^b. The false
    positive area is that probability integrated over s < threshold, the false negative area its complement over
    s > threshold; the same criterion as datasketch's `_optimal_param`, computed on a grid for all (b, r) at once.
    """
    grid = np.linspace(0.0, 1.0, 513)
    below = grid <= threshold
    best, best_error = (1, num_perm), np.inf
    for bands in range(1, num_perm + 1):
        rows = np.arange(1, num_perm // bands + 1)[:, None]
        collide = 1.0 - (1.0 - grid[None, :] ** rows) ** bands
        false_pos = np.trapezoid(np.where(below, collide, 0.0), grid, axis=1)
        false_neg = np.trapezoid(np.where(below, 0.0, 1.0 - collide), grid, axis=1)
        error = false_positive_weight * false_pos + false_negative_weight * false_neg
        at = int(np.argmin(error))
        if error[at] < best_error - 1e-12:
            best, best_error = (bands, at + 1), error[at]
    return best


@lru_cache(maxsize=16)
def _hash_parameters(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Column vectors a (odd) and b of the multiply-add-shift hash functions, one pair per permutation."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64)
    return a[:, None], b[:, None]


def _signatures_from_shingles(hashes: np.ndarray, counts: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """(n_docs, num_perm) uint32 MinHash signatures from concatenated 64-bit shingle hashes."""
    a, b = _hash_parameters(num_perm, seed)
    keys = hashes >> np.uint64(32)  # 32-bit keys: the multiply-add-shift family is universal for them
    ends = np.cumsum(counts)
    starts = ends - counts
    signatures = np.empty((counts.size, num_perm), dtype=np.uint32)
    doc = 0
    while doc < counts.size:
        # whole documents per pass, about SHINGLES_PER_PASS shingles (at least one document)
        stop = max(doc + 1, int(np.searchsorted(ends, starts[doc] + SHINGLES_PER_PASS, side="right")))
        low, high = starts[doc], ends[stop - 1]
        permuted = np.multiply.outer(a[:, 0], keys[low:high])
        permuted += b
        # the minimum of the full 64-bit values has the minimum top 32 bits, so shift once after reducing
        minima = np.minimum.reduceat(permuted, starts[doc:stop] - low, axis=1)
        signatures[doc:stop] = (minima >> np.uint64(32)).T
        doc = stop
    return signatures


class MinHashBatch:
    """Batch function: `{text_field: [...]}` -> `{"minhash": (n, num_perm) uint32 array}`; picklable."""

    def __init__(self, config: MinHashConfig | None = None, text_field: str = "text"):
        self.config = config or MinHashConfig()
        self.text_field = text_field

    def __call__(self, batch: dict[str, list]) -> dict[str, np.ndarray]:
        hashes, counts = shingle_hashes(batch[self.text_field], self.config.ngram)
        return {"minhash": _signatures_from_shingles(hashes, counts, self.config.num_perm, self.config.seed)}


def minhash_signatures(texts: Sequence[str], config: MinHashConfig | None = None) -> np.ndarray:
    """(n, num_perm) uint32 signatures of in-memory texts, for direct use without a Dataset."""
    config = config or MinHashConfig()
    texts = list(texts)
    minhash = MinHashBatch(config)
    parts = [minhash({"text": texts[i : i + BATCH_SIZE]})["minhash"] for i in range(0, len(texts), BATCH_SIZE)]
    return np.concatenate(parts) if parts else np.empty((0, config.num_perm), dtype=np.uint32)


def dataset_signatures(
    ds: Dataset, config: MinHashConfig, text_field: str = "text", num_proc: int | None = None
) -> np.ndarray:
    """The (n, num_perm) signatures of a dataset's texts, computed with `Dataset.map`."""
    from datasets import List, Value  # noqa: PLC0415  corpus workers import this module: no datasets

    column_type = List(Value("uint32"), length=config.num_perm)
    return map_to_numpy(ds, MinHashBatch(config, text_field), "minhash", num_proc, column_type, config.num_perm)
