"""The tokenize stage on a Ray cluster (`engine: ray`): the sources read and cut into blocks by the cluster, the shard
folder written by this process, the same files and manifest as on one machine (`shards.py`).

The single-machine engine reads each source (`load_source_texts`), cuts it at `max_train_samples`, and packs it
`PACK_BATCH_DOCUMENTS` documents at a time, a batch's last short block kept. Here:

1. a task per source counts its documents (`load_source_texts` on a worker), so the cut at `max_train_samples` and
   the batch boundaries are known before anything is tokenized;
2. a plan row per `READ_TASK_BATCHES` batches of a source becomes a Ray Dataset (`from_items`); `ReadBatches` reads
   a row's range and yields each batch as ONE row (its number in the single-machine order, and its texts as a
   list). A batch is a row, not 2000 rows, because Ray Data cuts `map_batches` batches within each task's bundle of
   blocks: batches of documents would run across source ends and drift from the single-machine cuts;
3. `TokenizeBatches`, a callable class (an actor pool: the tokenizer loaded once per worker), runs the pure batch
   function `tokenize_and_pack` on each batch, so the blocks are the single-machine engine's, bit for bit;
4. this process streams the blocks in batch order (`preserve_order`, checked against the carried batch numbers) into
   the same `ShardWriter`: memory holds one shard's blocks and the blocks Ray prefetches, never the corpus.

Shards are written here, not by the cluster: a shard's boundary depends on every block before it, and a shard folder
is small next to the text it comes from (4 bytes a token). `ray` is imported inside functions only (an optional
extra); `check_engine` is light, for the recipe's config check.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerBase

from llm_recipes.corpus.engines.ray_io import connect, unwrap_task_error
from llm_recipes.data.config import DatasetSpec, dataset_specs
from llm_recipes.data.shards import (
    PACK_BATCH_DOCUMENTS,
    ShardManifest,
    ShardWriter,
    new_manifest,
    tokenize_and_pack,
    tokenizer_fingerprint,
)
from llm_recipes.errors import UserError
from llm_recipes.pretrain.build import load_source_texts, load_tokenizer

BATCH, DOCUMENTS, TEXTS = "_batch", "_documents", "texts"
# batches of documents one read task reads: enough work to outweigh reopening the source (memory-mapped, cached by
# datasets), few enough that one large source still spreads over the cluster
READ_TASK_BATCHES = 2


def check_engine(args: Any) -> None:
    """One clear line for engine settings that cannot work, before anything is read."""
    if args.engine != "ray":
        if args.ray_address:
            raise UserError("ray_address is for engine: ray; set engine: ray or drop ray_address")
        return
    if importlib.util.find_spec("ray") is None:
        raise UserError("engine: ray needs Ray Data on this machine: pip install 'llm-recipes[ray]'")


def separate_documents(args: Any) -> bool:
    """Whether blocks carry position ids restarting at each document (packing with separate boundaries)."""
    return args.packing and args.packing_boundaries == "separate"


def _source_length(spec: DatasetSpec, num_proc: int | None) -> int:
    texts, _ = load_source_texts(spec, num_proc)
    return len(texts)


@cache
def _length_task():
    import ray  # noqa: PLC0415 - the ray extra: imported only when engine is ray

    return ray.remote(_source_length)


def plan_batches(lengths: list[int], limit: int | None) -> list[dict[str, int]]:
    """Read-task rows: (source, start, stop, first batch number) ranges of whole batches, in the single-machine order,
    the sources cut as it cuts them at `limit` documents (a source past the limit is not read)."""
    plan, batch, left = [], 0, limit
    for source, length in enumerate(lengths):
        count = length if left is None else min(left, length)
        step = READ_TASK_BATCHES * PACK_BATCH_DOCUMENTS
        for start in range(0, count, step):
            stop = min(start + step, count)
            plan.append({"source": source, "start": start, "stop": stop, "batch": batch})
            batch += -(-(stop - start) // PACK_BATCH_DOCUMENTS)
        if left is not None:
            left -= count
            if left == 0:
                break
    return plan


class ReadBatches:
    """Batch function over plan rows: each `PACK_BATCH_DOCUMENTS` batch of the row's range as one row (batch number,
    texts)."""

    def __init__(self, specs: list[DatasetSpec], num_proc: int | None):
        self.specs, self.num_proc = specs, num_proc

    def __call__(self, table: pa.Table) -> Iterator[pa.Table]:
        for row in table.to_pylist():
            texts, _ = load_source_texts(self.specs[row["source"]], self.num_proc)
            part = texts.select_columns(["text"]).select(range(row["start"], row["stop"]))
            for offset, batch in enumerate(part.iter(batch_size=PACK_BATCH_DOCUMENTS)):
                yield pa.table(
                    {
                        BATCH: pa.array([row["batch"] + offset], pa.int64()),
                        TEXTS: pa.array([batch["text"]], pa.list_(pa.large_string())),
                    }
                )


class TokenizeBatches:
    """Callable class (one per Ray worker, so the tokenizer loads once there): each batch row -> its blocks, tagged
    with the batch number; the batch's document count rides on its first block (on a block-less marker row, ids
    null, when a batch packs into no block)."""

    def __init__(self, args: Any, fingerprint: str):
        self.tokenizer = load_tokenizer(args)
        if tokenizer_fingerprint(self.tokenizer) != fingerprint:
            raise UserError(
                f"tokenizer_name_or_path: '{args.tokenizer_name_or_path}' on a Ray worker is another tokenizer than "
                "on this machine; give every node the same tokenizer"
            )
        self.options = {
            "block_size": args.block_size,
            "pack": args.packing,
            "separate_documents": separate_documents(args),
        }

    def __call__(self, table: pa.Table) -> pa.Table:
        parts = []
        for batch, texts in zip(table[BATCH].to_pylist(), table[TEXTS].to_pylist(), strict=True):
            blocks = tokenize_and_pack({"text": texts}, self.tokenizer, **self.options)
            blocks = pa.table({name: blocks[name].cast(pa.list_(pa.int32())) for name in blocks.column_names})
            if blocks.num_rows == 0:
                blocks = pa.table({name: pa.nulls(1, pa.list_(pa.int32())) for name in blocks.column_names})
            counts = np.zeros(blocks.num_rows, dtype=np.int64)
            counts[0] = len(texts)
            parts.append(
                blocks.append_column(BATCH, pa.array(np.full(blocks.num_rows, batch, dtype=np.int64))).append_column(
                    DOCUMENTS, pa.array(counts)
                )
            )
        return pa.concat_tables(parts)


def tokenize_on_ray(
    args: Any, tokenizer: PreTrainedTokenizerBase, output_dir: str | Path, sources: list[dict[str, Any]]
) -> ShardManifest:
    """`write_token_shards` for `args`' sources (a `TokenizeArguments`), read and tokenized on the cluster at
    `args.ray_address`, written under `output_dir`; `sources` as the manifest records them."""
    connect(args.ray_address)
    try:
        return _tokenize(args, tokenizer, Path(output_dir), sources)
    except Exception as err:  # a UserError raised in a task arrives wrapped in Ray's task error
        unwrapped = unwrap_task_error(err)
        if unwrapped is err:
            raise
        raise unwrapped from None


def _tokenize(args: Any, tokenizer: PreTrainedTokenizerBase, output_dir: Path, sources: list) -> ShardManifest:
    import ray  # noqa: PLC0415 - the ray extra: imported only when engine is ray
    import ray.data  # noqa: PLC0415 - as above

    specs = dataset_specs(args)
    lengths = ray.get([_length_task().remote(spec, args.dataset_num_proc) for spec in specs])
    plan = plan_batches(lengths, args.max_train_samples)
    batches = sum(-(-(row["stop"] - row["start"]) // PACK_BATCH_DOCUMENTS) for row in plan)
    workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    manifest = new_manifest(
        tokenizer,
        block_size=args.block_size,
        pack=args.packing,
        separate_documents=separate_documents(args),
        tokenizer_source=args.tokenizer_name_or_path,
        sources=sources,
    )
    writer = ShardWriter(output_dir, manifest, args.blocks_per_shard)
    # blocks reach this process in plan order, as the shards must hold them (tasks still run in parallel). A dataset
    # keeps the context it was built in, so this is set first, and put back for whatever else this process runs
    options = ray.data.DataContext.get_current().execution_options
    saved, options.preserve_order = options.preserve_order, True
    try:
        blocks = (
            ray.data.from_items(plan, override_num_blocks=max(1, min(len(plan), 10_000)))
            .map_batches(ReadBatches(specs, args.dataset_num_proc), batch_size=1, batch_format="pyarrow")
            .map_batches(
                TokenizeBatches,
                fn_constructor_args=(args, manifest.tokenizer_fingerprint),
                batch_size=1,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
            )
        )
        _write_in_order(blocks, writer, batches)
    finally:
        options.preserve_order = saved
    return writer.finish()


def _write_in_order(blocks: Any, writer: ShardWriter, batches: int) -> None:
    """Stream the cluster's blocks into `writer`, checking that all `batches` batches come, each once, in order."""
    columns, last, seen = writer.manifest.columns, -1, 0
    for table in blocks.iter_batches(batch_size=None, batch_format="pyarrow"):
        numbers = table[BATCH].to_numpy()
        if numbers.size == 0:
            continue
        if numbers[0] < last or np.any(np.diff(numbers) < 0):
            raise RuntimeError(f"engine ray: batch {numbers.min()} came after batch {last}: shards out of order")
        seen += int(np.count_nonzero(np.diff(numbers))) + int(numbers[0] != last)
        last = int(numbers[-1])
        written = table.filter(pc.is_valid(table["input_ids"])).select(columns)
        writer.add(written, int(pc.sum(table[DOCUMENTS]).as_py()))
    if seen != batches:
        raise RuntimeError(f"engine ray: {seen} of {batches} batches of documents came back")
