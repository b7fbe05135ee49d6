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
  "words with a letter" share, as whitespace-split words would in the paper. A document's detected language
  picks its segmenter (`words.py`: jieba for Chinese, Sudachi for Japanese) and, for Gopher and FineWeb, the
  thresholds FineWeb-2 published for it (`calibration.py`); English keeps the rules above.
- Line rules look at non-empty, stripped lines, so a blank line between paragraphs is neither a "duplicate line"
  nor a "short line" (datatrove counts empty lines in both, which drops ordinary paragraph-formatted text).
- n-gram character fractions are measured over word characters (repeated occurrences beyond the first, overlaps
  counted once); datatrove divides by the whole text length and joins n n-grams instead of n words.
- FineWeb's duplicated-line character threshold is 0.1 as published in the FineWeb write-up (datatrove's code
  default is 0.01).

Every drop reason is `"<filter>:<rule>"` (e.g. `gopher_quality:mean_word_length`), so a run can report what each
rule removed (`count_drop_reasons`).

    document.py    `Document` (words, lines, paragraphs: computed once, shared by every filter), the `Filter` base
                   and `CalibratedFilter` (thresholds per language)
    words.py       word segmenters per language
    calibration.py FineWeb-2's per-language thresholds
    quality.py     length, Gopher quality, C4, FineWeb
    repetition.py  Gopher repetition (duplicate lines and paragraphs, repeated n-grams)
    language.py    language id (lingua)
    custom.py      bad words, regex, your own function
    batch.py       the registry, presets and `FilterBatch`
"""

from llm_recipes.corpus.filters.batch import (
    FILTER_PRESETS,
    FILTERS,
    FilterBatch,
    build_filters,
    calibration_warning,
    count_drop_reasons,
    uncalibrated_languages,
)
from llm_recipes.corpus.filters.custom import (
    DEFAULT_BAD_WORDS,
    BadWordsFilter,
    CallableFilter,
    RegexFilter,
    import_callable,
)
from llm_recipes.corpus.filters.document import CalibratedFilter, Document, Filter
from llm_recipes.corpus.filters.language import DEFAULT_LANGUAGE_CANDIDATES, LanguageFilter
from llm_recipes.corpus.filters.quality import C4Filter, FineWebFilter, GopherQualityFilter, LengthFilter
from llm_recipes.corpus.filters.repetition import GopherRepetitionFilter
from llm_recipes.corpus.filters.words import WORD_RE, segmenter_for

__all__ = [
    "DEFAULT_BAD_WORDS",
    "DEFAULT_LANGUAGE_CANDIDATES",
    "FILTERS",
    "FILTER_PRESETS",
    "WORD_RE",
    "BadWordsFilter",
    "C4Filter",
    "CalibratedFilter",
    "CallableFilter",
    "Document",
    "Filter",
    "FilterBatch",
    "FineWebFilter",
    "GopherQualityFilter",
    "GopherRepetitionFilter",
    "LanguageFilter",
    "LengthFilter",
    "RegexFilter",
    "build_filters",
    "calibration_warning",
    "count_drop_reasons",
    "import_callable",
    "segmenter_for",
    "uncalibrated_languages",
]
