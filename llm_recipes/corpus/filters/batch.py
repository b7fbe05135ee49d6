"""The filter registry, presets and the batch function that runs a list of filters over a text column."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from llm_recipes.corpus.filters.custom import BadWordsFilter, CallableFilter, RegexFilter
from llm_recipes.corpus.filters.document import CalibratedFilter, Document, Filter
from llm_recipes.corpus.filters.language import LanguageFilter
from llm_recipes.corpus.filters.quality import C4Filter, FineWebFilter, GopherQualityFilter, LengthFilter
from llm_recipes.corpus.filters.repetition import GopherRepetitionFilter
from llm_recipes.corpus.normalize import build_steps
from llm_recipes.errors import UserError

LANGUAGE_COLUMN = "language"  # what the language id step writes and later filters read

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
    document was dropped before language id ran). Without one, a `language` column in the batch (an earlier
    language step's) gives each document its language: words are cut and thresholds chosen for it.
    Picklable, so `Dataset.map(batched=True, num_proc=N)` works.
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
        known = batch.get(LANGUAGE_COLUMN)
        for row, text in enumerate(batch[self.text_field]):
            doc = Document(text or "")
            if known is not None and known[row]:
                doc.metadata["language"] = known[row]
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
                languages.append(doc.language)
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


def uncalibrated_languages(filters: Sequence[Filter]) -> dict[str, list[str]]:
    """{filter name: [languages]}: the languages a language id filter lets through to a later filter that has no
    thresholds of its own for them (it applies its English ones). A language filter that keeps every language lets
    through all its candidates. Filters before the first language filter see no language and are left out."""
    reaching: tuple[str, ...] = ()
    missing: dict[str, set[str]] = {}
    for step in filters:
        if isinstance(step, LanguageFilter):
            reaching = step.languages or step.candidates
        elif isinstance(step, CalibratedFilter) and reaching:
            left = set(reaching) - step.calibrated_languages()
            if left:
                missing.setdefault(step.name, set()).update(left)
    return {name: sorted(languages) for name, languages in missing.items()}


def calibration_warning(filters: Sequence[Filter]) -> str | None:
    """The one line a run prints when it keeps languages that some filter has no thresholds for, else None."""
    missing = uncalibrated_languages(filters)
    if not missing:
        return None
    named = "; ".join(f"{name} ({', '.join(languages)})" for name, languages in missing.items())
    return (
        f"warning: no per-language thresholds for {named}: the English ones apply to those languages "
        "(a filter's language_thresholds sets them)"
    )
