"""The clean-corpus stage on Ray Data: the same steps, checkpoints, splits and report as the datasets engine.

    read (one task per source) -> step 1 -> step 2 -> ... -> split -> Parquet shards + corpus_report.*

Each step marks what it drops instead of filtering at once (a `_drop` column): the marked dataset is kept on the
cluster (`materialize`, spilling to disk when the object store is full), one small pass counts documents,
characters and drop reasons per block for the report, and the kept rows are written as the step's Parquet
checkpoint, which the next step streams from. Map steps run the single-machine engine's own batch functions
through `RayBatch`; dedup steps are `ray_dedup`'s group-bys.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from llm_recipes.corpus.checkpoints import StepCheckpoints, chain_key, files_fingerprint
from llm_recipes.corpus.dedup.contamination import DecontaminationBatch, eval_ngram_index
from llm_recipes.corpus.engines.ray_dedup import exact_dedup_marked, near_dedup_marked
from llm_recipes.corpus.engines.ray_io import (
    DROP,
    ORDER,
    TEXT,
    TEXT_BATCH_ROWS,
    KeepRows,
    ParquetCheckpoints,
    connect,
    merged_read_report,
    positions,
    read_on_ray,
    summarize,
    to_table,
    unwrap_task_error,
)
from llm_recipes.corpus.engines.ray_splits import dedup_splits_on_ray, split_on_ray, write_splits
from llm_recipes.corpus.readers import read_corpus
from llm_recipes.corpus.report import build_report, write_report
from llm_recipes.corpus.steps import (
    AugmentStep,
    CorpusStep,
    DecontaminateStep,
    ExactDedupStep,
    FilterStep,
    NearDedupStep,
    NormalizeStep,
    PIIStep,
    StepStats,
)
from llm_recipes.errors import UserError

READ_OPTIONS = ("text_field", "txt_unit", "on_malformed", "html", "input_split", "hub_config", "max_documents")
MARK_COLUMNS = ("pii_redactions", "contaminated_ngram")  # what a step adds for its report, never kept


class RayBatch:
    """A corpus batch function under Ray Data's `map_batches`: the Arrow batch handed over as the `dict[str, list]`
    it expects, its output columns laid over the input's (as `Dataset.map` does), and what it drops marked in
    `_drop` (`mark`: normalize, filter or decontaminate). With `copies` (augmentation) each output row is an input
    row or one of its copies, in that order, and gets `_order * (copies + 1) + copy`: copies sort right after
    their original, as in the datasets engine's rows."""

    def __init__(self, function: Any, mark: str | None = None, copies: int | None = None, text_field: str = TEXT):
        self.function, self.mark, self.copies, self.text_field = function, mark, copies, text_field

    def __call__(self, table: pa.Table) -> pa.Table:
        batch = table.to_pydict()
        out = self.function(batch)
        columns = {name: list(values) for name, values in out.items()}
        if self.copies is None:
            columns = {**batch, **columns}
        else:
            columns[ORDER] = _copy_orders(np.asarray(columns[ORDER], dtype=np.int64), self.copies)
        if self.mark == "normalize":
            columns[DROP] = [None if text and text.strip() else "normalize:empty" for text in columns[self.text_field]]
        elif self.mark == "filter":
            columns[DROP] = columns.pop("drop_reason")
        elif self.mark == "decontaminate":
            columns[DROP] = ["contaminated" if ngram else None for ngram in columns["contaminated_ngram"]]
        return to_table(columns, table.schema)


def _copy_orders(orders: np.ndarray, copies: int) -> np.ndarray:
    if orders.size and int(orders.max()) > (2**63 - 1 - copies) // (copies + 1):
        raise UserError(f"augment: {copies} copies overflow the Ray engine's document order; use fewer copies")
    return orders * (copies + 1) + np.arange(orders.size) % (copies + 1)


def marked_step(
    ds: Any, step: CorpusStep, documents: int, text_field: str, batch_size: int = TEXT_BATCH_ROWS
) -> tuple[Any, dict[str, Any], dict]:
    """(`ds` with the step applied and its drops marked, details for the report, what `summarize` should note)."""
    if isinstance(step, ExactDedupStep):
        marked, details = exact_dedup_marked(ds, text_field, documents, batch_size)
        return marked, details, {}
    if isinstance(step, NearDedupStep):
        marked, details = near_dedup_marked(ds, step.config, text_field, documents, batch_size)
        return marked, details, {}
    if isinstance(step, NormalizeStep):
        fn = RayBatch(step.batch_class(step.normalizers, text_field=text_field), "normalize", text_field=text_field)
    elif isinstance(step, FilterStep):
        fn = RayBatch(step.batch_class(step.filters, text_field=text_field), "filter")
    elif isinstance(step, PIIStep):
        fn = RayBatch(step.batch_class(**{**step.options_dict, "text_field": text_field}))
    elif isinstance(step, AugmentStep):
        function = step.batch_class(**{**step.options_dict, "text_field": text_field})
        fn = RayBatch(function, copies=function.copies)
    elif isinstance(step, DecontaminateStep):
        return _decontaminate(ds, step, text_field, batch_size)
    else:
        raise UserError(f"{step.name}: step kind '{step.kind}' does not run on engine ray yet")
    return ds.map_batches(fn, batch_size=batch_size, batch_format="pyarrow"), {}, {}


def _decontaminate(
    ds: Any, step: DecontaminateStep, text_field: str, batch_size: int
) -> tuple[Any, dict[str, Any], dict]:
    """As `decontaminate`: the evaluation n-grams are indexed here (evaluation sets are small) and shipped."""
    options = dict(step.options_dict)
    eval_ds, _ = read_corpus(options.pop("eval_path"), text_field=options.pop("eval_text_field", "text"))
    ngram, min_words = options.pop("ngram", 13), options.pop("min_words", 8)
    if options:
        raise UserError(f"{step.name}: unknown option(s) {', '.join(options)} (ngram, min_words, eval_text_field)")
    if ngram < 1 or min_words < 1:
        raise UserError(f"ngram ({ngram}) and min_words ({min_words}) must be >= 1")
    index, too_short = eval_ngram_index(eval_ds["text"], ngram, min_words)
    fn = RayBatch(DecontaminationBatch(index, text_field), "decontaminate")
    details = {"eval_ngrams": int(sum(hashes.size for hashes in index.values())), "eval_texts_too_short": too_short}
    notes = {"first": 5, "note_column": "contaminated_ngram"}
    return ds.map_batches(fn, batch_size=batch_size, batch_format="pyarrow"), details, notes


def run_ray_step(
    ds: Any, step: CorpusStep, documents: int, chars: int, text_field: str = TEXT, batch_size: int = TEXT_BATCH_ROWS
) -> tuple[Any, StepStats]:
    """The step over `ds` (`documents` documents of `chars` characters, `batch_size` a text function's batch):
    (kept rows, lazy; its StepStats)."""
    started = time.perf_counter()
    marked, details, notes = marked_step(ds, step, documents, text_field, batch_size)
    marked = marked.materialize()
    counts = summarize(marked, **notes)
    if isinstance(step, PIIStep):
        details = {"redactions": counts["redactions"], "documents_redacted": counts["redacted"]}
    elif isinstance(step, AugmentStep):
        details = {"documents_added": counts["rows"] - documents}
    elif isinstance(step, DecontaminateStep):
        dropped = counts["first_dropped"]
        rows = positions(marked, [order for order, _ in dropped])
        dropped_count = sum(counts["reasons"].values())
        details = {
            "documents": documents,
            "dropped": dropped_count,
            "kept": documents - dropped_count,
            **details,
            "examples": [{"row": rows[order], "ngram": ngram} for order, ngram in dropped],
        }
    stats = StepStats(
        name=step.name,
        docs_in=documents,
        docs_out=counts["rows"],
        chars_in=chars,
        chars_out=counts["chars"],
        seconds=round(time.perf_counter() - started, 3),
        drop_reasons=dict(sorted(counts["reasons"].items(), key=lambda item: -item[1])),
        details=details,
    )
    return marked.map_batches(KeepRows(MARK_COLUMNS), batch_format="pyarrow"), stats


def clean_on_ray(args: Any, steps: Sequence[CorpusStep], checkpoints: StepCheckpoints) -> tuple[Path, dict, str]:
    """Read, clean, split and write under `checkpoints`' staging folder: (that folder, the report, its table)."""
    connect(args.ray_address)
    try:
        return _clean(args, steps, ParquetCheckpoints(checkpoints.output_dir))
    except Exception as err:  # a UserError raised in a task arrives wrapped in Ray's task error
        unwrapped = unwrap_task_error(err)
        if unwrapped is err:
            raise
        raise unwrapped from None


def _clean(args: Any, steps: Sequence[CorpusStep], store: ParquetCheckpoints) -> tuple[Path, dict, str]:
    read_options = {key: getattr(args, key) for key in READ_OPTIONS}
    key = chain_key("read:ray", [args.input_paths, read_options, files_fingerprint(args.input_paths)])
    resumed = store.load_step(0, "read", key)
    if resumed:
        ds, read_report, counts = resumed
        print(f"read: {read_report['documents']:,} documents (checkpoint)")
    else:
        report_dir = store.root / "read-reports"
        docs, sources = read_on_ray(args, report_dir)
        ds = store.save_step(0, "read", key, docs)
        read_report = merged_read_report(report_dir, sources, args.max_documents)
        if read_report["documents"] == 0:
            store.discard_from(0)
            raise UserError(f"no documents in {', '.join(args.input_paths)}; see the read report: {read_report}")
        counts = {"documents": read_report["documents"], "chars": summarize(ds)["chars"]}
        store.write_info(0, "read", key, read_report, counts)

    all_stats: list[StepStats] = []
    for index, step in enumerate(steps, start=1):
        key = chain_key(key, [step.spec(), args.batch_size, args.seed])
        resumed = store.load_step(index, step.name, key)
        if resumed:
            ds, saved, counts = resumed
            stats = StepStats.from_dict(saved, cached=True)
        else:
            kept, stats = run_ray_step(ds, step, counts["documents"], counts["chars"], batch_size=args.batch_size)
            if stats.docs_out == 0:
                raise UserError(
                    f"every document was removed by step '{step.name}' ({stats.drop_reasons}); loosen its thresholds"
                )
            counts = {"documents": stats.docs_out, "chars": stats.chars_out}
            ds = store.save_step(index, step.name, key, kept, stats.as_dict(), counts)
        all_stats.append(stats)
        resumed_note = " (checkpoint)" if stats.cached else ""
        print(f"{stats.name}: {stats.docs_in:,} -> {stats.docs_out:,} documents{resumed_note}")

    splits = split_on_ray(ds, counts["documents"], args.validation_size, args.test_size, args.seed)
    split_stats: dict[str, Any] = {}
    if args.cross_split_dedup and len(splits) > 1:
        splits, split_stats = dedup_splits_on_ray(splits)
    staging = store.staging_output()
    write_splits({name: split for name, (split, _) in splits.items()}, staging, args.rows_per_shard)
    report = build_report(read_report, all_stats, {name: size for name, (_, size) in splits.items()})
    report["cross_split_dedup"] = split_stats
    return staging, report, write_report(staging, report)
