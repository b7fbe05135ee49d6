"""A corpus batch function over a `Dataset` on several processes, without a copy of the parent in each.

Why not `Dataset.map(num_proc=N)` alone: it forks the parent for every call, so each worker starts as a copy of a
process that has imported datasets, pyarrow and pandas (~150 MiB resident before it reads a document), `datasets`
adds a Manager process forked the same way, and each worker then maps the Arrow files it reads. On the 50k-document
benchmark (`benchmarks/corpus_speed.py`) that made the corpus stage's memory, summed over its processes, ~4x
datatrove's at the same process count. Here `Dataset.map` still reads, writes and caches, in this process; each
batch it hands over (`batch_size` rows per worker) is cut into smaller slices and run by N *spawned* workers that
import only the batch function's own module (numpy, regex, xxhash: ~40-60 MiB each). The corpus batch functions
work document by document, so the cut changes nothing in their output.

The batch functions stay pure `dict[str, list] -> dict[str, list]` objects: the same ones run under
`Dataset.map(num_proc=N)` in a user's own script and under Ray Data's `map_batches` on a cluster.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from datasets import Dataset

BatchFunction = Callable[[dict[str, list]], dict[str, Any]]
# slices per worker in one batch of the parent's map: enough to even out slices of unequal cost (the parent's batch
# waits for its slowest slice); the parent's batch stays `batch_size` rows per worker, so it holds little text
SLICES_PER_WORKER = 2

_function: BatchFunction | None = None  # a worker's batch function, set once when the worker starts


def map_batches(
    ds: Dataset, function: BatchFunction, *, batch_size: int, num_proc: int | None = None, **map_kwargs: Any
) -> Dataset:
    """`ds.map(function, batched=True, batch_size=batch_size, **map_kwargs)`, computed by `num_proc` workers.

    The parent's map takes `batch_size * num_proc` rows at a time and the workers get them in slices of
    `batch_size / SLICES_PER_WORKER`, in order; for a function that treats each document on its own (every corpus
    batch function) the output is the same as one process's. With `num_proc` unset or 1, or no more rows than one
    batch, it is that one-process map.
    """
    if not num_proc or num_proc < 2 or len(ds) <= batch_size:
        return ds.map(function, batched=True, batch_size=batch_size, **map_kwargs)
    # spawned, not forked: a fork would carry this process's memory into every worker
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(num_proc, mp_context=context, initializer=_start_worker, initargs=(function,)) as pool:
        slice_size = max(1, batch_size // SLICES_PER_WORKER)
        return ds.map(
            PooledBatches(function, pool, slice_size), batched=True, batch_size=batch_size * num_proc, **map_kwargs
        )


class PooledBatches:
    """The parent's side: cuts a batch into slices of `slice_size` rows, runs them on the pool, joins the results."""

    def __init__(self, function: BatchFunction, pool: Executor | None, slice_size: int):
        self.function, self.pool, self.slice_size = function, pool, slice_size

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        rows = len(next(iter(batch.values()))) if batch else 0
        slices = [
            {key: values[at : at + self.slice_size] for key, values in batch.items()}
            for at in range(0, rows, self.slice_size)
        ]
        return join_outputs(list(self.pool.map(_run_slice, slices)))

    def __reduce__(self):
        # `datasets` hashes the function for its cache fingerprint: hash the computation, not the pool
        return (PooledBatches, (self.function, None, self.slice_size))


def join_outputs(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """One batch function output from the outputs of consecutive slices (lists chained, numpy arrays stacked)."""
    if len(outputs) == 1:
        return outputs[0]
    joined: dict[str, Any] = {}
    for key, first in outputs[0].items():
        parts = [output[key] for output in outputs]
        joined[key] = (
            np.concatenate(parts) if isinstance(first, np.ndarray) else [item for part in parts for item in part]
        )
    return joined


def _start_worker(function: BatchFunction) -> None:
    global _function
    _function = function


def _run_slice(batch: dict[str, list]) -> dict[str, Any]:
    return _function(batch)
