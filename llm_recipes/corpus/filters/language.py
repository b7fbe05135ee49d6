"""Language identification as a filter, offline, with lingua."""

from __future__ import annotations

from collections.abc import Sequence

from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

from llm_recipes.corpus.filters.document import Document, Filter, check_fraction
from llm_recipes.errors import UserError

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
        check_fraction("min_confidence", min_confidence)
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
        doc.set_language(language, score)  # later filters count words with this language's segmenter
        if not self.languages:
            return None
        if language is None or score < self.min_confidence:
            return self.reason("unknown")
        if language not in self.languages:
            return self.reason(language)
        return None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_detector": None}
