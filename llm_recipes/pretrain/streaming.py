"""Pretraining from a shard folder (`llm-recipes tokenize`'s output) as a stream: nothing is tokenized at start-up
and memory does not grow with the corpus (one Parquet row group per process at a time).

Each data-parallel rank reads its own shards (shard i goes to rank i % world_size); each epoch visits a rank's
shards in an order drawn from the seed and the epoch, blocks in file order inside a shard. The stream never ends
(epoch after epoch), so every rank always has a next batch and training runs for `max_steps`.

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

from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from transformers import TrainerCallback

from llm_recipes.data.shards import ShardManifest, read_blocks
from llm_recipes.errors import UserError


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
                yield from read_blocks(self.folder / shard.file, self.manifest.columns, skip)
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
