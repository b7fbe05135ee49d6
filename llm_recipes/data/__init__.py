"""The data vocabulary: reading corpora, cleaning, deduplicating, converting formats and splitting.

    from llm_recipes.data import read_corpus, build_filters, FilterBatch, near_dedup, MinHashConfig

Every cleaning step is a picklable batch function (`dict[str, list] -> dict[str, list]`), so it runs under
`Dataset.map(batched=True, num_proc=N)` here and under a cluster engine's `map_batches` for bigger corpora.
Names are imported on first use, so `import llm_recipes.data` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

EXPORTS = {
    "corpus_io": ["read_corpus", "ReadReport"],
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
    "corpus_steps": ["CORPUS_PRESETS", "StepStats", "build_steps", "run_steps"],
    "splits": ["split_corpus", "save_splits"],
    "formats": ["detect_format", "to_standard_columns"],
    "io": ["load_dataset_source"],
    "loading": ["load_training_data"],
}
_WHERE = {name: module for module, names in EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'llm_recipes.data' has no attribute '{name}'")
    return getattr(importlib.import_module(f"llm_recipes.data.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
