"""Corpus steps on several processes (`llm_recipes.corpus.parallel`): the same output as one process, computed by
workers that are not copies of the parent (a fork of a process that imported `datasets` carries ~150 MiB into
each worker; on the 50k-document benchmark that put the stage at ~4x datatrove's memory summed over processes),
and batches whose new columns hold only None.

Nothing heavy is imported at module level: the workers import this module to find the probe filter below.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[1]

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
    from llm_recipes.corpus.steps import build_steps, run_steps

    steps = build_steps([{"callable": {"fn": "test_corpus_parallel:keep_unless_datasets_loaded"}}])
    kept, (stats,) = run_steps(_dataset(), steps, num_proc=2, batch_size=4)
    # the parent imported datasets: a forked worker would drop all 42 documents
    assert stats.drop_reasons == {}
    assert len(kept) == len(TEXTS)


def test_same_output_as_one_process():
    from llm_recipes.corpus.steps import build_steps, run_steps

    spec = [{"filter": ["gopher_repetition", "c4"]}, {"exact_dedup": {}}, {"near_dedup": {"threshold": 0.7}}]
    one, one_stats = run_steps(_dataset(), build_steps(spec), num_proc=None, batch_size=5)
    two, two_stats = run_steps(_dataset(), build_steps(spec), num_proc=2, batch_size=5)
    assert one.to_dict() == two.to_dict()
    assert [(s.docs_out, s.chars_out, s.drop_reasons) for s in one_stats] == [
        (s.docs_out, s.chars_out, s.drop_reasons) for s in two_stats
    ]
    assert one_stats[-1].docs_in > one_stats[-1].docs_out  # near-dedup removed something


def test_map_batches_joins_lists_and_arrays_in_order():
    from llm_recipes.corpus.dedup import MinHashBatch, MinHashConfig
    from llm_recipes.corpus.parallel import map_batches

    ds = _dataset()
    config = MinHashConfig(num_perm=16)
    single = ds.map(MinHashBatch(config), batched=True, batch_size=3)
    pooled = map_batches(ds, MinHashBatch(config), batch_size=3, num_proc=2)
    assert np.array_equal(np.array(single["minhash"]), np.array(pooled["minhash"]))
    assert pooled["text"] == TEXTS and pooled.column_names == single.column_names


@pytest.mark.parametrize("num_proc", [1, 2])
def test_a_first_batch_that_drops_nothing_through_the_console_script(tmp_path, num_proc):
    """The filter step's drop reasons were typed from the first batch written: one that dropped nothing held only
    None, and `datasets` refused to write the column ("its type in this file is null")."""
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"text": text} for text in TEXTS[:6]] + [{"text": "too short"}, {"text": "also short"}]
    corpus.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    config = tmp_path / "clean.yaml"  # JSON is YAML
    out = tmp_path / "out"
    steps = [{"length": {"min_words": 5}}]
    config.write_text(json.dumps({"input_paths": [str(corpus)], "output_dir": str(out), "steps": steps}))
    result = subprocess.run(
        [str(PROJECT / ".venv" / "bin" / "llm-recipes"), "clean-corpus", "--config", str(config)]
        + ["--batch_size", "2", "--num_proc", str(num_proc)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "corpus_report.json").read_text())
    assert report["steps"][0]["drop_reasons"] == {"length:min_words": 2}
    assert report["steps"][0]["docs_out"] == 6
