"""The document every filter reads (`Document`: words, lines, paragraphs, duplicate counts, computed once and
shared), the `Filter` base class, and the threshold helpers the rules share."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from llm_recipes.errors import UserError

# A word: letters/digits/underscore, optionally joined by an apostrophe, hyphen or dot ("don't", "e-mail", "3.14").
WORD_RE = re.compile(r"\w+(?:['’.\-]\w+)*")
# A whitespace-delimited token with no word character at all: "|", "»", "--", "•". Searched in " " + text + " "
# (a leading \s is much faster to scan for than a look-behind).
SYMBOL_TOKEN_RE = re.compile(r"\s[^\w\s]+(?=\s)")
HAS_LETTER_RE = re.compile(r"[^\W\d_]")
PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t\r\f\v]*\n\s*")


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


def check_fraction(option: str, value: float | None) -> None:
    if value is not None and not 0 <= value <= 1:
        raise UserError(f"{option}: {value} must be between 0 and 1 (or null to turn the rule off)")


def exceeds(value: float, limit: float | None) -> bool:
    return limit is not None and value > limit


def below(value: float, limit: float | None) -> bool:
    return limit is not None and value < limit
