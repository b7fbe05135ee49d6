"""Where the corpus steps run: `datasets` on this machine (`llm_recipes.corpus.steps`, `num_proc` processes), or
Ray Data on a cluster (`engine: ray`).

    ray_engine.py   the clean-corpus stage on Ray: read, each step as map_batches (+ a group-by for dedup), counts
                    for the report, checkpoints, splits
    ray_io.py       connecting, sources read one per task, Parquet step checkpoints, and the
                    small cluster-side passes every step shares (counts, sets of documents, row positions)
    ray_ops.py      the shuffles: a group-by over coarse key partitions, a join made of it, sums
    ray_dedup.py    exact and MinHash dedup as group-bys, candidate pairs verified on the cluster
    ray_components.py  connected components by large-star/small-star rounds; what the report needs from them
    ray_splits.py   seeded splits, duplicates removed across them, Hub-layout shards

Both engines run the same batch functions (`NormalizeBatch`, `FilterBatch`, `RedactPIIBatch`, `AugmentBatch`,
`DecontaminationBatch`, `ExactHashBatch`, `MinHashBatch`) and the same band, candidate and Jaccard rules, and keep
the same documents: every document carries `_order`, its place in the single-machine engine's row order, so "the
first of a duplicate group" means the same document in both. This module stays light (no ray, no datasets): the
recipe's config check imports it.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from llm_recipes.errors import UserError


def check_engine(args: Any) -> None:
    """One clear line for settings the Ray engine cannot honour, before anything is read; an unset output_format
    becomes the engine's own (arrow on one machine, Parquet shards from a cluster)."""
    if args.output_format is None:
        args.output_format = "parquet" if args.engine == "ray" else "arrow"
    if args.engine != "ray":
        if args.ray_address:
            raise UserError("ray_address is for engine: ray; set engine: ray or drop ray_address")
        return
    if importlib.util.find_spec("ray") is None:
        raise UserError("engine: ray needs Ray Data on this machine: pip install 'llm-recipes[ray]'")
    if args.output_format != "parquet":
        raise UserError("engine: ray writes Parquet shards from the cluster; set output_format: parquet")
    if args.push_to_hub:
        raise UserError(
            "engine: ray does not push; upload output_dir (Hub-layout Parquet shards) with `hf upload` afterwards"
        )
