"""The document every filter reads (`Document`: words, lines, paragraphs, duplicate counts, computed once and
shared), the `Filter` base class, and the threshold helpers the rules share."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from llm_recipes.corpus.filters.calibration import DEFAULT_CALIBRATED
from llm_recipes.corpus.filters.words import Segmenter, language_code, segmenter_for
from llm_recipes.errors import UserError

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


# the views that depend on how words are cut, recomputed when the language id step names the language
_WORD_VIEWS = ("segmenter", "tokens", "words", "word_lengths", "word_chars", "word_ids", "word_length_array", "symbols")


class Document:
    """A text plus views of it that filters share: computed on first use, then cached for every later filter.

    `metadata["language"]` (set by the language id step, or read from a `language` column) picks how words are cut
    (`words.segmenter_for`): jieba for Chinese, Sudachi for Japanese, runs of word characters otherwise.
    """

    def __init__(self, text: str, metadata: dict[str, Any] | None = None):
        self.text = text
        self.metadata = {} if metadata is None else metadata

    @property
    def language(self) -> str | None:
        return self.metadata.get("language")

    def set_language(self, language: str | None, score: float | None = None) -> None:
        """Record the detected language; word views computed before are recomputed with its segmenter."""
        self.metadata["language"] = language
        if score is not None:
            self.metadata["language_score"] = score
        if "segmenter" in self.__dict__ and self.segmenter is not segmenter_for(language):
            for view in _WORD_VIEWS:
                self.__dict__.pop(view, None)

    @cached_property
    def segmenter(self) -> Segmenter:
        return segmenter_for(self.language)

    @cached_property
    def tokens(self) -> list[str] | None:
        """Every token with punctuation, from segmenters that tokenize (Chinese, Japanese); None otherwise."""
        return self.segmenter.tokens(self.text)

    @cached_property
    def words(self) -> list[str]:
        return self.segmenter.words(self.text, self.tokens)

    @cached_property
    def symbols(self) -> int:
        """Tokens of symbols only ("|", "»", "。"): they count against Gopher's share of words with a letter."""
        return self.segmenter.symbol_count(self.text, self.tokens)

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


class CalibratedFilter(Filter):
    """A filter whose thresholds depend on the language (`calibration.py`): for a document whose detected language
    has published values (`calibrations`), those replace the defaults; the config's `language_thresholds`
    ({language: {option: value}}) replace both. An option the config sets applies to every language it does not
    name in `language_thresholds`. Subclasses start `check`/`apply` with `self.for_language(doc.language)`."""

    calibrations: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __new__(cls, *args: Any, **kwargs: Any):
        self = super().__new__(cls)
        # the options as given (not the defaults): they stay fixed when the thresholds change per language
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs).arguments
            self._options = {key: value for key, value in list(bound.items())[1:]}
        except TypeError:
            self._options = dict(kwargs)  # __init__ reports the mistake
        self._by_language = {}
        return self

    def _set_language_thresholds(self, language_thresholds: Mapping[str, Mapping[str, Any]] | None) -> None:
        if language_thresholds is not None and not isinstance(language_thresholds, Mapping):
            raise UserError(f"{self.name} language_thresholds: expected {{language: {{option: value}}}}")
        self.language_thresholds = {}
        for language, options in (language_thresholds or {}).items():
            if not isinstance(options, Mapping):
                raise UserError(f"{self.name} language_thresholds[{language}]: expected {{option: value}}")
            self.language_thresholds[language_code(language)] = dict(options)
        for language in self.language_thresholds:
            self.for_language(language)  # a bad option or value fails now, not in a worker

    def calibrated_languages(self) -> set[str]:
        """Languages with thresholds of their own: English (the defaults), the published ones, the config's."""
        return {*DEFAULT_CALIBRATED, *self.calibrations, *self.language_thresholds}

    def thresholds_for(self, language: str) -> dict[str, Any]:
        published = {k: v for k, v in self.calibrations.get(language, {}).items() if k not in self._options}
        return {**published, **self.language_thresholds.get(language, {})}

    def for_language(self, language: str | None) -> CalibratedFilter:
        """This filter with `language`'s thresholds (itself when they are the same), built once per language."""
        code = language_code(language)
        if code is None:
            return self
        rules = self._by_language.get(code)
        if rules is None:
            overrides = self.thresholds_for(code)
            rules = self
            if overrides:
                options = {k: v for k, v in self._options.items() if k != "language_thresholds"}
                try:
                    rules = type(self)(**{**options, **overrides})
                except TypeError as error:
                    raise UserError(f"{self.name} thresholds for {code}: {error}".replace("__init__() ", "")) from None
                rules._by_language[code] = rules
            self._by_language[code] = rules
        return rules

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_by_language": {}}  # rebuilt on first use in each process


def check_fraction(option: str, value: float | None) -> None:
    if value is not None and not 0 <= value <= 1:
        raise UserError(f"{option}: {value} must be between 0 and 1 (or null to turn the rule off)")


def exceeds(value: float, limit: float | None) -> bool:
    return limit is not None and value > limit


def below(value: float, limit: float | None) -> bool:
    return limit is not None and value < limit
