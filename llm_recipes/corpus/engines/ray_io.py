"""Ray Data plumbing for the corpus stage: joining a cluster, sources read one per task, step checkpoints as Parquet,
and the small passes every step shares (counts for the report, a set of documents shipped to the workers, row
positions for the report's examples).

Every document carries `_order` (int64): its place in the order the single-machine engine holds rows in, made from
its source's position in the read plan and its record number in that source (`RECORD_BITS` bits). Filters keep
order, dedup keeps the smallest `_order` of a group, augmentation numbers each copy after its original: sorting by
`_order` gives the datasets engine's rows, so both engines keep the same first document of every duplicate group,
and the report's row numbers are the ranks of `_order` values.

`ray` is imported inside functions only (an optional extra). Output tables are typed explicitly: a block whose
`language` column is all None must still be written as strings, or the Parquet files of one step disagree.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_recipes.corpus.checkpoints import STEP_INFO, StepCheckpoints
from llm_recipes.corpus.dedup.hashing import mix64
from llm_recipes.corpus.readers import MAX_MALFORMED_EXAMPLES, ReadReport, plan_sources, read_source
from llm_recipes.errors import UserError
from llm_recipes.runs.manifest import write_json_atomically

ORDER, DROP, PART, TEXT = "_order", "_drop", "_part", "text"
RANK = "_rank"  # a document's split, when splits are deduplicated against each other
RECORD_BITS, SOURCE_LIMIT = 36, 1 << 19  # 2**36 documents per source, 2**19 sources: 55 bits, room for copies
READ_CHUNK = 5_000  # documents per block a read task yields: a large file streams instead of filling one block
# what the steps add, typed: a column that is all None in one block must not become Arrow's null type there
COLUMN_TYPES = {
    ORDER: pa.int64(),
    DROP: pa.string(),
    "id": pa.string(),
    TEXT: pa.string(),
    "source": pa.string(),
    "language": pa.string(),
    "language_score": pa.float64(),
    "pii_redactions": pa.int64(),
    "augmented": pa.bool_(),
    "contaminated_ngram": pa.string(),
}


# this job's workers, unless the driver's environment sets them: Arrow's mimalloc hands freed pages back to the OS
# at once instead of keeping them for reuse. A worker runs one task after another, and what an earlier task freed
# stayed counted as its own (an idle worker held ~470 MiB outside the object store after a 200k-document run's
# dedup tasks), so its peak followed the largest tasks it had run. A loop of Parquet reads and Arrow filters peaked
# at 580 MiB with the default against 270 with this, in the same time; benchmarks/corpus_ray.py's worker peak
# outside the store fell 401 -> 289 MiB at 50k documents, 589 -> 484 at 800k
WORKER_ENV = {"MIMALLOC_PURGE_DELAY": "0"}


def connect(address: str | None) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS, or start one here); a driver already connected stays."""
    import ray  # the ray extra: imported only when engine is ray
    import ray.data

    if not ray.is_initialized():
        # offline by default: a Ray started here reports no usage statistics (set RAY_USAGE_STATS_ENABLED=1 to)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        env_vars = {name: os.environ.get(name, value) for name, value in WORKER_ENV.items()}
        ray.init(address=address, logging_level="WARNING", configure_logging=True, runtime_env={"env_vars": env_vars})
    context = ray.data.DataContext.get_current()
    # task-based sort shuffles: no per-shuffle aggregator actors to start (seconds each on a small node), a task on
    # a lost worker is simply run again, and a union's missing columns are filled with nulls (`attach` needs it).
    # RAY_DATA_PUSH_BASED_SHUFFLE=1 picks the push-based variant, for shuffles of many thousand blocks
    strategies = ray.data.context.ShuffleStrategy
    if context.shuffle_strategy != strategies.SORT_SHUFFLE_PUSH_BASED:
        context.shuffle_strategy = strategies.SORT_SHUFFLE_PULL_BASED
    # blocks of at most BLOCK_BYTES, unless the driver set its own: a task holds a few blocks (read, prefetched,
    # written), so a worker's memory is bounded by the block size; Ray's 128 MB default let it grow with the corpus
    # until blocks reached that size (benchmarks/corpus_ray.py: 1.5x from 50k to 800k documents)
    if context.target_max_block_size == ray.data.context.DEFAULT_TARGET_MAX_BLOCK_SIZE:
        context.target_max_block_size = BLOCK_BYTES
    # Parquet through Ray's first datasource unless RAY_DATA_USE_DATASOURCE_V2 says otherwise: with the second
    # one's footer-reader actors and scanners a worker peaked at 951 (50k documents) to 1,592 MiB USS (800k), with
    # the first at 433 to 996, and the 800k-document run took no longer (benchmarks/corpus_ray.py)
    if "RAY_DATA_USE_DATASOURCE_V2" not in os.environ:
        context.use_datasource_v2 = False
    context.enable_progress_bars = sys.stderr.isatty()
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not a line per executed dataset


def to_table(columns: dict[str, Sequence], schema: pa.Schema | None = None) -> pa.Table:
    """An Arrow table of Python columns, each typed as in `schema` or `COLUMN_TYPES` when known."""
    known = {field.name: field.type for field in schema} if schema is not None else {}
    arrays = {}
    for name, values in columns.items():
        kind = known.get(name, COLUMN_TYPES.get(name))
        arrays[name] = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, type=kind)
    return pa.table(arrays)


def part_of(values: np.ndarray, partitions: int) -> np.ndarray:
    """The group-by partition of each key: all rows with one key meet in one `map_groups` call."""
    return (mix64(np.asarray(values).astype(np.uint64)) % np.uint64(partitions)).astype(np.int64)


# Documents a text function (a step's batch function, signatures, Jaccard checks) sees at once: a task's memory is
# then bounded by one batch, not by the block it reads, which grows with a source file or a checkpoint's
TEXT_BATCH_ROWS = 1000
BLOCK_BYTES = 32 * 2**20
PARTITION_BYTES = 32 * 2**20
CHECKPOINT_GROUP_ROWS = 10_000


def partitions_for(rows: int) -> int:
    """Group-by partitions: ~200k rows each, so one partition's numpy work stays a few hundred MB at most."""
    return int(min(4096, max(2, -(-rows // 200_000))))


def partitions_for_bytes(nbytes: int) -> int:
    """Partitions of a join whose right side has wide rows (signatures, texts): ~PARTITION_BYTES of it each, so a
    reduce task's memory does not grow with the corpus."""
    return int(min(4096, max(2, -(-nbytes // PARTITION_BYTES))))


def unwrap_task_error(err: BaseException) -> BaseException:
    """A UserError raised in a Ray task, as the one-line error it was (Ray wraps it with the task's traceback and
    appends its retry advice on later lines)."""
    cause = getattr(err, "cause", None)
    return UserError(str(cause).splitlines()[0]) if isinstance(cause, UserError) and str(cause) else err


# --------------------------------------------------------------------------------------------------------------
# Reading: the same plan and the same record-by-record judging as `read_corpus`, one source per task


COUNTED = ("malformed", "empty", "decode_errors", "html_fallbacks")


class ReadSources:
    """Batch function over rows of (index, source plan): the documents of each source, with their `_order`, in
    blocks of `READ_CHUNK`; each source's `ReadReport` goes to `report_dir` (a folder every node sees), with its
    `events`: what was counted before each document, so a report cut at `max_documents` counts what `read_corpus`,
    which stops reading there, counts."""

    def __init__(self, options: dict, report_dir: str, limit: int | None):
        self.options, self.report_dir, self.limit = options, report_dir, limit

    def __call__(self, table: pa.Table) -> Iterator[pa.Table]:
        for index, planned in zip(table["index"].to_pylist(), table["source"].to_pylist(), strict=True):
            report, events = ReadReport(), []
            seen = [0] * (len(COUNTED) + 1)
            columns: dict[str, list] = {ORDER: [], "id": [], TEXT: [], "source": []}
            for record, doc in enumerate(read_source(json.loads(planned), self.options, report, self.limit)):
                seen = _note_events(report, record, seen, events)
                columns[ORDER].append((index << RECORD_BITS) | record)
                for name in ("id", TEXT, "source"):
                    columns[name].append(doc[name])
                if len(columns[ORDER]) == READ_CHUNK:
                    yield to_table(columns)
                    columns = {name: [] for name in columns}
            if columns[ORDER]:
                yield to_table(columns)
            _note_events(report, report.documents, seen, events)  # what came after the last document
            write_json_atomically(Path(self.report_dir) / f"{index:07d}.json", {**report.as_dict(), "events": events})


def _note_events(report: ReadReport, record: int, seen: list[int], events: list) -> list[int]:
    """Append [record, new counts..., new malformed examples] when something was counted since `seen`."""
    now = [getattr(report, key) for key in COUNTED] + [len(report.malformed_examples)]
    if now != seen:
        new = [after - before for after, before in zip(now[:-1], seen[:-1], strict=True)]
        events.append([record, *new, report.malformed_examples[seen[-1] :]])
    return now


def read_on_ray(args: Any, report_dir: Path) -> tuple[Any, int]:
    """The documents of `args.input_paths` as a (lazy) Ray Dataset, and how many sources it reads; each source's
    report is in `report_dir` once the dataset has run (`merged_read_report`)."""
    import ray.data

    options = dict(text_field=args.text_field, txt_unit=args.txt_unit, on_malformed=args.on_malformed)
    options.update(split=args.input_split, html=args.html, hub_config=args.hub_config, streaming=args.streaming)
    options["max_documents"] = args.max_documents
    sources = plan_sources(list(args.input_paths), options)
    if len(sources) > SOURCE_LIMIT:
        raise UserError(f"{len(sources):,} input files: engine ray reads at most {SOURCE_LIMIT:,}; merge some")
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    plan = [{"index": i, "source": json.dumps(source)} for i, source in enumerate(sources)]
    # a block per source up to 10k blocks (more would cost Ray more in bookkeeping than it gains); a task reads its
    # block's sources one after the other
    items = ray.data.from_items(plan, override_num_blocks=max(1, min(len(plan), 10_000)))
    docs = items.map_batches(
        ReadSources(options, str(report_dir), args.max_documents), batch_size=1, batch_format="pyarrow"
    )
    if args.max_documents is None:
        return docs, len(sources)
    # the first max_documents in plan order: each source read at most that many, then cut by what came before
    docs = docs.materialize()
    allowed = [
        max(0, min(report["documents"], args.max_documents - before))
        for report, before in _cumulative(read_reports(report_dir, len(sources)))
    ]
    return docs.map_batches(KeepFirst(allowed), batch_format="pyarrow"), len(sources)


def _cumulative(reports: list[dict]) -> Iterator[tuple[dict, int]]:
    before = 0
    for report in reports:
        yield report, before
        before += report["documents"]


def read_reports(report_dir: Path, count: int) -> list[dict]:
    return [json.loads((report_dir / f"{i:07d}.json").read_text(encoding="utf-8")) for i in range(count)]


def merged_read_report(report_dir: Path, sources: int, max_documents: int | None) -> dict[str, Any]:
    """One `ReadReport` for all sources, as `read_corpus` counts it: sources in plan order, up to the one where
    `max_documents` was reached, counting only what came before that source's last document kept."""
    merged = ReadReport()
    for report, before in _cumulative(read_reports(report_dir, sources)):
        remaining = None if max_documents is None else max_documents - before
        if remaining is not None and remaining <= 0:
            break
        merged.sources += report["sources"]
        merged.documents += report["documents"] if remaining is None else min(report["documents"], remaining)
        for record, *counts, examples in report["events"]:
            if remaining is None or record < remaining:  # read_corpus stops after the document numbered remaining-1
                for key, count in zip(COUNTED, counts, strict=True):
                    setattr(merged, key, getattr(merged, key) + count)
                merged.malformed_examples += examples
    merged.malformed_examples = merged.malformed_examples[:MAX_MALFORMED_EXAMPLES]
    return merged.as_dict()


class KeepFirst:
    """Batch function: only the first `allowed[source]` documents of each source."""

    def __init__(self, allowed: list[int]):
        self.allowed = np.asarray(allowed, dtype=np.int64)

    def __call__(self, table: pa.Table) -> pa.Table:
        orders = table[ORDER].to_numpy()
        keep = (orders & ((1 << RECORD_BITS) - 1)) < self.allowed[orders >> RECORD_BITS]
        return table.filter(pa.array(keep))


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: the datasets engine's folders and keys, Parquet inside


class ParquetCheckpoints(StepCheckpoints):
    """`StepCheckpoints` whose step outputs are Parquet files written by the cluster (so `output_dir` must be on
    storage every node sees). `step.json` also keeps the output's documents and characters, the next step's input."""

    def load_step(self, index: int, name: str, key: str) -> tuple[Any, dict[str, Any], dict[str, int]] | None:
        info_path = self._folder(index, name) / STEP_INFO
        if not info_path.is_file():
            return None
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("key") != key:
            return None
        return read_checkpoint(self._folder(index, name) / "data"), info["stats"], info["counts"]

    def save_step(
        self, index: int, name: str, key: str, ds: Any, stats: dict | None = None, counts: dict | None = None
    ) -> Any:
        """Write a step's output (the cluster writes it) and return it read back lazily; without `stats` the step
        is not finished until `write_info`."""
        self.discard_from(index)
        folder = self._folder(index, name)
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        # row groups of CHECKPOINT_GROUP_ROWS: the next step's read holds one row group of a file at a time
        ds.write_parquet(str(staging / "data"), row_group_size=CHECKPOINT_GROUP_ROWS)
        os.replace(staging, folder)
        if stats is not None:
            self.write_info(index, name, key, stats, counts or {})
        return read_checkpoint(folder / "data")

    def write_info(self, index: int, name: str, key: str, stats: dict, counts: dict[str, int]) -> None:
        write_json_atomically(self._folder(index, name) / STEP_INFO, {"key": key, "stats": stats, "counts": counts})


def read_checkpoint(folder: Path) -> Any:
    """A step's Parquet output read back lazily, in read tasks of ~BLOCK_BYTES of files each: Ray's default asks
    for 200 blocks (splitting files to get them), and a task per file gave a 800k-document corpus thousands of
    small blocks, each shuffle's cost and the driver's bookkeeping growing with their number."""
    import ray.data

    sizes = [path.stat().st_size for path in folder.glob("*.parquet")]
    tasks = max(1, min(len(sizes), -(-sum(sizes) // BLOCK_BYTES)))
    return ray.data.read_parquet(str(folder), override_num_blocks=tasks)


# --------------------------------------------------------------------------------------------------------------
# Passes every step shares


class Summarize:
    """Block-level counts of a marked dataset (rows with `_drop` set are dropped): kept documents and characters,
    drop reasons, PII redactions, and the `first` smallest dropped `_order`s with `note_column`'s value."""

    def __init__(self, first: int = 0, note_column: str | None = None):
        self.first, self.note_column = first, note_column

    def __call__(self, table: pa.Table) -> pa.Table:
        dropped = pc.is_valid(table[DROP]) if DROP in table.column_names else pa.array([False] * table.num_rows)
        kept = table.filter(pc.invert(dropped))
        reasons = Counter()
        if DROP in table.column_names:
            for entry in pc.value_counts(table[DROP]).to_pylist():
                if entry["values"] is not None:
                    reasons[entry["values"]] += entry["counts"]
        redactions = table["pii_redactions"] if "pii_redactions" in table.column_names else pa.array([], pa.int64())
        first = table.filter(dropped).sort_by(ORDER).slice(0, self.first)
        notes = first[self.note_column].to_pylist() if self.note_column else [None] * first.num_rows
        row = {
            "rows": [kept.num_rows],
            "chars": [int(pc.sum(pc.utf8_length(kept[TEXT])).as_py() or 0)],
            "reasons": [json.dumps(reasons)],
            "redactions": [int(pc.sum(redactions).as_py() or 0)],
            "redacted": [int(pc.sum(pc.greater(redactions, 0)).as_py() or 0)],
            "first_dropped": [json.dumps(list(zip(first[ORDER].to_pylist(), notes, strict=True)))],
        }
        return pa.table(row)


def summarize(ds: Any, first: int = 0, note_column: str | None = None) -> dict[str, Any]:
    """Totals of `Summarize` over all blocks (one small row per block reaches this process)."""
    totals: dict[str, Any] = {"rows": 0, "chars": 0, "reasons": Counter(), "redactions": 0, "redacted": 0}
    dropped = []
    for row in ds.map_batches(Summarize(first, note_column), batch_size=None, batch_format="pyarrow").take_all():
        for key in ("rows", "chars", "redactions", "redacted"):
            totals[key] += row[key]
        totals["reasons"].update(json.loads(row["reasons"]))
        dropped += json.loads(row["first_dropped"])
    totals["first_dropped"] = sorted(dropped)[:first]
    return totals


def order_set(ds: Any, column: str) -> Any:
    """An ObjectRef to the sorted unique values of one int64 column, gathered by a task on the cluster: the workers
    that mark or keep documents read it from their node's object store (8 bytes a document, shared by the node's
    workers), and this process holds only the reference."""
    refs = ds.select_columns([column]).to_arrow_refs()
    return _gather_task().remote(column, *refs)


@cache
def _gather_task():
    import ray

    return ray.remote(_sorted_unique)


def _sorted_unique(column: str, *tables: pa.Table) -> np.ndarray:
    parts = [table[column].to_numpy() for table in tables if table.num_rows]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


class _OrderSetUser:
    """Reads the shared set of `_order`s once per worker process."""

    def __init__(self, orders_ref: Any):
        self.orders_ref, self._orders = orders_ref, None

    def orders(self) -> np.ndarray:
        if self._orders is None:
            import ray

            self._orders = ray.get(self.orders_ref)
        return self._orders

    def member(self, values: np.ndarray) -> np.ndarray:
        orders = self.orders()
        at = np.minimum(np.searchsorted(orders, values), max(0, orders.size - 1))
        return (orders[at] == values) if orders.size else np.zeros(values.size, dtype=bool)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_orders": None}


class MarkOrders(_OrderSetUser):
    """Batch function: `_drop` = `reason` for the documents in the set (others keep theirs, or None)."""

    def __init__(self, orders_ref: Any, reason: str):
        super().__init__(orders_ref)
        self.reason = reason

    def __call__(self, table: pa.Table) -> pa.Table:
        hit = self.member(table[ORDER].to_numpy())
        marks = pa.array(np.where(hit, self.reason, None).tolist(), type=pa.string())
        if DROP in table.column_names:
            return table.set_column(table.schema.get_field_index(DROP), DROP, pc.coalesce(table[DROP], marks))
        return table.append_column(DROP, marks)


class KeepOrders(_OrderSetUser):
    """Batch function: only the documents in the set."""

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.filter(pa.array(self.member(table[ORDER].to_numpy())))


class KeepRows:
    """Batch function: the rows not marked dropped, without the marking columns."""

    def __init__(self, drop_columns: Sequence[str] = ()):
        self.drop_columns = list(drop_columns)

    def __call__(self, table: pa.Table) -> pa.Table:
        kept = table.filter(pc.is_null(table[DROP])) if DROP in table.column_names else table
        return kept.drop_columns([c for c in [DROP, *self.drop_columns] if c in kept.column_names])


class _CountBelow:
    def __init__(self, queries: np.ndarray):
        self.queries = queries

    def __call__(self, table: pa.Table) -> pa.Table:
        orders = np.sort(table[ORDER].to_numpy())
        return pa.table({"below": [np.searchsorted(orders, self.queries).tolist()]})


def positions(ds: Any, orders: Sequence[int]) -> dict[int, int]:
    """Row number of each `_order` in `ds` as the datasets engine numbers rows: how many documents come before it."""
    queries = np.unique(np.asarray(list(orders), dtype=np.int64))
    if not queries.size:
        return {}
    total = np.zeros(queries.size, dtype=np.int64)
    counts = ds.select_columns([ORDER]).map_batches(_CountBelow(queries), batch_size=None, batch_format="pyarrow")
    for row in counts.take_all():
        total += np.asarray(row["below"], dtype=np.int64)
    return dict(zip(queries.tolist(), total.tolist(), strict=True))


class _Pick:
    def __init__(self, orders: np.ndarray, column: str):
        self.orders, self.column = orders, column

    def __call__(self, table: pa.Table) -> pa.Table:
        return table.select([ORDER, self.column]).filter(pc.is_in(table[ORDER], pa.array(self.orders)))


def texts_of(ds: Any, orders: Sequence[int], column: str = TEXT) -> dict[int, str]:
    """The texts of a few documents (the report's examples), by `_order`."""
    wanted = np.unique(np.asarray(list(orders), dtype=np.int64))
    if not wanted.size:
        return {}
    picked = ds.map_batches(_Pick(wanted, column), batch_format="pyarrow").take_all()
    return {row[ORDER]: row[column] for row in picked}
