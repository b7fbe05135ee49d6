"""Text -> words -> word n-gram shingles -> 64-bit hashes: the tokenization and hashing every dedup step shares.

Each word is hashed once (xxh3), word n-grams are combined with a polynomial rolling hash over a whole batch at once
and finalised with MurmurHash3's mixer, all in wrapping uint64 arithmetic.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import xxhash  # a dependency of `datasets` itself

WORD = re.compile(r"\w+")
NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]")

POLY = np.uint64(0x9E3779B97F4A7C15)  # odd, so multiplying by it is invertible mod 2**64
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_MASK64 = (1 << 64) - 1


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


def mix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place: spreads every input bit over the output (uint64 wraps)."""
    values ^= values >> np.uint64(33)
    values *= _FMIX1
    values ^= values >> np.uint64(33)
    values *= _FMIX2
    values ^= values >> np.uint64(33)
    return values


def word_hashes(word_lists: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """All words of a batch hashed once, concatenated, plus each document's word count."""
    lengths = np.fromiter(map(len, word_lists), dtype=np.int64, count=len(word_lists))
    flat = [token for tokens in word_lists for token in tokens]
    hashes = np.fromiter(map(xxhash.xxh3_64_intdigest, map(str.encode, flat)), dtype=np.uint64, count=len(flat))
    return hashes, lengths


def _text_word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """`word_hashes` of the texts' words, one text's words in memory at a time (a batch's word lists as Python
    strings take ~50 bytes a word, over 20 MB for 1,000 web pages)."""
    lengths = np.empty(len(texts), dtype=np.int64)
    parts = []
    for doc, text in enumerate(texts):
        tokens = words(text)
        lengths[doc] = len(tokens)
        hashed = map(xxhash.xxh3_64_intdigest, map(str.encode, tokens))
        parts.append(np.fromiter(hashed, dtype=np.uint64, count=len(tokens)))
    return (np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)), lengths


def ngram_hashes(hashes: np.ndarray, lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
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
        combined *= POLY
        combined += hashes[k : k + count]
    doc_end = np.repeat(np.cumsum(lengths), lengths)[:count]
    starts = np.arange(count, dtype=np.int64)
    valid = starts + n <= doc_end
    return mix64(combined[valid]), starts[valid]


def whole_text_hash(hashes: np.ndarray) -> int:
    """The polynomial hash of all of a short document's words (the same formula as `ngram_hashes`)."""
    value = 0
    for word_hash in hashes.tolist():
        value = (value * int(POLY) + word_hash) & _MASK64
    return value


def shingle_hashes(texts: Sequence[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each text's word n-gram shingles, concatenated, and the shingle count of each text.

    A text shorter than `ngram` words (even an empty one) has exactly one shingle: all of its words.
    """
    hashes, lengths = _text_word_hashes(texts)
    long_ngrams, _ = ngram_hashes(hashes, lengths, ngram)
    is_long = lengths >= ngram
    counts = np.where(is_long, lengths - ngram + 1, 1)
    if is_long.all():
        return long_ngrams, counts
    out = np.empty(int(counts.sum()), dtype=np.uint64)
    long_slot = np.repeat(is_long, counts)
    out[long_slot] = long_ngrams
    ends = np.cumsum(lengths)
    short_docs = np.flatnonzero(~is_long)
    short = [whole_text_hash(hashes[ends[i] - lengths[i] : ends[i]]) for i in short_docs]
    out[~long_slot] = mix64(np.array(short, dtype=np.uint64))
    return out, counts
