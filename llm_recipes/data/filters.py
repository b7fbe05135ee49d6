"""Document quality filters for a raw web corpus: Gopher, C4, FineWeb, language, bad words, length and custom rules.

The rules and default thresholds are the published ones (Gopher: Rae et al. 2021, table A1; C4: Raffel et al. 2020
and TFDS's `c4_utils`; FineWeb: Penedo et al. 2024), read from datatrove's filter sources. We write our own rather
than run datatrove because:

- datatrove's filters are pipeline blocks over its own `Document` and executors; ours are plain batch functions
  (`dict[str, list] -> dict[str, list]`, see `FilterBatch`) that run unchanged under `datasets.Dataset.map(
  batched=True, num_proc=N)`, Ray Data `map_batches` or Spark.
- Speed. datatrove tokenizes every document with NLTK once per filter (and sentence-splits every C4 line). Here a
  `Document` computes its words, lines and paragraphs once, lazily, and every filter shares them; words come from
  one precompiled regex, and the repeated n-gram search only revisits positions that can still hold a repeat.

Where we deliberately differ from datatrove's code (all noted at the rule):

- Words are runs of word characters joined by apostrophes, hyphens or dots (`don't`, `well-known`, `3.14`), found
  by a regex; punctuation is not a word. Stand-alone symbol tokens (`|`, `»`, `-`) still count against the
  "words with a letter" share, as whitespace-split words would in the paper.
- Line rules look at non-empty, stripped lines, so a blank line between paragraphs is neither a "duplicate line"
  nor a "short line" (datatrove counts empty lines in both, which drops ordinary paragraph-formatted text).
- n-gram character fractions are measured over word characters (repeated occurrences beyond the first, overlaps
  counted once); datatrove divides by the whole text length and joins n n-grams instead of n words.
- FineWeb's duplicated-line character threshold is 0.1 as published in the FineWeb write-up (datatrove's code
  default is 0.01).

Every drop reason is `"<filter>:<rule>"` (e.g. `gopher_quality:mean_word_length`), so a run can report what each
rule removed (`count_drop_reasons`).
"""

from __future__ import annotations

import importlib
import itertools
import operator
import pickle
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from llm_recipes.configs.code import check_code_exists, imports_code
from llm_recipes.data.normalize import build_steps
from llm_recipes.errors import UserError

# A word: letters/digits/underscore, optionally joined by an apostrophe, hyphen or dot ("don't", "e-mail", "3.14").
WORD_RE = re.compile(r"\w+(?:['’.\-]\w+)*")
# A whitespace-delimited token with no word character at all: "|", "»", "--", "•". Searched in " " + text + " "
# (a leading \s is much faster to scan for than a look-behind).
SYMBOL_TOKEN_RE = re.compile(r"\s[^\w\s]+(?=\s)")
HAS_LETTER_RE = re.compile(r"[^\W\d_]")
PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# Odd 64-bit multiplier for n-gram rolling hashes (uint64 arithmetic wraps): h(w1..wn) = h(w1..wn-1) * _ROLL +
# hash(wn). A collision needs two different n-grams to agree on all 64 bits, which no real document produces.
_ROLL = np.uint64(0x9E3779B97F4A7C15)


def _duplicates(items: Sequence[str]) -> tuple[int, int]:
    """(number of items seen before, characters in them): repeats beyond the first occurrence."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


class Document:
    """A text plus views of it that filters share: computed on first use, then cached for every later filter."""

    def __init__(self, text: str, metadata: dict[str, Any] | None = None):
        self.text = text
        self.metadata = {} if metadata is None else metadata

    @cached_property
    def words(self) -> list[str]:
        return WORD_RE.findall(self.text)

    @cached_property
    def word_lengths(self) -> list[int]:
        return list(map(len, self.words))

    @cached_property
    def word_chars(self) -> int:
        return sum(self.word_lengths)

    @cached_property
    def word_ids(self) -> np.ndarray:
        """A 64-bit hash per word (equal words, equal values), for vectorized n-gram counting within this document.
        Python's string hash is computed in C and cached on the string; its per-process seed does not matter here
        because values are only ever compared inside one document."""
        return np.fromiter(map(hash, self.words), dtype=np.int64, count=len(self.words)).view(np.uint64)

    @cached_property
    def word_length_array(self) -> np.ndarray:
        return np.asarray(self.word_lengths, dtype=np.int64)

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached_property
    def non_empty_lines(self) -> list[str]:
        """Lines stripped of surrounding whitespace, blank ones left out."""
        return [stripped for line in self.lines if (stripped := line.strip())]

    @cached_property
    def paragraphs(self) -> list[str]:
        """Blocks separated by one or more blank lines, stripped."""
        return [stripped for block in PARAGRAPH_BREAK_RE.split(self.text) if (stripped := block.strip())]

    @cached_property
    def duplicate_lines(self) -> tuple[int, int]:
        return _duplicates(self.non_empty_lines)

    @cached_property
    def duplicate_paragraphs(self) -> tuple[int, int]:
        return _duplicates(self.paragraphs)


class Filter:
    """One quality rule set. `check` returns None to keep a document, else the drop reason `"<name>:<rule>"`.

    A filter that rewrites text (C4 removes lines) overrides `apply`, which returns `(new_text, drop_reason)`
    with `new_text` None when the text is unchanged.
    """

    name: str = "filter"

    def check(self, doc: Document) -> str | None:
        raise NotImplementedError

    def apply(self, doc: Document) -> tuple[str | None, str | None]:
        return None, self.check(doc)

    def reason(self, rule: str) -> str:
        return f"{self.name}:{rule}"

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in vars(self).items() if not key.startswith("_"))
        return f"{type(self).__name__}({options})"


def _check_fraction(option: str, value: float | None) -> None:
    if value is not None and not 0 <= value <= 1:
        raise UserError(f"{option}: {value} must be between 0 and 1 (or null to turn the rule off)")


def _exceeds(value: float, limit: float | None) -> bool:
    return limit is not None and value > limit


def _below(value: float, limit: float | None) -> bool:
    return limit is not None and value < limit


# --------------------------------------------------------------------------------------------------------------
# Length


class LengthFilter(Filter):
    """Bounds on characters, words and non-empty lines; every bound is optional."""

    name = "length"

    def __init__(
        self,
        min_chars: int | None = None,
        max_chars: int | None = None,
        min_words: int | None = None,
        max_words: int | None = None,
        min_lines: int | None = None,
        max_lines: int | None = None,
    ):
        self.min_chars, self.max_chars = min_chars, max_chars
        self.min_words, self.max_words = min_words, max_words
        self.min_lines, self.max_lines = min_lines, max_lines

    def check(self, doc: Document) -> str | None:
        n_chars = len(doc.text)
        if _below(n_chars, self.min_chars):
            return self.reason("min_chars")
        if _exceeds(n_chars, self.max_chars):
            return self.reason("max_chars")
        if self.min_words is not None or self.max_words is not None:
            n_words = len(doc.words)
            if _below(n_words, self.min_words):
                return self.reason("min_words")
            if _exceeds(n_words, self.max_words):
                return self.reason("max_words")
        if self.min_lines is not None or self.max_lines is not None:
            n_lines = len(doc.non_empty_lines)
            if _below(n_lines, self.min_lines):
                return self.reason("min_lines")
            if _exceeds(n_lines, self.max_lines):
                return self.reason("max_lines")
        return None


# --------------------------------------------------------------------------------------------------------------
# Gopher (Rae et al. 2021, appendix A)

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
BULLETS = ("•", "-", "*", "‣", "◦", "●", "▪", "·")
ELLIPSES = ("...", "…")


class GopherQualityFilter(Filter):
    """Gopher's quality heuristics: document length, mean word length, symbols, bullets, letters, stop words."""

    name = "gopher_quality"

    def __init__(
        self,
        min_doc_words: int | None = 50,
        max_doc_words: int | None = 100_000,
        min_avg_word_length: float | None = 3,
        max_avg_word_length: float | None = 10,
        max_symbol_word_ratio: float | None = 0.1,
        max_bullet_lines_ratio: float | None = 0.9,
        max_ellipsis_lines_ratio: float | None = 0.3,
        min_alpha_words_ratio: float | None = 0.8,
        min_stop_words: int | None = 2,
        stop_words: Sequence[str] | None = None,
    ):
        for option in ("max_bullet_lines_ratio", "max_ellipsis_lines_ratio", "min_alpha_words_ratio"):
            _check_fraction(option, locals()[option])
        self.min_doc_words, self.max_doc_words = min_doc_words, max_doc_words
        self.min_avg_word_length, self.max_avg_word_length = min_avg_word_length, max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio = max_bullet_lines_ratio
        self.max_ellipsis_lines_ratio = max_ellipsis_lines_ratio
        self.min_alpha_words_ratio = min_alpha_words_ratio
        self.min_stop_words = min_stop_words
        self.stop_words = tuple(GOPHER_STOP_WORDS if stop_words is None else stop_words)
        # Sentence-initial and shouted forms count too ("The ..."), without lowercasing every word.
        self._stop_set = {form for word in self.stop_words for form in (word, word.capitalize(), word.upper())}

    def check(self, doc: Document) -> str | None:
        text, words = doc.text, doc.words
        n_words = len(words)
        if n_words == 0 or _below(n_words, self.min_doc_words):
            return self.reason("min_doc_words")
        if _exceeds(n_words, self.max_doc_words):
            return self.reason("max_doc_words")

        mean_length = doc.word_chars / n_words
        if _below(mean_length, self.min_avg_word_length) or _exceeds(mean_length, self.max_avg_word_length):
            return self.reason("mean_word_length")

        if _exceeds(text.count("#") / n_words, self.max_symbol_word_ratio):
            return self.reason("hash_ratio")
        if _exceeds((text.count("...") + text.count("…")) / n_words, self.max_symbol_word_ratio):
            return self.reason("ellipsis_ratio")

        lines = doc.non_empty_lines
        if self.max_bullet_lines_ratio is not None:
            bullet_lines = sum(1 for line in lines if line.startswith(BULLETS))
            if bullet_lines / len(lines) > self.max_bullet_lines_ratio:
                return self.reason("bullet_lines")
        if self.max_ellipsis_lines_ratio is not None:
            ellipsis_lines = sum(1 for line in lines if line.endswith(ELLIPSES))
            if ellipsis_lines / len(lines) > self.max_ellipsis_lines_ratio:
                return self.reason("ellipsis_lines")

        if self.min_alpha_words_ratio is not None:
            # Most words are all letters (one C call each); only the rest need the regex.
            mixed = itertools.compress(words, map(operator.not_, map(str.isalpha, words)))
            without_letter = sum(1 for word in mixed if not HAS_LETTER_RE.search(word))
            n_tokens = n_words + len(SYMBOL_TOKEN_RE.findall(f" {text} "))
            if (n_words - without_letter) / n_tokens < self.min_alpha_words_ratio:
                return self.reason("alpha_words")

        if self.min_stop_words:
            found, stop_set = 0, self._stop_set
            for word in words:
                if word in stop_set:
                    found += 1
                    if found >= self.min_stop_words:
                        break
            else:
                return self.reason("stop_words")
        return None


def _ngram_pairs(value: Any, option: str) -> tuple[tuple[int, float], ...]:
    """{2: 0.2, 3: 0.18} or [[2, 0.2], ...] from a config -> ((2, 0.2), (3, 0.18)), sorted by n."""
    try:
        pairs = tuple(sorted((int(n), float(limit)) for n, limit in dict(value).items()))
    except (TypeError, ValueError):
        raise UserError(f"{option}: expected a mapping of n-gram size to fraction, e.g. {{2: 0.2}}") from None
    for n, limit in pairs:
        if n < 1:
            raise UserError(f"{option}: n-gram size {n} must be >= 1")
        _check_fraction(f"{option}[{n}]", limit)
    return pairs


class GopherRepetitionFilter(Filter):
    """Gopher's repetition heuristics: duplicated paragraphs and lines, the most frequent short n-grams, and the
    share of characters inside repeated long n-grams. Pass null for any rule to turn it off."""

    name = "gopher_repetition"

    def __init__(
        self,
        dup_line_frac: float | None = 0.3,
        dup_para_frac: float | None = 0.3,
        dup_line_char_frac: float | None = 0.2,
        dup_para_char_frac: float | None = 0.2,
        top_n_grams: dict[int, float] | None = None,
        dup_n_grams: dict[int, float] | None = None,
    ):
        for option in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac"):
            _check_fraction(option, locals()[option])
        self.dup_line_frac, self.dup_para_frac = dup_line_frac, dup_para_frac
        self.dup_line_char_frac, self.dup_para_char_frac = dup_line_char_frac, dup_para_char_frac
        self.top_n_grams = _ngram_pairs(
            {2: 0.20, 3: 0.18, 4: 0.16} if top_n_grams is None else top_n_grams, "top_n_grams"
        )
        self.dup_n_grams = _ngram_pairs(
            {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10} if dup_n_grams is None else dup_n_grams,
            "dup_n_grams",
        )

    def check(self, doc: Document) -> str | None:
        n_chars = len(doc.text)
        if n_chars == 0:
            return None
        for units, (n_dup, dup_chars), frac, char_frac, label in (
            (doc.paragraphs, doc.duplicate_paragraphs, self.dup_para_frac, self.dup_para_char_frac, "para"),
            (doc.non_empty_lines, doc.duplicate_lines, self.dup_line_frac, self.dup_line_char_frac, "line"),
        ):
            if units and _exceeds(n_dup / len(units), frac):
                return self.reason(f"dup_{label}_frac")
            if _exceeds(dup_chars / n_chars, char_frac):
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


# --------------------------------------------------------------------------------------------------------------
# C4 (Raffel et al. 2020; TFDS c4_utils.clean_page)

CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
TERMINAL_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_RE = re.compile(r"terms of use|privacy policy|cookie policy|uses cookies|use of cookies|use cookies")
# One sentence end: terminal marks, optional closing quotes/brackets, then whitespace or the end of the line.
SENTENCE_END_RE = re.compile(r"[.!?]+['\"”’)\]]*(?=\s|$)")


class C4Filter(Filter):
    """C4's line cleaner: keeps lines that end in terminal punctuation, have >= 3 words and mention neither
    javascript nor a cookie/terms policy; drops the page on "lorem ipsum", a curly bracket, or when fewer than
    5 sentences survive. Rewrites the text with the kept (stripped) lines.

    As in C4, "lorem ipsum" and "{" are looked for in lines that survive the line rules before them; sentences
    are counted with a punctuation regex instead of NLTK's punkt (at least one per kept line).
    """

    name = "c4"

    def __init__(
        self,
        filter_no_terminal_punct: bool = True,
        min_num_sentences: int | None = 5,
        min_words_per_line: int | None = 3,
        max_word_length: int | None = 1000,
        remove_citations: bool = True,
        filter_lorem_ipsum: bool = True,
        filter_javascript: bool = True,
        filter_curly_bracket: bool = True,
        filter_policy: bool = True,
    ):
        self.filter_no_terminal_punct = filter_no_terminal_punct
        self.min_num_sentences = min_num_sentences
        self.min_words_per_line = min_words_per_line
        self.max_word_length = max_word_length
        self.remove_citations = remove_citations
        self.filter_lorem_ipsum = filter_lorem_ipsum
        self.filter_javascript = filter_javascript
        self.filter_curly_bracket = filter_curly_bracket
        self.filter_policy = filter_policy

    def check(self, doc: Document) -> str | None:
        return self.apply(doc)[1]

    def apply(self, doc: Document) -> tuple[str | None, str | None]:
        kept: list[str] = []
        n_sentences = 0
        min_sentences = self.min_num_sentences or 0
        min_words = self.min_words_per_line or 0
        max_word = self.max_word_length
        for raw_line in doc.lines:
            line = raw_line.strip()
            if max_word and len(line) > max_word and any(len(word) > max_word for word in line.split()):
                continue
            if self.remove_citations and "[" in line:
                line = CITATION_RE.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(TERMINAL_PUNCTUATION) or line.endswith("...")):
                continue
            if min_words and len(line.split(maxsplit=min_words - 1)) < min_words:
                continue
            lowered = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in lowered:
                return None, self.reason("lorem_ipsum")
            if self.filter_javascript and "javascript" in lowered:
                continue
            if self.filter_curly_bracket and "{" in line:
                return None, self.reason("curly_bracket")
            if self.filter_policy and POLICY_RE.search(lowered):
                continue
            if n_sentences < min_sentences:
                n_sentences += max(1, len(SENTENCE_END_RE.findall(line)))
            if line:
                kept.append(line)
        if n_sentences < min_sentences:
            return None, self.reason("too_few_sentences")
        new_text = "\n".join(kept)
        return (None if new_text == doc.text else new_text), None


# --------------------------------------------------------------------------------------------------------------
# FineWeb (Penedo et al. 2024)

LINE_STOP_CHARS = (".", "'", '"', "!", "?")


class FineWebFilter(Filter):
    """FineWeb's extra quality rules: enough lines ending in punctuation, not mostly short lines, little text in
    duplicated lines, and not a list (line breaks per word)."""

    name = "fineweb"

    def __init__(
        self,
        line_punct_thr: float | None = 0.12,
        line_punct_exclude_zero: bool = False,
        short_line_thr: float | None = 0.67,
        short_line_length: int = 30,
        char_duplicates_ratio: float | None = 0.1,
        new_line_ratio: float | None = 0.3,
    ):
        for option in ("line_punct_thr", "short_line_thr", "char_duplicates_ratio"):
            _check_fraction(option, locals()[option])
        self.line_punct_thr = line_punct_thr
        self.line_punct_exclude_zero = line_punct_exclude_zero
        self.short_line_thr = short_line_thr
        self.short_line_length = short_line_length
        self.char_duplicates_ratio = char_duplicates_ratio
        self.new_line_ratio = new_line_ratio

    def check(self, doc: Document) -> str | None:
        lines = doc.non_empty_lines
        n_lines = max(len(lines), 1)
        if self.line_punct_thr is not None:
            ratio = sum(1 for line in lines if line.endswith(LINE_STOP_CHARS)) / n_lines
            if ratio <= self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
                return self.reason("line_punct_ratio")
        if self.short_line_thr is not None:
            short = self.short_line_length
            if sum(1 for line in lines if len(line) <= short) / n_lines >= self.short_line_thr:
                return self.reason("short_line_ratio")
        if self.char_duplicates_ratio is not None:
            text = doc.text
            n_chars = len(text) - text.count("\n")
            if n_chars and doc.duplicate_lines[1] / n_chars >= self.char_duplicates_ratio:
                return self.reason("char_dup_ratio")
        if self.new_line_ratio is not None:
            # Breaks between non-empty lines, so blank lines between paragraphs do not make prose a "list".
            n_words = len(doc.words)
            if not n_words or (len(lines) - 1) / n_words > self.new_line_ratio:
                return self.reason("list_ratio")
        return None


# --------------------------------------------------------------------------------------------------------------
# Language

DEFAULT_LANGUAGE_CANDIDATES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "tr", "zh", "ja")


class LanguageFilter(Filter):
    """Keeps documents in `languages`, identified offline by lingua among a few `candidates` (fewer candidates =
    faster and fewer false friends). The first `max_chars` characters are enough to tell.

    Drop reason `language:<code>` for a confident other language, `language:unknown` when the best guess is below
    `min_confidence`. The best guess and its confidence land in `doc.metadata` (`language`, `language_score`),
    which `FilterBatch` returns as columns. `languages` empty or null keeps every document and only annotates.
    """

    name = "language"

    def __init__(
        self,
        languages: Sequence[str] | None = ("en",),
        min_confidence: float = 0.65,
        max_chars: int | None = 2000,
        candidates: Sequence[str] | None = None,
        low_accuracy: bool = False,
    ):
        _check_fraction("min_confidence", min_confidence)
        if isinstance(languages, str):
            languages = [languages]
        self.languages = tuple(code.lower() for code in languages or ())
        self.min_confidence = min_confidence
        self.max_chars = max_chars
        wanted = [code.lower() for code in (candidates or DEFAULT_LANGUAGE_CANDIDATES)]
        self.candidates = tuple(dict.fromkeys([*wanted, *self.languages]))
        self.low_accuracy = low_accuracy
        self._lingua_languages()  # fail on a bad code at config time, not in a worker
        self._detector = None

    def _lingua_languages(self) -> list:
        from lingua import IsoCode639_1, Language

        found = []
        for code in self.candidates:
            iso = getattr(IsoCode639_1, code.upper(), None)
            if iso is None or not isinstance(iso, IsoCode639_1):
                raise UserError(f"language filter: unknown ISO 639-1 language code {code!r} (e.g. en, de, fr)")
            found.append(Language.from_iso_code_639_1(iso))
        if len(found) < 2:
            raise UserError("language filter: give at least two candidates to choose between")
        return found

    @property
    def detector(self):
        # Built on first use in each process (lingua's detector cannot be pickled), models loaded lazily by lingua.
        if self._detector is None:
            from lingua import LanguageDetectorBuilder

            builder = LanguageDetectorBuilder.from_languages(*self._lingua_languages())
            if self.low_accuracy:
                builder = builder.with_low_accuracy_mode()
            self._detector = builder.build()
        return self._detector

    def detect(self, text: str) -> tuple[str | None, float]:
        """(ISO 639-1 code or None, confidence in [0, 1]) of the most likely candidate language."""
        if self.max_chars:
            text = text[: self.max_chars]
        values = self.detector.compute_language_confidence_values(text)
        if not values or values[0].value <= 0:
            return None, 0.0
        best = values[0]
        return best.language.iso_code_639_1.name.lower(), float(best.value)

    def check(self, doc: Document) -> str | None:
        language, score = self.detect(doc.text)
        doc.metadata["language"], doc.metadata["language_score"] = language, score
        if not self.languages:
            return None
        if language is None or score < self.min_confidence:
            return self.reason("unknown")
        if language not in self.languages:
            return self.reason(language)
        return None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_detector": None}


# --------------------------------------------------------------------------------------------------------------
# Bad words

# Deliberately short: unambiguous explicit-content spam markers only. Real use passes a curated list via `path`
# (e.g. the LDNOOBW lists C4 used), one word or phrase a line.
DEFAULT_BAD_WORDS = (
    "blowjob",
    "bukkake",
    "camgirl",
    "cumshot",
    "gangbang",
    "hentai",
    "milf",
    "pornhub",
    "xhamster",
    "xvideos",
    "xxx",
)


def _read_word_list(path: str | Path) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"bad_words: word list not found: {path}")
    lines = file.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class BadWordsFilter(Filter):
    """Drops documents whose share of listed words (case-insensitive, whole words) exceeds `max_ratio`
    (0 = any occurrence). The list is `words`, the lines of the file at `path`, or both; with neither, a tiny
    built-in list of explicit-content markers."""

    name = "bad_words"

    def __init__(self, words: Sequence[str] | None = None, path: str | None = None, max_ratio: float = 0.0):
        _check_fraction("max_ratio", max_ratio)
        entries = list(words or [])
        if path is not None:
            entries += _read_word_list(path)
        if words is None and path is None:
            entries = list(DEFAULT_BAD_WORDS)
        entries = sorted({entry.strip().lower() for entry in entries if entry.strip()})
        if not entries:
            raise UserError("bad_words: the word list is empty")
        self.words, self.path, self.max_ratio = tuple(entries), path, max_ratio
        # Single words are looked up in a set against the document's words (fast); phrases and entries with
        # symbols ("f*ck") go through one regex.
        self._single = frozenset(entry for entry in entries if WORD_RE.fullmatch(entry))
        phrases = sorted((entry for entry in entries if entry not in self._single), key=len, reverse=True)
        body = "|".join(r"\s+".join(map(re.escape, phrase.split())) for phrase in phrases)
        self._phrase_re = re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE) if phrases else None

    def check(self, doc: Document) -> str | None:
        hits = sum(map(self._single.__contains__, map(str.lower, doc.words)))
        if self._phrase_re is not None:
            hits += len(self._phrase_re.findall(doc.text))
        if hits and hits / max(len(doc.words), 1) > self.max_ratio:
            return self.reason("ratio")
        return None


# --------------------------------------------------------------------------------------------------------------
# Custom rules


class RegexFilter(Filter):
    """Drops documents where `pattern` matches (`drop_if="match"`) or does not (`"no_match"`)."""

    def __init__(self, pattern: str, drop_if: str = "match", name: str | None = None, ignore_case: bool = False):
        if drop_if not in ("match", "no_match"):
            raise UserError(f"regex filter: drop_if must be 'match' or 'no_match', not {drop_if!r}")
        try:
            self._compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as error:
            raise UserError(f"regex filter: invalid pattern {pattern!r}: {error}") from None
        self.pattern, self.drop_if, self.ignore_case = pattern, drop_if, ignore_case
        self.name = name or "regex"
        self._drop_reason = self.reason(drop_if)

    def check(self, doc: Document) -> str | None:
        matched = self._compiled.search(doc.text) is not None
        return self._drop_reason if matched == (self.drop_if == "match") else None


def import_callable(spec: str) -> Callable:
    """ "package.module:function" -> the function."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UserError(f"callable filter: expected 'module:function', got {spec!r}")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise UserError(f"callable filter: cannot import {spec!r}: {error}") from None
    if not callable(target):
        raise UserError(f"callable filter: {spec!r} is not callable")
    return target


class CallableFilter(Filter):
    """Your own rule: `fn(text) -> bool` (True keeps), given as a function or as "module:function" from a config.
    A function object must be importable by name (module level, no lambda) so worker processes can receive it."""

    def __init__(self, fn: Callable[[str], bool] | str, name: str | None = None):
        if isinstance(fn, str) and imports_code():
            import_callable(fn)  # fail now, not in a worker
        elif isinstance(fn, str):
            check_code_exists(fn, "callable filter")  # a config check that must run nothing (a dry run)
        else:
            if not callable(fn):
                raise UserError(f"callable filter: fn must be a function or 'module:function', got {fn!r}")
            try:
                pickle.dumps(fn)
            except (pickle.PicklingError, AttributeError, TypeError):
                raise UserError(
                    f"callable filter: {fn!r} cannot be sent to worker processes; define it at module level "
                    "or pass 'module:function'"
                ) from None
        self.fn = fn
        self.name = name or (fn.rpartition(":")[2] if isinstance(fn, str) else getattr(fn, "__name__", "callable"))
        self._resolved: Callable[[str], bool] | None = None

    def check(self, doc: Document) -> str | None:
        if self._resolved is None:
            self._resolved = import_callable(self.fn) if isinstance(self.fn, str) else self.fn
        return None if self._resolved(doc.text) else self.reason("rejected")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_resolved": None}


# --------------------------------------------------------------------------------------------------------------
# Registry, presets and the batch function

FILTERS: dict[str, type[Filter]] = {
    "length": LengthFilter,
    "gopher_quality": GopherQualityFilter,
    "gopher_repetition": GopherRepetitionFilter,
    "c4": C4Filter,
    "fineweb": FineWebFilter,
    "language": LanguageFilter,
    "bad_words": BadWordsFilter,
    "regex": RegexFilter,
    "callable": CallableFilter,
}

FILTER_PRESETS: dict[str, list[str | dict]] = {
    "gopher": ["gopher_quality", "gopher_repetition"],
    "c4": ["c4"],
    "fineweb": ["fineweb"],
    # FineWeb's own order (after URL filtering, extraction and language id): repetition, quality, C4 with its
    # terminal-punctuation line rule off (FineWeb found it removes too much), then FineWeb's rules.
    "web": ["gopher_repetition", "gopher_quality", {"c4": {"filter_no_terminal_punct": False}}, "fineweb"],
}


def build_filters(steps: Sequence[str | dict | Filter]) -> list[Filter]:
    """Filters from a config list: a preset ("web"), a name ("c4") or {"name": {option: value}}."""
    return build_steps(steps, FILTERS, FILTER_PRESETS, kind="filter", base=Filter)


def _filter_list(filters: Sequence[Filter | str | dict]) -> list[Filter]:
    if all(isinstance(step, Filter) for step in filters):
        return list(filters)
    return build_filters(filters)


class FilterBatch:
    """The batch function: `{text_field: [...]} -> {text_field: [...], "drop_reason": [...]}`.

    Filters run in order; the first failing rule decides a document's drop reason and later filters skip it.
    Kept documents carry the text as rewritten by filters (C4 removes lines); dropped ones keep their input
    text. With a `LanguageFilter` present, `language` and `language_score` columns are added (None where a
    document was dropped before language id ran). Picklable, so `Dataset.map(batched=True, num_proc=N)` works.
    """

    def __init__(self, filters: Sequence[Filter | str | dict], text_field: str = "text"):
        self.filters = _filter_list(filters)
        self.text_field = text_field
        self.annotates_language = any(isinstance(step, LanguageFilter) for step in self.filters)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self.text_field not in batch:
            raise UserError(f"no column {self.text_field!r} to filter; columns are {sorted(batch)}")
        texts, reasons = [], []
        languages: list[str | None] = []
        scores: list[float | None] = []
        for text in batch[self.text_field]:
            doc = Document(text or "")
            reason = None
            for step in self.filters:
                new_text, reason = step.apply(doc)
                if reason is not None:
                    break
                if new_text is not None:
                    doc = Document(new_text, doc.metadata)
            texts.append(text if reason is not None else doc.text)
            reasons.append(reason)
            if self.annotates_language:
                languages.append(doc.metadata.get("language"))
                scores.append(doc.metadata.get("language_score"))
        out: dict[str, list] = {self.text_field: texts, "drop_reason": reasons}
        if self.annotates_language:
            out["language"], out["language_score"] = languages, scores
        return out

    def __repr__(self) -> str:
        return f"FilterBatch({self.filters!r}, text_field={self.text_field!r})"


def count_drop_reasons(reasons: Iterable[str | None]) -> dict[str, int]:
    """{reason: documents} for the dropped ones (None = kept is left out), most frequent first."""
    return dict(Counter(reason for reason in reasons if reason is not None).most_common())
