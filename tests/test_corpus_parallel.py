"""Corpus steps on several processes (`llm_recipes.data.parallel`): the same output as one process, computed by
workers that are not copies of the parent (a fork of a process that imported `datasets` carries ~150 MiB into
each worker; on the 50k-document benchmark that put the stage at ~4x datatrove's memory summed over processes).

Nothing heavy is imported at module level: the workers import this module to find the probe filter below.
"""

from __future__ import annotations

import sys

import numpy as np

TEXTS = [
    f"Document {i} talks about the weather in town number {i % 7}. It was sunny and warm. People went outside. "
    f"They walked in the park and bought ice cream from a stand near the lake, paying {i} coins. The children "
    f"played football on the grass until the evening came. Then everyone went home for dinner with {i} friends."
    for i in range(40)
]
# a near duplicate and an exact duplicate, so near-dedup has work to do
TEXTS += [TEXTS[3].replace("sunny", "cloudy"), TEXTS[5]]


def keep_unless_datasets_loaded(text: str) -> bool:
    """A callable filter that drops every document in a process where `datasets` was imported."""
    return "datasets" not in sys.modules


def _dataset():
    from datasets import Dataset

    return Dataset.from_dict({"id": [str(i) for i in range(len(TEXTS))], "text": TEXTS})


def test_workers_do_not_carry_the_parent():
    from llm_recipes.data.corpus_steps import build_steps, run_steps

    steps = build_steps([{"callable": {"fn": "test_corpus_parallel:keep_unless_datasets_loaded"}}])
    kept, (stats,) = run_steps(_dataset(), steps, num_proc=2, batch_size=4)
    # the parent imported datasets: a forked worker would drop all 42 documents
    assert stats.drop_reasons == {}
    assert len(kept) == len(TEXTS)


def test_same_output_as_one_process():
    from llm_recipes.data.corpus_steps import build_steps, run_steps

    spec = [{"filter": ["gopher_repetition", "c4"]}, {"exact_dedup": {}}, {"near_dedup": {"threshold": 0.7}}]
    one, one_stats = run_steps(_dataset(), build_steps(spec), num_proc=None, batch_size=5)
    two, two_stats = run_steps(_dataset(), build_steps(spec), num_proc=2, batch_size=5)
    assert one.to_dict() == two.to_dict()
    assert [(s.docs_out, s.chars_out, s.drop_reasons) for s in one_stats] == [
        (s.docs_out, s.chars_out, s.drop_reasons) for s in two_stats
    ]
    assert one_stats[-1].docs_in > one_stats[-1].docs_out  # near-dedup removed something


def test_map_batches_joins_lists_and_arrays_in_order():
    from llm_recipes.data.dedup import MinHashBatch, MinHashConfig
    from llm_recipes.data.parallel import map_batches

    ds = _dataset()
    config = MinHashConfig(num_perm=16)
    single = ds.map(MinHashBatch(config), batched=True, batch_size=3)
    pooled = map_batches(ds, MinHashBatch(config), batch_size=3, num_proc=2)
    assert np.array_equal(np.array(single["minhash"]), np.array(pooled["minhash"]))
    assert pooled["text"] == TEXTS and pooled.column_names == single.column_names
