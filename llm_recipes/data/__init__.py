"""Training data: foreign formats converted to TRL's standard columns, loading, mixtures, packing, preferences.

    from llm_recipes.data import load_training_data, to_standard_columns, load_dataset_source

Cleaning a raw corpus (readers, normalizers, filters, PII, dedup, augmentation) is `llm_recipes.corpus`.
Names are imported on first use, so `import llm_recipes.data` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

EXPORTS = {
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
