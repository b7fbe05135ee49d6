"""Quality rules over a whole document: length bounds, Gopher's quality heuristics (Rae et al. 2021), C4's line
cleaner (Raffel et al. 2020) and FineWeb's extra rules (Penedo et al. 2024)."""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Sequence

from llm_recipes.corpus.filters.calibration import CALIBRATIONS
from llm_recipes.corpus.filters.document import (
    HAS_LETTER_RE,
    CalibratedFilter,
    Document,
    Filter,
    below,
    check_fraction,
    exceeds,
)

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
        if below(n_chars, self.min_chars):
            return self.reason("min_chars")
        if exceeds(n_chars, self.max_chars):
            return self.reason("max_chars")
        if self.min_words is not None or self.max_words is not None:
            n_words = len(doc.words)
            if below(n_words, self.min_words):
                return self.reason("min_words")
            if exceeds(n_words, self.max_words):
                return self.reason("max_words")
        if self.min_lines is not None or self.max_lines is not None:
            n_lines = len(doc.non_empty_lines)
            if below(n_lines, self.min_lines):
                return self.reason("min_lines")
            if exceeds(n_lines, self.max_lines):
                return self.reason("max_lines")
        return None


# --------------------------------------------------------------------------------------------------------------
# Gopher (Rae et al. 2021, appendix A)

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
BULLETS = ("•", "-", "*", "‣", "◦", "●", "▪", "·")
ELLIPSES = ("...", "…")
# Chinese and Japanese sentence ends (full-width marks and closing quotes), for C4's and FineWeb's line rules
FULL_WIDTH_STOPS = ("。", "！", "？", "．", "」", "』", "”")


class GopherQualityFilter(CalibratedFilter):
    """Gopher's quality heuristics: document length, mean word length, symbols, bullets, letters, stop words.

    Word lengths, the share of words with a letter and the stop words are calibrated per language (FineWeb-2)."""

    name = "gopher_quality"
    calibrations = CALIBRATIONS["gopher_quality"]

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
        language_thresholds: dict[str, dict] | None = None,
    ):
        for option in ("max_bullet_lines_ratio", "max_ellipsis_lines_ratio", "min_alpha_words_ratio"):
            check_fraction(option, locals()[option])
        self.min_doc_words, self.max_doc_words = min_doc_words, max_doc_words
        self.min_avg_word_length, self.max_avg_word_length = min_avg_word_length, max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio = max_bullet_lines_ratio
        self.max_ellipsis_lines_ratio = max_ellipsis_lines_ratio
        self.min_alpha_words_ratio = min_alpha_words_ratio
        self.min_stop_words = min_stop_words
        self.stop_words = tuple(GOPHER_STOP_WORDS if stop_words is None else stop_words)
        # Sentence-initial and shouted forms count too ("The ..."), without lowercasing every word; an elided
        # stop word (French "l'") with either apostrophe.
        self._stop_set = {
            form
            for word in self.stop_words
            for spelling in {word, word.replace("'", "’")}
            for form in (spelling, spelling.capitalize(), spelling.upper())
        }
        self._set_language_thresholds(language_thresholds)

    def check(self, doc: Document) -> str | None:
        rules = self.for_language(doc.language)
        if rules is not self:
            return rules.check(doc)
        text, words = doc.text, doc.words
        n_words = len(words)
        if n_words == 0 or below(n_words, self.min_doc_words):
            return self.reason("min_doc_words")
        if exceeds(n_words, self.max_doc_words):
            return self.reason("max_doc_words")

        mean_length = doc.word_chars / n_words
        if below(mean_length, self.min_avg_word_length) or exceeds(mean_length, self.max_avg_word_length):
            return self.reason("mean_word_length")

        if exceeds(text.count("#") / n_words, self.max_symbol_word_ratio):
            return self.reason("hash_ratio")
        if exceeds((text.count("...") + text.count("…")) / n_words, self.max_symbol_word_ratio):
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
            n_tokens = n_words + doc.symbols
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


# --------------------------------------------------------------------------------------------------------------
# C4 (Raffel et al. 2020; TFDS c4_utils.clean_page)

CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
TERMINAL_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_RE = re.compile(r"terms of use|privacy policy|cookie policy|uses cookies|use of cookies|use cookies")
# One sentence end: terminal marks, optional closing quotes/brackets, then whitespace or the end of the line.
SENTENCE_END_RE = re.compile(r"[.!?]+['\"”’)\]]*(?=\s|$)")
# ... and in Chinese and Japanese, also full-width marks with their closing quotes, followed by anything
FULL_WIDTH_SENTENCE_END_RE = re.compile(r"[.!?]+['\"”’)\]]*(?=\s|$)|[。！？．]+[」』”’）]*")


class C4Filter(CalibratedFilter):
    """C4's line cleaner: keeps lines that end in terminal punctuation, have >= 3 words and mention neither
    javascript nor a cookie/terms policy; drops the page on "lorem ipsum", a curly bracket, or when fewer than
    5 sentences survive. Rewrites the text with the kept (stripped) lines.

    As in C4, "lorem ipsum" and "{" are looked for in lines that survive the line rules before them; sentences
    are counted with a punctuation regex instead of NLTK's punkt (at least one per kept line). In Chinese and
    Japanese, full-width marks (。！？) end lines and sentences too, and a line's words are the segmenter's. Its
    thresholds were tuned on English only (no published per-language values).
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
        language_thresholds: dict[str, dict] | None = None,
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
        self._set_language_thresholds(language_thresholds)

    def check(self, doc: Document) -> str | None:
        return self.apply(doc)[1]

    def apply(self, doc: Document) -> tuple[str | None, str | None]:
        rules = self.for_language(doc.language)
        if rules is not self:
            return rules.apply(doc)
        segmenter = doc.segmenter
        terminal, sentence_end = TERMINAL_PUNCTUATION, SENTENCE_END_RE
        if segmenter.full_width_punctuation:
            terminal, sentence_end = TERMINAL_PUNCTUATION + FULL_WIDTH_STOPS, FULL_WIDTH_SENTENCE_END_RE
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
            if self.filter_no_terminal_punct and (not line.endswith(terminal) or line.endswith("...")):
                continue
            if min_words and segmenter.line_words(line, min_words) < min_words:
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
                n_sentences += max(1, len(sentence_end.findall(line)))
            if line:
                kept.append(line)
        if n_sentences < min_sentences:
            return None, self.reason("too_few_sentences")
        new_text = "\n".join(kept)
        return (None if new_text == doc.text else new_text), None


# --------------------------------------------------------------------------------------------------------------
# FineWeb (Penedo et al. 2024)

LINE_STOP_CHARS = (".", "'", '"', "!", "?")


class FineWebFilter(CalibratedFilter):
    """FineWeb's extra quality rules: enough lines ending in punctuation, not mostly short lines, little text in
    duplicated lines, and not a list (line breaks per word). The punctuation and list thresholds are calibrated per
    language (FineWeb-2); Chinese and Japanese lines may end in full-width marks (。！？)."""

    name = "fineweb"
    calibrations = CALIBRATIONS["fineweb"]

    def __init__(
        self,
        line_punct_thr: float | None = 0.12,
        line_punct_exclude_zero: bool = False,
        short_line_thr: float | None = 0.67,
        short_line_length: int = 30,
        char_duplicates_ratio: float | None = 0.1,
        new_line_ratio: float | None = 0.3,
        language_thresholds: dict[str, dict] | None = None,
    ):
        for option in ("line_punct_thr", "short_line_thr", "char_duplicates_ratio"):
            check_fraction(option, locals()[option])
        self.line_punct_thr = line_punct_thr
        self.line_punct_exclude_zero = line_punct_exclude_zero
        self.short_line_thr = short_line_thr
        self.short_line_length = short_line_length
        self.char_duplicates_ratio = char_duplicates_ratio
        self.new_line_ratio = new_line_ratio
        self._set_language_thresholds(language_thresholds)

    def check(self, doc: Document) -> str | None:
        rules = self.for_language(doc.language)
        if rules is not self:
            return rules.check(doc)
        lines = doc.non_empty_lines
        n_lines = max(len(lines), 1)
        if self.line_punct_thr is not None:
            stops = LINE_STOP_CHARS + FULL_WIDTH_STOPS if doc.segmenter.full_width_punctuation else LINE_STOP_CHARS
            ratio = sum(1 for line in lines if line.endswith(stops)) / n_lines
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
