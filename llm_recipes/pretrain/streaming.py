"""Pretraining from a shard folder (`llm-recipes tokenize`'s output) as a stream: nothing is tokenized at start-up
and memory does not grow with the corpus (one Parquet row group per process at a time).

Each data-parallel rank reads its own shards (shard i goes to rank i % world_size); each epoch visits a rank's
shards in an order drawn from the seed and the epoch. The stream never ends (epoch after epoch), so every rank
always has a next batch and training runs for `max_steps`.

Inside a shard, blocks are shuffled (`shuffle_blocks: true`, the default): tokenize writes a document's blocks next
to each other, and in file order they would share a batch every epoch. The shuffle stays within what one row group
holds (`ROW_GROUP_BLOCKS` blocks; memory is still one row group): the shard's row groups come in an order drawn from
the seed, the epoch and the shard, and each row group's blocks in an order drawn from those and the row group. Every
block is read once per epoch, each epoch in another order, and the orders are pure functions of (seed, epoch,
shard), so a resumed stream continues the same shuffled order at its next block. `shuffle_blocks: false` reads
blocks in file order (the order tokenize wrote them).

Resuming is exact and cheap: the Trainer asks to skip the batches the checkpoint already trained on
(`get_resumed_dataloader`), and the stream starts at that block -- whole shards and row groups before it are
skipped from the manifest's counts and the Parquet footers, never read.

Why not accelerate's handling of an iterable dataset: it either reads the stream on rank 0 and sends each rank
its slice (`dispatch_batches`), or has every rank read the whole stream and keep a slice (`IterableDatasetShard`);
both read every shard somewhere for every rank. The loader here is a plain `DataLoader` per rank (the Trainer
moves each batch to the device itself).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from transformers import TrainerCallback

from llm_recipes.data.shards import ShardManifest, read_blocks
from llm_recipes.errors import UserError


def read_shuffled_blocks(
    path: str | Path, columns: list[str], skip: int = 0, order_seed: str | None = None
) -> Iterator[dict[str, list[int]]]:
    """One shard's blocks from block `skip` on: in file order without `order_seed`, else row groups and the blocks
    inside each in orders drawn from `order_seed` (the same seed, the same order). One row group in memory at a
    time; row groups wholly before `skip` in that order are never read (their sizes come from the footer)."""
    if order_seed is None:
        yield from read_blocks(path, columns, skip)
        return
    shard = pq.ParquetFile(path)
    groups = list(range(shard.metadata.num_row_groups))
    random.Random(order_seed).shuffle(groups)
    for group in groups:
        rows = shard.metadata.row_group(group).num_rows
        if skip >= rows:
            skip -= rows
            continue
        # drawn from the seed and the row group alone, never from `skip`: a resumed read gets the same order
        order = list(range(rows))
        random.Random(f"{order_seed}:{group}").shuffle(order)
        table = shard.read_row_group(group, columns=columns)
        lists = {name: table.column(name).to_pylist() for name in columns}
        for row in order[skip:]:
            yield {name: values[row] for name, values in lists.items()}
        skip = 0


def rank_shards(shard_count: int, rank: int, world_size: int) -> list[int]:
    """The shards one data-parallel rank reads: i % world_size == rank."""
    if shard_count < world_size:
        raise UserError(
            f"dataset_path: {shard_count} shards cannot feed {world_size} data-parallel processes (each reads its "
            "own); rerun tokenize with a smaller blocks_per_shard"
        )
    return list(range(rank, shard_count, world_size))


@dataclass
class ShardStream(IterableDataset):
    """The blocks of one rank's shards, epoch after epoch, from block `start` of this rank's stream on."""

    folder: Path
    manifest: ShardManifest
    rank: int = 0
    world_size: int = 1
    seed: int = 42
    start: int = 0
    shuffle_blocks: bool = True

    def __post_init__(self):
        IterableDataset.__init__(self)

    @property
    def shards(self) -> list[int]:
        return rank_shards(len(self.manifest.shards), self.rank, self.world_size)

    @property
    def blocks_per_epoch(self) -> int:
        return sum(self.manifest.shards[index].blocks for index in self.shards)

    def epoch_order(self, epoch: int) -> list[int]:
        order = self.shards
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def block_order_seed(self, epoch: int, shard: int) -> str | None:
        """What a shard's block order in an epoch is drawn from (None: file order)."""
        return f"{self.seed}:{epoch}:{shard}" if self.shuffle_blocks else None

    def starting_at(self, block: int) -> ShardStream:
        """The same stream, from this rank's `block`-th block on (counted across epochs)."""
        return replace(self, start=block)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        if worker is not None and worker.num_workers > 1:
            # every worker would read the same blocks; one reader per rank keeps the order resumable
            raise UserError("dataloader_num_workers: a shard stream is read by one process per rank; set it to 0")
        per_epoch = self.blocks_per_epoch
        if per_epoch == 0:
            raise UserError(f"dataset_path: rank {self.rank}'s shards hold no blocks")
        epoch, skip = divmod(self.start, per_epoch)
        while True:
            for index in self.epoch_order(epoch):
                shard = self.manifest.shards[index]
                if skip >= shard.blocks:
                    skip -= shard.blocks
                    continue
                order_seed = self.block_order_seed(epoch, index)
                yield from read_shuffled_blocks(self.folder / shard.file, self.manifest.columns, skip, order_seed)
                skip = 0
            epoch += 1


class StreamEpochs(TrainerCallback):
    """Epochs of a stream as the data has them: the Trainer, knowing no length, counts `max_steps` as one epoch.
    Set at each step's end, before the Trainer logs or saves it: this rank's blocks trained on over its blocks per
    epoch."""

    def __init__(self, stream: ShardStream):
        self.blocks_per_epoch = stream.blocks_per_epoch

    def on_step_end(self, args, state, control, **kwargs):
        blocks = state.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps
        state.epoch = blocks / self.blocks_per_epoch


def stream_loader(stream: ShardStream, batch_size: int, collate_fn: Any, pin_memory: bool = False) -> DataLoader:
    """A rank's loader: its own shards, in its own process (no worker processes, see `ShardStream.__iter__`)."""
    return DataLoader(stream, batch_size=batch_size, collate_fn=collate_fn, pin_memory=pin_memory)
