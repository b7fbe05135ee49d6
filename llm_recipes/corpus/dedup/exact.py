"""Exact dedup: documents whose normalised text hashes the same as an earlier document's are dropped."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash  # a dependency of `datasets` itself

from llm_recipes.corpus.dedup.columns import check_text_column, map_to_numpy, preview_text
from llm_recipes.corpus.dedup.hashing import normalize_for_hash

if TYPE_CHECKING:
    from datasets import Dataset


class ExactHashBatch:
    """Batch function: `{text_field: [...]}` -> `{"exact_hash": uint64 array}` (xxh3 of `normalize_for_hash`)."""

    def __init__(self, text_field: str = "text"):
        self.text_field = text_field

    def __call__(self, batch: dict[str, list]) -> dict[str, np.ndarray]:
        keys = (normalize_for_hash(text).encode() for text in batch[self.text_field])
        hashes = np.fromiter(map(xxhash.xxh3_64_intdigest, keys), dtype=np.uint64, count=len(batch[self.text_field]))
        return {"exact_hash": hashes}


@dataclass
class ExactDedupStats:
    documents: int
    duplicates: int
    kept: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def exact_dedup(ds: Dataset, text_field: str = "text", num_proc: int | None = None) -> tuple[Dataset, ExactDedupStats]:
    """Drop documents whose normalised text equals an earlier document's; the first occurrence is kept."""
    from datasets import Value  # noqa: PLC0415  corpus workers import this module: no datasets

    check_text_column(ds, text_field)
    hashes = map_to_numpy(ds, ExactHashBatch(text_field), "exact_hash", num_proc, Value("uint64"))
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    keep = np.sort(first)
    dropped = np.setdiff1d(np.arange(len(ds)), keep)
    examples = []
    for row in dropped[:3].tolist():
        original = int(first[inverse[row]])
        examples.append({"kept": original, "dropped": row, "text": preview_text(ds[original][text_field])})
    stats = ExactDedupStats(documents=len(ds), duplicates=int(dropped.size), kept=int(keep.size), examples=examples)
    return ds.select(keep), stats
