"""Rules a config brings: a list of bad words, a regex, or your own function."""

from __future__ import annotations

import importlib
import pickle
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from llm_recipes.configs.code import check_code_exists, imports_code
from llm_recipes.corpus.filters.document import Document, Filter, check_fraction
from llm_recipes.corpus.filters.words import WORD_RE
from llm_recipes.errors import UserError

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
        check_fraction("max_ratio", max_ratio)
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
