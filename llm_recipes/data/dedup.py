"""Deduplication for the corpus stage: exact (hash of normalised text), near-duplicate (MinHash LSH), across
splits, and n-gram decontamination against evaluation texts.

Why our own instead of datasketch or datatrove: datasketch hashes one shingle at a time through Python objects and
keeps its LSH index in Python dicts, so it neither vectorises nor splits into map / group-by steps; datatrove's
MinHash is four disk-backed pipeline stages built for a cluster of workers and does not plug into `datasets.map`.
Here, as DESIGN.md asks, every step is a pure batch function or a numpy group-by:

    texts --map--> signatures --map--> band keys --group-by key--> candidate pairs --> connected components

`ExactHashBatch`, `MinHashBatch` and `DecontaminationBatch` are picklable callables of `dict[str, list]` batches
(they return numpy arrays, which `datasets`, Ray Data and pandas all take as columns), so the expensive part runs
under `Dataset.map(batched=True, num_proc=N)` here and under Ray `map_batches` on a cluster. The group-by works on
one numpy array of band keys; the union-find that joins candidate pairs into clusters is the only sequential part.

Beyond plain LSH, candidate pairs are confirmed before they are merged: by default by the share of equal signature
values (MinHash's own Jaccard estimate, vectorised, needs no text), or with `verify=True` by the true Jaccard of the
two shingle sets. Because a checked false candidate costs one comparison and no wrong merge, checked runs use a
band layout that favours recall. On `benchmarks/dedup_quality.py` this lifts F1 at threshold 0.8 from ~0.85 (plain
LSH, same as datasketch) to ~0.93 (signature check) and ~0.998 (verify).

Hashing is vectorised: each word is hashed once (xxh3), word n-grams are combined with a polynomial rolling hash
over the whole batch at once, and all `num_perm` hash functions are applied as one `(num_perm, n_shingles)`
multiply-add in wrapping uint64 arithmetic (Dietzfelbinger's multiply-add-shift family: `(a*x + b) mod 2**64`, top
32 bits, for 32-bit shingle hashes `x`), followed by a segmented minimum per document. Results depend only on the
text and the seed, never on batch size or the number of processes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash  # a dependency of `datasets` itself

from llm_recipes.data.parallel import map_batches
from llm_recipes.errors import UserError

if TYPE_CHECKING:
    from datasets import Dataset

# `datasets` and pyarrow are imported where a Dataset is built, not here: the worker processes that run this module's
# batch functions (`llm_recipes.data.parallel`) import this module, and must stay small

WORD = re.compile(r"\w+")
NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]")
BATCH_SIZE = 1000
# how many (document, shingle) hash values one multiply-add pass holds: num_perm x this many uint64 (4 MiB at 128;
# larger passes are no faster, and each worker process holds one)
SHINGLES_PER_PASS = 4096
EXAMPLE_CHARS = 80

_POLY = np.uint64(0x9E3779B97F4A7C15)  # odd, so multiplying by it is invertible mod 2**64
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------------------------
# text -> words -> shingles
# ---------------------------------------------------------------------------------------------------------------


def normalize_for_hash(text: str) -> str:
    """The exact-duplicate key: NFKC, lowercase, punctuation and symbols removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return " ".join(NOT_WORD_OR_SPACE.sub("", text).split())


def words(text: str) -> list[str]:
    """The tokenization MinHash and decontamination share: lowercase `\\w+` runs."""
    return WORD.findall((text or "").lower())


def shingles(text: str, ngram: int = 5) -> set[str]:
    """The word n-grams of a text as strings (a text shorter than `ngram` words is one shingle).

    This is the set whose Jaccard similarity MinHash estimates; tests and the quality benchmark measure true
    similarity with it.
    """
    tokens = words(text)
    if len(tokens) < ngram:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + ngram]) for i in range(len(tokens) - ngram + 1)}


def jaccard(a: set | np.ndarray, b: set | np.ndarray) -> float:
    """Jaccard similarity of two sets (or two sorted arrays of unique hashes)."""
    if isinstance(a, np.ndarray):
        common = np.intersect1d(a, b, assume_unique=True).size
        union = a.size + b.size - common
    else:
        common = len(a & b)
        union = len(a) + len(b) - common
    return common / union if union else 1.0


def _mix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: spreads every input bit over the output (uint64 wraps)."""
    values ^= values >> np.uint64(33)
    values *= _FMIX1
    values ^= values >> np.uint64(33)
    values *= _FMIX2
    values ^= values >> np.uint64(33)
    return values


def _word_hashes(word_lists: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """All words of a batch hashed once, concatenated, plus each document's word count."""
    lengths = np.fromiter(map(len, word_lists), dtype=np.int64, count=len(word_lists))
    flat = [token for tokens in word_lists for token in tokens]
    hashes = np.fromiter(map(xxhash.xxh3_64_intdigest, map(str.encode, flat)), dtype=np.uint64, count=len(flat))
    return hashes, lengths


def _text_word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """`_word_hashes` of the texts' words, one text's words in memory at a time (a batch's word lists as Python
    strings take ~50 bytes a word, over 20 MB for 1,000 web pages)."""
    lengths = np.empty(len(texts), dtype=np.int64)
    parts = []
    for doc, text in enumerate(texts):
        tokens = words(text)
        lengths[doc] = len(tokens)
        hashed = map(xxhash.xxh3_64_intdigest, map(str.encode, tokens))
        parts.append(np.fromiter(hashed, dtype=np.uint64, count=len(tokens)))
    return (np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)), lengths


def _ngram_hashes(hashes: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word n-gram that lies inside one document, and each n-gram's start position.

    `hashes` are the concatenated word hashes of a batch, `lengths` the documents' word counts. The polynomial
    rolling hash `h0*P^(n-1) + ... + h(n-1)` is computed for all positions of the batch at once; n-grams that
    would span two documents are masked out.
    """
    total = hashes.size
    if total < n:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    count = total - n + 1
    combined = hashes[:count].copy()
    for k in range(1, n):
        combined *= _POLY
        combined += hashes[k : k + count]
    doc_end = np.repeat(np.cumsum(lengths), lengths)[:count]
    starts = np.arange(count, dtype=np.int64)
    valid = starts + n <= doc_end
    return _mix64(combined[valid]), starts[valid]


def _whole_text_hash(hashes: np.ndarray) -> int:
    """The polynomial hash of all of a short document's words (the same formula as `_ngram_hashes`)."""
    value = 0
    for word_hash in hashes.tolist():
        value = (value * int(_POLY) + word_hash) & _MASK64
    return value


def shingle_hashes(texts: Sequence[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each text's word n-gram shingles, concatenated, and the shingle count of each text.

    A text shorter than `ngram` words (even an empty one) has exactly one shingle: all of its words.
    """
    hashes, lengths = _text_word_hashes(texts)
    long_ngrams, _ = _ngram_hashes(hashes, lengths, ngram)
    is_long = lengths >= ngram
    counts = np.where(is_long, lengths - ngram + 1, 1)
    if is_long.all():
        return long_ngrams, counts
    out = np.empty(int(counts.sum()), dtype=np.uint64)
    long_slot = np.repeat(is_long, counts)
    out[long_slot] = long_ngrams
    ends = np.cumsum(lengths)
    short_docs = np.flatnonzero(~is_long)
    short = [_whole_text_hash(hashes[ends[i] - lengths[i] : ends[i]]) for i in short_docs]
    out[~long_slot] = _mix64(np.array(short, dtype=np.uint64))
    return out, counts


# ---------------------------------------------------------------------------------------------------------------
# exact dedup
# ---------------------------------------------------------------------------------------------------------------


class ExactHashBatch:
    """Batch function: `{text_field: [...]}` -> `{"exact_hash": uint64 array}` (xxh3 of `normalize_for_hash`)."""

    def __init__(self, text_field: str = "text"):
        self.text_field = text_field

    def __call__(self, batch: dict[str, list]) -> dict[str, np.ndarray]:
        keys = (normalize_for_hash(text).encode() for text in batch[self.text_field])
        hashes = np.fromiter(map(xxhash.xxh3_64_intdigest, keys), dtype=np.uint64, count=len(batch[self.text_field]))
        return {"exact_hash": hashes}


@dataclass
class ExactDedupStats:
    documents: int
    duplicates: int
    kept: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def exact_dedup(ds: Dataset, text_field: str = "text", num_proc: int | None = None) -> tuple[Dataset, ExactDedupStats]:
    """Drop documents whose normalised text equals an earlier document's; the first occurrence is kept."""
    from datasets import Value

    check_text_column(ds, text_field)
    hashes = _map_to_numpy(ds, ExactHashBatch(text_field), "exact_hash", num_proc, Value("uint64"))
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    keep = np.sort(first)
    dropped = np.setdiff1d(np.arange(len(ds)), keep)
    examples = []
    for row in dropped[:3].tolist():
        original = int(first[inverse[row]])
        examples.append({"kept": original, "dropped": row, "text": _preview(ds[original][text_field])})
    stats = ExactDedupStats(documents=len(ds), duplicates=int(dropped.size), kept=int(keep.size), examples=examples)
    return ds.select(keep), stats


# ---------------------------------------------------------------------------------------------------------------
# MinHash signatures
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# band keys -> buckets -> clusters
# ---------------------------------------------------------------------------------------------------------------


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: one hash per band of each signature. Equal bands give equal keys; unequal bands collide
    with probability about 2**-64."""
    signatures = np.asarray(signatures).astype(np.uint64)
    keys = np.empty((signatures.shape[0], bands), dtype=np.uint64)
    for band in range(bands):
        key = np.full(signatures.shape[0], band + 1, dtype=np.uint64)
        for column in range(band * rows, (band + 1) * rows):
            key *= _POLY
            key ^= signatures[:, column]
        keys[:, band] = _mix64(key)
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


def _verified_components(
    n: int, a: np.ndarray, b: np.ndarray, agreement: np.ndarray, texts: Sequence[str], config: MinHashConfig, stats
) -> np.ndarray:
    """Components over the candidate pairs whose true Jaccard reaches the threshold.

    Pairs whose signatures agree far below the threshold (by more than 5 standard deviations of the estimate, at
    least 0.05) are rejected without reading their texts, and pairs already joined through other verified pairs
    are not compared; the rest cost one intersection of sorted shingle-hash arrays each.
    """
    threshold = config.threshold
    margin = max(0.05, 5 * float(np.sqrt(threshold * (1 - threshold) / config.num_perm)))
    plausible = agreement >= threshold - margin
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
        examples.append({"size": int(rows.size), "rows": shown, "texts": [_preview(texts[row]) for row in shown]})
    return examples


def near_dedup(
    ds: Dataset, config: MinHashConfig | None = None, text_field: str = "text", num_proc: int | None = None
) -> tuple[Dataset, NearDedupStats]:
    """Keep one document (the first) of every cluster of near-duplicates."""
    config = config or MinHashConfig()
    check_text_column(ds, text_field)
    signatures = dataset_signatures(ds, config, text_field, num_proc)
    texts = _LazyColumn(ds, text_field)
    labels, stats = near_duplicate_clusters(signatures, config, texts if config.verify else None)
    stats.examples = cluster_examples(labels, texts)
    return ds.select(np.flatnonzero(labels == np.arange(labels.size))), stats


def dataset_signatures(
    ds: Dataset, config: MinHashConfig, text_field: str = "text", num_proc: int | None = None
) -> np.ndarray:
    """The (n, num_perm) signatures of a dataset's texts, computed with `Dataset.map`."""
    from datasets import List, Value

    column_type = List(Value("uint32"), length=config.num_perm)
    return _map_to_numpy(ds, MinHashBatch(config, text_field), "minhash", num_proc, column_type, config.num_perm)


# ---------------------------------------------------------------------------------------------------------------
# across splits, and against eval sets
# ---------------------------------------------------------------------------------------------------------------


def dedup_across_splits(
    splits: dict[str, Dataset],
    priority: Sequence[str] = ("train", "validation", "test"),
    config: MinHashConfig | None = None,
    text_field: str = "text",
    num_proc: int | None = None,
) -> tuple[dict[str, Dataset], dict[str, Any]]:
    """Remove documents that leak between splits, keeping the evaluation splits whole.

    `priority` lists splits from least to most protected: a document is dropped from a split when it is an exact
    or near duplicate of a document in a split listed after it. With the default, train loses anything that is
    also in validation or test, and validation anything that is also in test, so eval sets stay comparable with
    published numbers and the training data stops leaking into them. Duplicates within one split are left alone
    (that is `exact_dedup` / `near_dedup`'s job). Clusters are transitive: a train document that is a near
    duplicate of another train document that duplicates a test document goes too.
    """
    from datasets import Value

    config = config or MinHashConfig()
    unknown = [name for name in splits if name not in priority]
    if unknown:
        raise UserError(f"split(s) {', '.join(unknown)} not in priority {tuple(priority)}; list every split there")
    names = [name for name in priority if name in splits]
    for name in names:
        check_text_column(splits[name], text_field, what=f"split '{name}'")
    rank = np.concatenate([np.full(len(splits[name]), at, dtype=np.int64) for at, name in enumerate(names)])
    texts = [text for name in names for text in splits[name][text_field]]
    n = len(texts)

    signatures = np.concatenate([dataset_signatures(splits[name], config, text_field, num_proc) for name in names])
    near, near_stats = near_duplicate_clusters(signatures, config, texts if config.verify else None)
    exact_hash = ExactHashBatch(text_field)
    exact = np.concatenate(
        [_map_to_numpy(splits[name], exact_hash, "exact_hash", num_proc, Value("uint64")) for name in names]
    )
    _, first_of_hash, inverse = np.unique(exact, return_index=True, return_inverse=True)
    labels = connected_components(
        n,
        np.concatenate([near, first_of_hash[inverse]]),
        np.concatenate([np.arange(n), np.arange(n)]),
    )

    top_rank = np.full(n, -1, dtype=np.int64)
    np.maximum.at(top_rank, labels, rank)
    drop = rank < top_rank[labels]

    result, report, offset = {}, {"policy": f"drop from a split what duplicates a later split of {names}"}, 0
    report["splits"], report["examples"] = {}, []
    for name in names:
        size = len(splits[name])
        dropped = np.flatnonzero(drop[offset : offset + size])
        result[name] = splits[name].select(np.setdiff1d(np.arange(size), dropped))
        report["splits"][name] = {"documents": size, "dropped": int(dropped.size), "kept": size - int(dropped.size)}
        for row in dropped[:2].tolist():
            label = labels[offset + row]
            winner = int(np.flatnonzero((labels == label) & (rank == top_rank[label]))[0])
            report["examples"].append(
                {"split": name, "row": row, "duplicates": names[rank[winner]], "text": _preview(texts[offset + row])}
            )
        offset += size
    report["near_duplicate_clusters"] = near_stats.clusters
    return result, report


class DecontaminationBatch:
    """Batch function: `{text_field: [...]}` -> `{"contaminated_ngram": [first shared n-gram, or ""]}`.

    Holds the evaluation n-gram hashes, one sorted array per n-gram length.
    """

    def __init__(self, eval_ngrams: dict[int, np.ndarray], text_field: str = "text"):
        self.eval_ngrams = eval_ngrams
        self.text_field = text_field

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        word_lists = [words(text) for text in batch[self.text_field]]
        hashes, lengths = _word_hashes(word_lists)
        doc_starts = np.cumsum(lengths) - lengths
        found = [""] * len(word_lists)
        for n, eval_hashes in self.eval_ngrams.items():
            ngram_hashes, positions = _ngram_hashes(hashes, lengths, n)
            matched = positions[np.isin(ngram_hashes, eval_hashes)]
            docs = np.searchsorted(doc_starts, matched, side="right") - 1
            unique_docs, first = np.unique(docs, return_index=True)
            for doc, position in zip(unique_docs.tolist(), matched[first].tolist(), strict=True):
                if not found[doc]:
                    at = position - int(doc_starts[doc])
                    found[doc] = " ".join(word_lists[doc][at : at + n])
        return {"contaminated_ngram": found}


def eval_ngram_index(eval_texts: Iterable[str], ngram: int = 13, min_words: int = 8) -> tuple[dict, int]:
    """Hashes of the evaluation texts' word n-grams, by n-gram length, and how many texts were too short to use.

    A text shorter than `ngram` words but with at least `min_words` contributes its whole word sequence (so a
    short question still matches a training document that contains it); shorter ones would match too much.
    """
    word_lists = [words(text) for text in eval_texts]
    hashes, lengths = _word_hashes(word_lists)
    full, _ = _ngram_hashes(hashes, lengths, ngram)
    index = {ngram: [full]}
    ends = np.cumsum(lengths)
    too_short = 0
    for doc, length in enumerate(lengths.tolist()):
        if length >= ngram:
            continue
        if length < min_words:
            too_short += 1
            continue
        whole = _mix64(np.array([_whole_text_hash(hashes[ends[doc] - length : ends[doc]])], dtype=np.uint64))
        index.setdefault(length, []).append(whole)
    return {n: np.unique(np.concatenate(parts)) for n, parts in index.items()}, too_short


def decontaminate(
    ds: Dataset,
    eval_texts: Iterable[str],
    ngram: int = 13,
    text_field: str = "text",
    min_words: int = 8,
    num_proc: int | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """Drop training documents that share any word n-gram (13, as in GPT-3 and datatrove) with the eval texts.

    Words are lowercase `\\w+` runs, so case and punctuation do not hide a match. An eval text shorter than `ngram`
    words counts as one n-gram of its own length when it has at least `min_words` words (see `eval_ngram_index`).
    Stats: documents, dropped, kept, eval_ngrams, eval_texts_too_short, and examples of the n-grams matched.
    """
    from datasets import Features, Value

    if ngram < 1 or min_words < 1:
        raise UserError(f"ngram ({ngram}) and min_words ({min_words}) must be >= 1")
    check_text_column(ds, text_field)
    index, too_short = eval_ngram_index(eval_texts, ngram, min_words)
    out = map_batches(
        ds,
        DecontaminationBatch(index, text_field),
        batch_size=BATCH_SIZE,
        num_proc=num_proc,
        remove_columns=ds.column_names,
        features=Features({"contaminated_ngram": Value("string")}),
        desc="decontamination",
    )
    matches = list(out["contaminated_ngram"]) if len(ds) else []
    dropped = [row for row, match in enumerate(matches) if match]
    stats = {
        "documents": len(ds),
        "dropped": len(dropped),
        "kept": len(ds) - len(dropped),
        "eval_ngrams": int(sum(hashes.size for hashes in index.values())),
        "eval_texts_too_short": too_short,
        "examples": [{"row": row, "ngram": matches[row]} for row in dropped[:5]],
    }
    return ds.select(np.setdiff1d(np.arange(len(ds)), dropped)), stats


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def check_text_column(ds: Dataset, text_field: str, what: str = "the dataset") -> None:
    if text_field not in ds.column_names:
        raise UserError(f"text_field: column '{text_field}' not in {what} (columns: {', '.join(ds.column_names)})")


def _map_to_numpy(
    ds: Dataset, function, column: str, num_proc: int | None = None, feature=None, width: int | None = None
) -> np.ndarray:
    """Run a batch function over a dataset and return its one output column as a numpy array."""
    import pyarrow as pa
    from datasets import Features

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


class _LazyColumn:
    """Row access to one text column without loading the whole column (verification reads few rows)."""

    def __init__(self, ds: Dataset, column: str):
        self.ds, self.column = ds, column

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, row: int) -> str:
        return self.ds[int(row)][self.column]


def _preview(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "..."
