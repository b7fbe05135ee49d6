"""Corpus cleaning: raw text in, a cleaned, deduplicated, split `datasets` dataset out (the clean-corpus stage).

    from llm_recipes.corpus import read_corpus, build_filters, FilterBatch, near_dedup, MinHashConfig

    config.py       CleanCorpusArguments, the stage's settings
    readers.py      files, globs, folders, saved datasets, Hub ids -> `id`/`text`/`source` rows, with a read report
    normalize.py    text normalizers (mojibake, Unicode forms, whitespace, boilerplate lines) and NormalizeBatch
    filters/        quality filters (length, Gopher, C4, FineWeb), repetition, language id, custom rules; FilterBatch
    pii.py          e-mail, phone and IP redaction
    dedup/          exact and MinHash near-duplicate removal, cross-split dedup, decontamination
    augment.py      EDA-style augmentation
    steps.py        the pipeline as data: steps from a config, run over a Dataset with per-step stats
    parallel.py     a batch function on spawned worker processes (`map_batches`)
    checkpoints.py  per-step checkpoints, so an interrupted run resumes
    splits.py       train/validation/test splits, written as `save_to_disk` or Parquet shards
    report.py       what each step removed: JSON, a table and a chart
    engines/        the same steps on a Ray cluster (`engine: ray`): Ray Data maps, group-bys, Parquet

Every cleaning step is a picklable batch function (`dict[str, list] -> dict[str, list]`), so it runs under
`Dataset.map(batched=True, num_proc=N)` here and under a cluster engine's `map_batches` for bigger corpora.
Training-data formats (alpaca, sharegpt, preferences, mixtures, packing) are `llm_recipes.data`'s. Names are
imported on first use, so `import llm_recipes.corpus` stays cheap: worker processes import this package to reach
their batch function's module and must not load `datasets`.
"""

from __future__ import annotations

import importlib
from typing import Any

EXPORTS = {
    "config": ["CORPUS_OUTPUT_FORMATS", "CleanCorpusArguments"],
    "readers": ["read_corpus", "ReadReport"],
    "normalize": ["NORMALIZERS", "NORMALIZER_PRESETS", "NormalizeBatch", "build_normalizers"],
    "filters": [
        "FILTERS",
        "FILTER_PRESETS",
        "Document",
        "Filter",
        "FilterBatch",
        "build_filters",
        "count_drop_reasons",
    ],
    "pii": ["RedactPIIBatch", "redact_pii"],
    "augment": ["AugmentBatch"],
    "dedup": [
        "ExactHashBatch",
        "MinHashBatch",
        "MinHashConfig",
        "decontaminate",
        "dedup_across_splits",
        "exact_dedup",
        "minhash_signatures",
        "near_dedup",
        "near_duplicate_clusters",
    ],
    "steps": ["CORPUS_PRESETS", "StepStats", "build_steps", "run_steps"],
    "splits": ["split_corpus", "save_splits"],
}
_WHERE = {name: module for module, names in EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'llm_recipes.corpus' has no attribute '{name}'")
    return getattr(importlib.import_module(f"llm_recipes.corpus.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
