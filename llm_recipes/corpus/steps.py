"""The corpus-cleaning pipeline as data: an ordered list of steps from a config, run over a `datasets.Dataset`.

A config names the steps in order; each entry is one mapping (or a bare name) and becomes one `CorpusStep`:

    steps:
      - normalize: default                       # or a list: [fix_mojibake, nfkc, whitespace, boilerplate_lines]
      - length: {min_words: 20}                  # any filter by name, with its thresholds overridden ...
      - gopher                                   # ... or a filter preset (gopher, c4, fineweb, web)
      - language: {languages: [en], min_confidence: 0.65}
      - filter: [c4, fineweb]                    # several filters reported as one step
      - pii: {}
      - exact_dedup: {}
      - near_dedup: {threshold: 0.8, num_perm: 128, verify: true}
      - decontaminate: {eval_path: data/benchmark.jsonl, ngram: 13}
      - augment: {ops: [deletion, swap], copies: 1}

Every step is a batch function under `Dataset.map(batched=True)` with N worker processes
(`llm_recipes.corpus.parallel.map_batches`), or a dedup over whole-dataset signatures, and reports what it did in a
`StepStats`: documents and characters in and out, drop reasons, details. Selecting the kept rows reads one small
column and runs in this process.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
from datasets import Dataset, Value

from llm_recipes.corpus.augment import AugmentBatch
from llm_recipes.corpus.dedup import MinHashConfig, decontaminate, exact_dedup, near_dedup
from llm_recipes.corpus.filters import FILTER_PRESETS, FILTERS, FilterBatch, build_filters, calibration_warning
from llm_recipes.corpus.normalize import NormalizeBatch, build_normalizers
from llm_recipes.corpus.parallel import map_batches
from llm_recipes.corpus.pii import RedactPIIBatch
from llm_recipes.corpus.readers import read_corpus
from llm_recipes.errors import UserError

DROP_REASON = "drop_reason"
# a preset is a whole pipeline: what a config gets when it names `preset` instead of listing `steps`
CORPUS_PRESETS: dict[str, list[Any]] = {
    "minimal": [
        {"normalize": "default"},
        {"length": {"min_words": 5}},
        {"exact_dedup": {}},
    ],
    "web": [
        {"normalize": "web"},
        {"language": {"languages": ["en"], "min_confidence": 0.65}},
        {"gopher_repetition": {}},
        {"gopher_quality": {}},
        {"c4": {}},
        {"fineweb": {}},
        {"pii": {}},
        {"exact_dedup": {}},
        {"near_dedup": {"threshold": 0.8, "verify": True}},
    ],
}


@dataclass
class StepStats:
    name: str
    docs_in: int
    docs_out: int
    chars_in: int
    chars_out: int
    seconds: float
    drop_reasons: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    @property
    def docs_removed(self) -> int:
        return self.docs_in - self.docs_out

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "docs_removed": self.docs_removed}

    @classmethod
    def from_dict(cls, saved: dict[str, Any], **changes: Any) -> StepStats:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in saved.items() if k in names}, **changes})


class CorpusStep(ABC):
    """One step: `apply` returns the new dataset, the drop reasons it counted and any details for the report."""

    kind = "step"

    def __init__(self, name: str, options: Any):
        self.name = name
        self.options = options

    def spec(self) -> dict[str, Any]:
        """What identifies this step's output, for resuming: same spec and same input -> same output."""
        return {"step": self.kind, "name": self.name, "options": self.options}

    @abstractmethod
    def apply(
        self, ds: Dataset, *, num_proc: int | None, batch_size: int, text_field: str
    ) -> tuple[Dataset, dict[str, int], dict[str, Any]]:
        """(output dataset, drop reason -> count, details for the report)"""


class NormalizeStep(CorpusStep):
    kind = "normalize"

    def __init__(self, name: str, options: Any):
        super().__init__(name, options)
        steps = [options] if isinstance(options, str) else list(options or ["default"])
        self.normalizers = build_normalizers(steps)
        self.batch_class = NormalizeBatch

    def apply(self, ds, *, num_proc, batch_size, text_field):
        batch_fn = self.batch_class(self.normalizers, text_field=text_field)
        ds = map_batches(ds, batch_fn, batch_size=batch_size, num_proc=num_proc, desc=self.name)
        # normalizing can empty a document (all boilerplate); an empty document is never worth keeping
        kept = ds.filter(_non_empty, input_columns=text_field, batched=True, batch_size=batch_size)
        emptied = len(ds) - len(kept)
        return kept, ({"normalize:empty": emptied} if emptied else {}), {}


class FilterStep(CorpusStep):
    kind = "filter"

    def __init__(self, name: str, options: Any):
        super().__init__(name, options)
        self.filters = build_filters(options)
        self.batch_class = FilterBatch

    def apply(self, ds, *, num_proc, batch_size, text_field):
        batch_fn = self.batch_class(self.filters, text_field=text_field)
        # typed up front: a first batch that drops nothing (or drops all before language id) has only None in these
        # columns, which `datasets` cannot type and refuses to write
        features = ds.features.copy()
        features[DROP_REASON] = Value("string")
        if batch_fn.annotates_language:
            features["language"], features["language_score"] = Value("string"), Value("float64")
        marked = map_batches(ds, batch_fn, batch_size=batch_size, num_proc=num_proc, features=features, desc=self.name)
        reasons = _value_counts(marked, DROP_REASON)
        kept = marked.filter(_is_kept, input_columns=DROP_REASON, batched=True, batch_size=batch_size)
        return kept.remove_columns(DROP_REASON), reasons, {}


class PIIStep(CorpusStep):
    kind = "pii"

    def __init__(self, name: str, options: Any):
        super().__init__(name, options)
        self.options_dict = _mapping(name, options)
        self.batch_class = RedactPIIBatch
        _construct(name, RedactPIIBatch, self.options_dict)  # bad options fail at config time

    def apply(self, ds, *, num_proc, batch_size, text_field):
        batch_fn = self.batch_class(**{**self.options_dict, "text_field": text_field})
        redacted = map_batches(ds, batch_fn, batch_size=batch_size, num_proc=num_proc, desc=self.name)
        counts = redacted.with_format("arrow")["pii_redactions"]
        details = {
            "redactions": int(pc.sum(counts).as_py() or 0),
            "documents_redacted": int(pc.sum(pc.greater(counts, 0)).as_py() or 0),
        }
        return redacted.remove_columns("pii_redactions"), {}, details


class ExactDedupStep(CorpusStep):
    kind = "exact_dedup"

    def apply(self, ds, *, num_proc, batch_size, text_field):
        kept, stats = exact_dedup(ds, text_field=text_field, num_proc=num_proc)
        removed = len(ds) - len(kept)
        return kept, ({"exact_duplicate": removed} if removed else {}), _as_dict(stats)


class NearDedupStep(CorpusStep):
    kind = "near_dedup"

    def __init__(self, name: str, options: Any):
        super().__init__(name, options)
        self.config = _construct(name, MinHashConfig, _mapping(name, options))

    def apply(self, ds, *, num_proc, batch_size, text_field):
        kept, stats = near_dedup(ds, self.config, text_field=text_field, num_proc=num_proc)
        removed = len(ds) - len(kept)
        return kept, ({"near_duplicate": removed} if removed else {}), _as_dict(stats)


class DecontaminateStep(CorpusStep):
    kind = "decontaminate"

    def __init__(self, name: str, options: Any):
        super().__init__(name, options)
        self.options_dict = dict(_mapping(name, options))
        if "eval_path" not in self.options_dict:
            raise UserError(f"{name}: needs eval_path, the evaluation data to keep out of the corpus")

    def apply(self, ds, *, num_proc, batch_size, text_field):
        options = dict(self.options_dict)
        eval_ds, _ = read_corpus(options.pop("eval_path"), text_field=options.pop("eval_text_field", "text"))
        kept, stats = decontaminate(ds, eval_ds["text"], text_field=text_field, **options)
        removed = len(ds) - len(kept)
        return kept, ({"contaminated": removed} if removed else {}), _as_dict(stats)


class AugmentStep(CorpusStep):
    kind = "augment"

    def __init__(self, name: str, options: Any):
        super().__init__(name, options)
        self.options_dict = _mapping(name, options)
        self.batch_class = AugmentBatch
        _construct(name, AugmentBatch, self.options_dict)

    def apply(self, ds, *, num_proc, batch_size, text_field):
        batch_fn = self.batch_class(**{**self.options_dict, "text_field": text_field})
        augmented = map_batches(
            ds,
            batch_fn,
            batch_size=batch_size,
            num_proc=num_proc,
            remove_columns=ds.column_names,  # the batch function returns every column, originals plus copies
            desc=self.name,
        )
        return augmented, {}, {"documents_added": len(augmented) - len(ds)}


STEP_KINDS: dict[str, type[CorpusStep]] = {
    "normalize": NormalizeStep,
    "filter": FilterStep,
    "pii": PIIStep,
    "exact_dedup": ExactDedupStep,
    "near_dedup": NearDedupStep,
    "decontaminate": DecontaminateStep,
    "augment": AugmentStep,
}


def build_steps(spec: Sequence[str | dict[str, Any]]) -> list[CorpusStep]:
    """Steps from a config list; a filter or filter preset named directly becomes a one-filter step."""

    if isinstance(spec, (str, dict)) or not isinstance(spec, Sequence):
        raise UserError("steps: expected a list of steps, e.g. [{normalize: default}, gopher, {exact_dedup: {}}]")
    steps: list[CorpusStep] = []
    for i, entry in enumerate(spec):
        if isinstance(entry, str):
            key, options = entry, None
        elif isinstance(entry, dict) and len(entry) == 1:
            key, options = next(iter(entry.items()))
        else:
            raise UserError(f"steps[{i}]: each step is a name or a one-key mapping {{name: options}}, got {entry!r}")
        name = _unique_name(key, steps)
        if key in STEP_KINDS:
            steps.append(STEP_KINDS[key](name, options))
        elif key in FILTERS:
            steps.append(FilterStep(name, [{key: options or {}}]))
        elif key in FILTER_PRESETS:
            if options:
                raise UserError(f"steps[{i}]: '{key}' is a preset of several filters and takes no options")
            steps.append(FilterStep(name, [key]))
        else:
            known = [*STEP_KINDS, *FILTERS, *FILTER_PRESETS]
            match = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {match[0]}?" if match else f" (choose from {', '.join(known)})"
            raise UserError(f"steps[{i}]: unknown step '{key}'{hint}")
    return steps


def language_calibration_warning(steps: Sequence[CorpusStep]) -> str | None:
    """One warning line when the language step keeps languages that a later filter has no thresholds for."""
    return calibration_warning([f for step in steps if isinstance(step, FilterStep) for f in step.filters])


def run_step(
    ds: Dataset, step: CorpusStep, *, num_proc: int | None = None, batch_size: int = 1000, text_field: str = "text"
) -> tuple[Dataset, StepStats]:
    started = time.perf_counter()
    docs_in, chars_in = len(ds), count_chars(ds, text_field)
    out, drop_reasons, details = step.apply(ds, num_proc=num_proc, batch_size=batch_size, text_field=text_field)
    stats = StepStats(
        name=step.name,
        docs_in=docs_in,
        docs_out=len(out),
        chars_in=chars_in,
        chars_out=count_chars(out, text_field),
        seconds=round(time.perf_counter() - started, 3),
        drop_reasons=dict(sorted(drop_reasons.items(), key=lambda item: -item[1])),
        details=details,
    )
    return out, stats


def run_steps(
    ds: Dataset,
    steps: Sequence[CorpusStep],
    *,
    num_proc: int | None = None,
    batch_size: int = 1000,
    text_field: str = "text",
) -> tuple[Dataset, list[StepStats]]:
    """Run the steps in order, in memory (the recipe adds on-disk checkpoints between steps)."""
    all_stats = []
    for step in steps:
        ds, stats = run_step(ds, step, num_proc=num_proc, batch_size=batch_size, text_field=text_field)
        all_stats.append(stats)
    return ds, all_stats


def count_chars(ds: Dataset, text_field: str = "text") -> int:
    total = 0
    # one column, in batches of a few MB: a dataset with an indices mapping (after a filter) copies each batch
    for batch in ds.select_columns(text_field).with_format("arrow").iter(batch_size=5_000):
        total += pc.sum(pc.utf8_length(batch[text_field])).as_py() or 0
    return int(total)


def _value_counts(ds: Dataset, column: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for batch in ds.with_format("arrow").iter(batch_size=50_000):
        for entry in pc.value_counts(batch[column]).to_pylist():
            if entry["values"] is not None:
                counts[entry["values"]] += entry["counts"]
    return dict(counts)


def _is_kept(reasons: list[str | None]) -> list[bool]:
    return [reason is None for reason in reasons]


def _non_empty(texts: list[str]) -> list[bool]:
    return [bool(text and text.strip()) for text in texts]


def _mapping(name: str, options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise UserError(f"{name}: options must be a mapping of option: value, got {options!r}")
    return options


def _construct(name: str, cls: type, options: dict[str, Any]) -> Any:
    try:
        return cls(**options)
    except TypeError as err:
        raise UserError(f"{name}: {err}".replace("__init__() ", "")) from None


def _unique_name(key: str, steps: Sequence[CorpusStep]) -> str:
    taken = {step.name for step in steps}
    if key not in taken:
        return key
    n = 2
    while f"{key}_{n}" in taken:
        n += 1
    return f"{key}_{n}"


def _as_dict(stats: Any) -> dict[str, Any]:
    if stats is None:
        return {}
    if hasattr(stats, "as_dict"):
        return stats.as_dict()
    if dataclasses.is_dataclass(stats):
        return dataclasses.asdict(stats)
    return dict(stats)
