"""Words per language: what the word-based rules (Gopher, C4, FineWeb, length, bad words) count.

Splitting on spaces makes a Chinese or Japanese sentence one "word", so every word-based rule misfires on text
written without spaces (all Chinese pages fail Gopher's rules). As FineWeb-2 does (datatrove's per-language word
tokenizers), the language id step's `language` picks a segmenter per document:

    zh        jieba (the segmenter FineWeb-2 uses for Chinese), its dictionary inside the package
    ja        SudachiPy, split mode A, with the SudachiDict core dictionary (FineWeb-2 uses Sudachi through spaCy)
    fr, it    runs of word characters, with an elided article or pronoun split off (`l'homme` -> `l'`, `homme`),
              as spaCy splits them, so FineWeb-2's stop words `l'` and `d'` are found
    others    runs of word characters joined by apostrophes, hyphens or dots (`WORD_RE`): the English default

A segmenter's tokens that hold no word character (punctuation) are not words; the ones that are not ASCII
punctuation (`，`, `。`, `「`, `»`) still count against Gopher's "words with a letter" share, as in datatrove,
whose thresholds FineWeb-2 calibrated on them. Segmenters are built once per process, on first use.
"""

from __future__ import annotations

import logging
import re
import string
from functools import cache

# A word: letters/digits/underscore, optionally joined by an apostrophe, hyphen or dot ("don't", "e-mail", "3.14").
WORD_RE = re.compile(r"\w+(?:['’.\-]\w+)*")
# A whitespace-delimited token with no word character at all: "|", "»", "--", "•". Searched in " " + text + " "
# (a leading \s is much faster to scan for than a look-behind).
SYMBOL_TOKEN_RE = re.compile(r"\s[^\w\s]+(?=\s)")
# French and Italian: up to five letters and an apostrophe before a letter are an elided word of their own
# (l', d', qu', dell', quell'); longer runs (aujourd'hui) stay one word.
ELISION_WORD_RE = re.compile(r"[^\W\d_]{1,5}['’](?=[^\W\d_])|\w+(?:['’.\-]\w+)*")
HAS_WORD_CHAR_RE = re.compile(r"\w")
ASCII_PUNCTUATION = frozenset(string.punctuation)
# Sudachi refuses inputs over 49,149 UTF-8 bytes; chunks stay well below (at most 3 bytes per character here).
SUDACHI_MAX_CHARS = 12_000


def language_code(language: str | None) -> str | None:
    """ "zh", "zh-Hans", "ZH_cn" -> "zh"; None and "" -> None."""
    if not language:
        return None
    return re.split(r"[-_]", language, maxsplit=1)[0].lower()


class Segmenter:
    """Space-separated writing: words are `pattern` matches, symbols whitespace-delimited non-word tokens, and a
    line's words (C4's rule) its whitespace-separated parts."""

    name = "words"
    # scripts with full-width sentence marks (。！？): C4 and FineWeb look for them at line and sentence ends
    full_width_punctuation = False

    def __init__(self, pattern: re.Pattern = WORD_RE):
        self.pattern = pattern

    def tokens(self, text: str) -> list[str] | None:
        """Every token, punctuation included, for segmenters that tokenize; None for pattern-based ones."""
        return None

    def words(self, text: str, tokens: list[str] | None = None) -> list[str]:
        return self.pattern.findall(text)

    def symbol_count(self, text: str, tokens: list[str] | None = None) -> int:
        return len(SYMBOL_TOKEN_RE.findall(f" {text} "))

    def line_words(self, line: str, at_least: int) -> int:
        """Words in one line for C4's minimum per line (whitespace-separated here, counted up to `at_least`)."""
        return len(line.split(maxsplit=at_least - 1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class TokenizingSegmenter(Segmenter):
    """A language written without spaces: a tokenizer cuts the text; tokens with a word character are words."""

    full_width_punctuation = True

    def tokens(self, text: str) -> list[str]:
        raise NotImplementedError

    def words(self, text: str, tokens: list[str] | None = None) -> list[str]:
        return [token for token in (self.tokens(text) if tokens is None else tokens) if HAS_WORD_CHAR_RE.search(token)]

    def symbol_count(self, text: str, tokens: list[str] | None = None) -> int:
        return sum(
            1
            for token in (self.tokens(text) if tokens is None else tokens)
            if not HAS_WORD_CHAR_RE.search(token) and not token.isspace() and not set(token) <= ASCII_PUNCTUATION
        )

    def line_words(self, line: str, at_least: int) -> int:
        return len(self.words(line))


class JiebaSegmenter(TokenizingSegmenter):
    """Chinese with jieba's default (precise) mode and its HMM for words missing from the dictionary."""

    name = "jieba"

    def __init__(self):
        super().__init__()
        # imported here: corpus worker processes of a run without Chinese stay ~10 MB lighter without jieba/Sudachi
        import jieba

        jieba.setLogLevel(logging.WARNING)  # jieba prints four lines to stderr when it loads its dictionary
        self._tokenizer = jieba.Tokenizer()

    def tokens(self, text: str) -> list[str]:
        return self._tokenizer.lcut(text)


class SudachiSegmenter(TokenizingSegmenter):
    """Japanese with SudachiPy's shortest units (split mode A, as spaCy's Japanese tokenizer that FineWeb-2 used)."""

    name = "sudachi"

    def __init__(self):
        super().__init__()
        from sudachipy import Dictionary, SplitMode  # as jieba above: only for Japanese documents

        self._tokenizer = Dictionary(dict="core").tokenizer(mode=SplitMode.A)

    def tokens(self, text: str) -> list[str]:
        out: list[str] = []
        for chunk in _chunks(text, SUDACHI_MAX_CHARS):
            out += [morpheme.surface() for morpheme in self._tokenizer.tokenize(chunk)]
        return out


def _chunks(text: str, size: int) -> list[str]:
    """`text` cut, in order, into pieces of at most `size` characters: at line ends, within a line only when the
    line alone is longer than a piece."""
    if len(text) <= size:
        return [text]
    pieces: list[str] = []
    current: list[str] = []
    length = 0
    for line in text.splitlines(keepends=True):
        while line:
            if length + len(line) <= size:
                current.append(line)
                length += len(line)
                break
            if current:
                pieces.append("".join(current))
                current, length = [], 0
            else:
                pieces.append(line[:size])
                line = line[size:]
    if current:
        pieces.append("".join(current))
    return pieces


SEGMENTER_LANGUAGES = {"zh": JiebaSegmenter, "ja": SudachiSegmenter}
ELISION_LANGUAGES = frozenset({"fr", "it"})
DEFAULT_SEGMENTER = Segmenter()


@cache
def segmenter_for(language: str | None) -> Segmenter:
    """The segmenter for an ISO 639-1 code (or None: the default), built once per process."""
    code = language_code(language)
    if code in SEGMENTER_LANGUAGES:
        return SEGMENTER_LANGUAGES[code]()
    if code in ELISION_LANGUAGES:
        return Segmenter(ELISION_WORD_RE)
    return DEFAULT_SEGMENTER
