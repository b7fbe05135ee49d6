"""Gopher's repetition rules (Rae et al. 2021, appendix A): duplicated lines and paragraphs, the most frequent short
n-grams, and the characters inside repeated long n-grams, counted with numpy over rolling n-gram hashes."""

from __future__ import annotations

from typing import Any

import numpy as np

from llm_recipes.corpus.filters.calibration import CALIBRATIONS
from llm_recipes.corpus.filters.document import CalibratedFilter, Document, check_fraction, exceeds
from llm_recipes.errors import UserError

# Odd 64-bit multiplier for n-gram rolling hashes (uint64 arithmetic wraps): h(w1..wn) = h(w1..wn-1) * _ROLL +
# hash(wn). A collision needs two different n-grams to agree on all 64 bits, which no real document produces.
_ROLL = np.uint64(0x9E3779B97F4A7C15)


def _ngram_pairs(value: Any, option: str) -> tuple[tuple[int, float], ...]:
    """{2: 0.2, 3: 0.18} or [[2, 0.2], ...] from a config -> ((2, 0.2), (3, 0.18)), sorted by n."""
    try:
        pairs = tuple(sorted((int(n), float(limit)) for n, limit in dict(value).items()))
    except (TypeError, ValueError):
        raise UserError(f"{option}: expected a mapping of n-gram size to fraction, e.g. {{2: 0.2}}") from None
    for n, limit in pairs:
        if n < 1:
            raise UserError(f"{option}: n-gram size {n} must be >= 1")
        check_fraction(f"{option}[{n}]", limit)
    return pairs


class GopherRepetitionFilter(CalibratedFilter):
    """Gopher's repetition heuristics: duplicated paragraphs and lines, the most frequent short n-grams, and the
    share of characters inside repeated long n-grams. Pass null for any rule to turn it off. The duplicate-line and
    n-gram thresholds are calibrated per language (FineWeb-2); n-grams are of the language's words."""

    name = "gopher_repetition"
    calibrations = CALIBRATIONS["gopher_repetition"]

    def __init__(
        self,
        dup_line_frac: float | None = 0.3,
        dup_para_frac: float | None = 0.3,
        dup_line_char_frac: float | None = 0.2,
        dup_para_char_frac: float | None = 0.2,
        top_n_grams: dict[int, float] | None = None,
        dup_n_grams: dict[int, float] | None = None,
        language_thresholds: dict[str, dict] | None = None,
    ):
        for option in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac"):
            check_fraction(option, locals()[option])
        self.dup_line_frac, self.dup_para_frac = dup_line_frac, dup_para_frac
        self.dup_line_char_frac, self.dup_para_char_frac = dup_line_char_frac, dup_para_char_frac
        self.top_n_grams = _ngram_pairs(
            {2: 0.20, 3: 0.18, 4: 0.16} if top_n_grams is None else top_n_grams, "top_n_grams"
        )
        self.dup_n_grams = _ngram_pairs(
            {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10} if dup_n_grams is None else dup_n_grams,
            "dup_n_grams",
        )
        self._set_language_thresholds(language_thresholds)

    def check(self, doc: Document) -> str | None:
        rules = self.for_language(doc.language)
        if rules is not self:
            return rules.check(doc)
        n_chars = len(doc.text)
        if n_chars == 0:
            return None
        for units, (n_dup, dup_chars), frac, char_frac, label in (
            (doc.paragraphs, doc.duplicate_paragraphs, self.dup_para_frac, self.dup_para_char_frac, "para"),
            (doc.non_empty_lines, doc.duplicate_lines, self.dup_line_frac, self.dup_line_char_frac, "line"),
        ):
            if units and exceeds(n_dup / len(units), frac):
                return self.reason(f"dup_{label}_frac")
            if exceeds(dup_chars / n_chars, char_frac):
                return self.reason(f"dup_{label}_char_frac")

        if not doc.words:
            return None
        ngrams = _NGramHashes(doc)
        for n, limit in self.top_n_grams:
            if ngrams.top_char_fraction(n) > limit:
                return self.reason(f"top_{n}gram_char_frac")
        for n, limit in self.dup_n_grams:
            fraction = ngrams.repeated_char_fraction(n)
            if fraction is None:
                break  # no n-gram occurs twice, so no longer one does either
            if fraction > limit:
                return self.reason(f"dup_{n}gram_char_frac")
        return None


class _NGramHashes:
    """Word n-grams of one document as rolling hashes, built up one n at a time and counted with numpy sorts
    instead of Python tuples (most of the repetition filter's cost otherwise)."""

    def __init__(self, doc: Document):
        self.ids = doc.word_ids
        self.lengths = doc.word_length_array
        self.word_chars = doc.word_chars
        self.starts = np.concatenate(([0], np.cumsum(self.lengths)))
        self.n, self.hashes = 1, self.ids

    def of(self, n: int) -> np.ndarray:
        """Hash of the n-gram starting at each position (empty when the document is shorter than n)."""
        if n < self.n:
            self.n, self.hashes = 1, self.ids
        while self.n < n:
            self.n += 1
            self.hashes = self.hashes[:-1] * _ROLL + self.ids[self.n - 1 :]
        return self.hashes

    def top_char_fraction(self, n: int) -> float:
        """Characters in the most frequent n-gram times its count, over all word characters. An n-gram seen once is
        no repetition, however short the document, so that case is 0. Ties go to the n-gram seen first."""
        hashes = self.of(n)
        if len(hashes) < 2:
            return 0.0
        ordered = np.sort(hashes)
        run_ends = np.flatnonzero(ordered[1:] != ordered[:-1])
        if len(run_ends) == len(ordered) - 1:
            return 0.0
        run_ends = np.append(run_ends, len(ordered) - 1)
        run_lengths = run_ends - np.append(-1, run_ends[:-1])
        top = int(run_lengths.max())
        tied = ordered[run_ends[run_lengths == top]]  # sorted
        if len(tied) == 1:
            i = int(np.argmax(hashes == tied[0]))
        else:
            slots = np.minimum(np.searchsorted(tied, hashes), len(tied) - 1)
            i = int(np.argmax(tied[slots] == hashes))
        return float(self.starts[i + n] - self.starts[i]) * top / self.word_chars

    def repeated_char_fraction(self, n: int) -> float | None:
        """Characters covered by repeated occurrences (after the first) of any n-gram, overlaps counted once, over
        all word characters; None when no n-gram occurs twice."""
        hashes = self.of(n)
        if len(hashes) < 2:
            return None
        ordered = np.sort(hashes)
        if not (ordered[1:] == ordered[:-1]).any():
            return None
        # A stable sort keeps equal n-grams in document order: all but the first of each run are repeats.
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        repeat_starts = order[1:][ordered[1:] == ordered[:-1]]
        coverage = np.zeros(len(self.ids) + 1, dtype=np.int32)
        coverage[repeat_starts] += 1
        coverage[repeat_starts + n] -= 1
        covered = np.cumsum(coverage[:-1]) > 0
        return float(self.lengths[covered].sum()) / self.word_chars
