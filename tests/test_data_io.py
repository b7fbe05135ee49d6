"""Reading datasets from files, globs, folders and save_to_disk output; mixing by weight; holding out eval rows."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict

from llm_recipes.data.config import DatasetSpec
from llm_recipes.data.io import load_dataset_source
from llm_recipes.data.loading import load_training_data
from llm_recipes.data.mixture import hold_out, mix_datasets
from llm_recipes.errors import UserError

ROWS = [{"instruction": f"Say {i}.", "input": "", "output": f"{i}"} for i in range(10)]


def test_reads_json_jsonl_csv_parquet_and_globs(tmp_path):
    dataset = Dataset.from_list(ROWS)
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    dataset.to_json(tmp_path / "b.jsonl")
    dataset.to_csv(tmp_path / "c.csv", index=False)
    dataset.to_parquet(tmp_path / "d.parquet")
    for name in ("a.json", "b.jsonl", "c.csv", "d.parquet"):
        loaded = load_dataset_source(str(tmp_path / name))
        assert len(loaded) == 10 and str(loaded[3]["output"]) == "3", name  # csv infers ints
    parts = tmp_path / "parts"
    parts.mkdir()
    for i in range(2):
        Dataset.from_list(ROWS[i * 5 : (i + 1) * 5]).to_json(parts / f"part-{i}.jsonl")
    assert len(load_dataset_source(str(parts / "part-*.jsonl"))) == 10
    assert len(load_dataset_source(str(parts))) == 10  # a folder of data files


def test_reads_save_to_disk_folders(tmp_path):
    Dataset.from_list(ROWS).save_to_disk(tmp_path / "single")
    assert len(load_dataset_source(str(tmp_path / "single"))) == 10
    DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[:2])}).save_to_disk(tmp_path / "dd")
    assert len(load_dataset_source(str(tmp_path / "dd"), split="test")) == 2
    with pytest.raises(UserError, match=r"has splits \['train', 'test'\], not 'validation'"):
        load_dataset_source(str(tmp_path / "dd"), split="validation")


def test_reads_one_split_of_hub_style_parquet_shards(tmp_path):
    (tmp_path / "data").mkdir()
    for split, count, shards in (("train", 10, 2), ("validation", 3, 1)):
        ds = Dataset.from_dict({"text": [f"{split} {i}" for i in range(count)]})
        for index in range(shards):
            shard = ds.shard(shards, index, contiguous=True)
            shard.to_parquet(str(tmp_path / "data" / f"{split}-{index:05d}-of-{shards:05d}.parquet"))
    (tmp_path / "corpus_report.json").write_text("{}")  # a report beside the shards is not data
    assert sorted(load_dataset_source(str(tmp_path), split="train")["text"]) == sorted(f"train {i}" for i in range(10))
    assert len(load_dataset_source(str(tmp_path), split="validation")) == 3
    with pytest.raises(UserError, match=r"has splits \['train', 'validation'\], not 'test'"):
        load_dataset_source(str(tmp_path), split="test")


def test_empty_file_is_one_line_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="is empty"):
        load_dataset_source(str(tmp_path / "empty.jsonl"))


def test_malformed_json_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    with pytest.raises(UserError) as caught:
        load_dataset_source(str(bad))
    assert str(caught.value) == f"dataset file '{bad}' line 2 is not valid JSON: expecting value at column 10"


def test_unknown_suffix_and_empty_glob(tmp_path):
    (tmp_path / "notes.docx").write_text("x")
    with pytest.raises(UserError, match="cannot tell the format"):
        load_dataset_source(str(tmp_path / "notes.docx"))
    with pytest.raises(UserError, match="matches no file"):
        load_dataset_source(str(tmp_path / "*.jsonl"))


def test_weights_scale_row_counts_deterministically():
    a = Dataset.from_list([{"text": f"a{i}"} for i in range(10)])
    b = Dataset.from_list([{"text": f"b{i}"} for i in range(10)])
    mixed = mix_datasets([(a, 2.0), (b, 0.5)], seed=1)
    texts = mixed["text"]
    assert sum(t.startswith("a") for t in texts) == 20 and sum(t.startswith("b") for t in texts) == 5
    assert len({t for t in texts if t.startswith("b")}) == 5  # a half of b, without repeats
    assert mix_datasets([(a, 2.0), (b, 0.5)], seed=1)["text"] == texts


def test_hold_out_share_and_count():
    dataset = Dataset.from_list([{"text": str(i)} for i in range(20)])
    train, evaluation = hold_out(dataset, 0.25)
    assert (len(train), len(evaluation)) == (15, 5)
    train, evaluation = hold_out(dataset, 3)
    assert (len(train), len(evaluation)) == (17, 3) and not set(train["text"]) & set(evaluation["text"])
    assert hold_out(dataset, 0) == (dataset, None)


def test_mixture_of_formats_and_eval_split(tmp_path, shared_data):
    specs = [
        DatasetSpec(path=str(shared_data / "alpaca_en_demo.json"), weight=0.1),
        DatasetSpec(path=str(shared_data / "dpo_en_demo.json"), weight=0.2),
    ]
    data = load_training_data(specs, eval_size=10, seed=0)
    assert data.shape == "messages" and data.train.column_names == ["messages"]
    assert len(data.train) + len(data.eval) == 100 + 60
    assert [report.source_format for _, report in data.reports] == ["alpaca", "sharegpt"]


def test_mixture_of_different_shapes_is_refused(tmp_path, shared_data):
    specs = [
        DatasetSpec(path=str(shared_data / "alpaca_en_demo.json")),
        DatasetSpec(path=str(shared_data / "c4_demo.jsonl")),
    ]
    with pytest.raises(UserError, match="a mixture must share one shape, but these datasets become messages, text"):
        load_training_data(specs)
