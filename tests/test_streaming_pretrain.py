"""Streaming pretraining data: the tokenize stage's shards equal in-memory packing, pretrain streams them without
tokenizing at start-up, refuses shards of another tokenizer, resumes at the exact next block, and gives each
data-parallel process its own shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import DEMO_DATA, PROJECT, write_yaml
from transformers import AutoTokenizer, TrainerCallback

import llm_recipes.data.shards as shards_module
import llm_recipes.pretrain.streaming as streaming
from llm_recipes.cli import load_recipe
from llm_recipes.data.config import DatasetSpec
from llm_recipes.data.packing import PackedLMCollator, pack_documents, tokenize_documents
from llm_recipes.data.shards import read_shard_manifest, write_token_shards
from llm_recipes.errors import UserError
from llm_recipes.pretrain.build import load_source_texts
from llm_recipes.pretrain.streaming import ShardStream, rank_shards
from llm_recipes.runs.manifest import read_manifest

CLI = [sys.executable, "-m", "llm_recipes.cli"]
PRETRAIN = load_recipe("pretrain")
TOKENIZE = load_recipe("tokenize")
RAW_CORPUS = DEMO_DATA / "raw_corpus.jsonl"


def run_cli(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=PROJECT)


def tokenize_config(source: Path, tokenizer: Path, output: Path, **overrides) -> dict:
    return {
        "dataset_path": str(source),
        "tokenizer_name_or_path": str(tokenizer),
        "block_size": 64,
        "blocks_per_shard": 5,
        "output_dir": str(output),
        **overrides,
    }


def pretrain_config(shards: Path, tokenizer: Path, output: Path, **overrides) -> dict:
    config = {
        "dataset_path": str(shards),
        "tokenizer_name_or_path": str(tokenizer),
        "preset": "llama-tiny",
        "block_size": 64,
        "output_dir": str(output),
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "learning_rate": 3e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    return {**config, **overrides}


@pytest.fixture(scope="module")
def shards(tmp_path_factory, shared_data, base_model_dir) -> Path:
    """The first 3 C4 pages (about 40 blocks of 64 tokens) in shards of 5 blocks, cut in-process."""
    folder = tmp_path_factory.mktemp("shards")
    config = tokenize_config(shared_data / "c4_demo.jsonl", base_model_dir, folder / "out", max_train_samples=3)
    TOKENIZE.main(*TOKENIZE.parse_args(["--config", str(write_yaml(folder / "tokenize.yaml", config))]))
    return folder / "out"


def shard_rows(folder: Path, file: str | None = None) -> list[list[int]]:
    """The blocks of one shard file, or of every shard in file order."""
    files = [file] if file else [shard.file for shard in read_shard_manifest(folder).shards]
    return [row for name in files for row in pq.read_table(folder / name)["input_ids"].to_pylist()]


# --------------------------------------------------------------------------------------------------------------
# The tokenize stage


def test_tokenize_writes_the_blocks_in_memory_packing_makes(tmp_path, shared_data, base_model_dir):
    source = shared_data / "c4_demo.jsonl"
    config = write_yaml(tmp_path / "t.yaml", tokenize_config(source, base_model_dir, tmp_path / "shards"))
    result = run_cli("tokenize", "--config", config, "--blocks_per_shard", "400")
    assert result.returncode == 0, result.stderr[-3000:]

    texts, _ = load_source_texts(DatasetSpec(path=str(source)))
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    expected = pack_documents(tokenize_documents(texts, tokenizer), 64)["input_ids"]
    manifest = read_shard_manifest(tmp_path / "shards")
    assert shard_rows(tmp_path / "shards") == expected  # the same blocks, in the same order
    assert manifest.documents == len(texts) == 300
    assert manifest.blocks == len(expected) and manifest.tokens == sum(map(len, expected))
    assert [shard.blocks for shard in manifest.shards[:-1]] == [400] * (len(manifest.shards) - 1)
    assert 0 < manifest.shards[-1].blocks <= 400 and len(manifest.shards) == -(-len(expected) // 400)
    assert manifest.block_size == 64 and manifest.tokenizer_fingerprint.startswith("sha256:")
    written = json.loads((tmp_path / "shards" / "shards.json").read_text())
    assert written["blocks"] == manifest.blocks and written["sources"][0]["bytes"] == source.stat().st_size
    summary = dict(line.rsplit(None, 1) for line in result.stdout.splitlines() if line.startswith(("blocks", "shards")))
    assert summary == {"blocks": f"{manifest.blocks:,}", "shards": str(len(manifest.shards))}
    assert read_manifest(tmp_path / "shards")["complete"]


def test_shards_cut_batch_by_batch_equal_packing_with_the_same_batches(tmp_path, shared_data, base_model_dir):
    """Six batches of 50 documents: each batch's last, shorter block is kept, and shards run across batches."""
    texts, _ = load_source_texts(DatasetSpec(path=str(shared_data / "c4_demo.jsonl")))
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    manifest = write_token_shards(
        texts.select_columns(["text"]).iter(batch_size=50), tokenizer, tmp_path, block_size=64, blocks_per_shard=333
    )
    expected = pack_documents(tokenize_documents(texts, tokenizer), 64, map_batch_size=50)["input_ids"]
    assert shard_rows(tmp_path) == expected
    assert sum(len(row) < 64 for row in expected) >= 6  # a short block closes every batch
    assert {shard.blocks for shard in manifest.shards[:-1]} == {333} and manifest.documents == 300


def test_separate_documents_shards_carry_position_ids_and_train(tmp_path, shared_data, base_model_dir):
    source = shared_data / "c4_demo.jsonl"
    config = tokenize_config(
        source, base_model_dir, tmp_path / "shards", max_train_samples=2, packing_boundaries="separate"
    )
    TOKENIZE.main(*TOKENIZE.parse_args(["--config", str(write_yaml(tmp_path / "t.yaml", config))]))
    texts, _ = load_source_texts(DatasetSpec(path=str(source)))
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    documents = tokenize_documents(texts.select(range(2)), tokenizer)
    expected = pack_documents(documents, 64, separate_documents=True)
    manifest = read_shard_manifest(tmp_path / "shards")
    written = [pq.read_table(tmp_path / "shards" / shard.file) for shard in manifest.shards]
    assert [row for table in written for row in table["position_ids"].to_pylist()] == expected["position_ids"]
    assert manifest.separate_documents and manifest.columns == ["input_ids", "position_ids"]

    run = pretrain_config(tmp_path / "shards", base_model_dir, tmp_path / "out", packing_boundaries="separate")
    summary = PRETRAIN.main(*PRETRAIN.parse_args(["--config", str(write_yaml(tmp_path / "p.yaml", run))]))
    assert summary["optimizer steps"] == 3 and summary["packing"] == "on, attention within each document"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tokenizer_name_or_path": None}, "tokenizer_name_or_path is required"),
        ({"blocks_per_shard": 0}, "blocks_per_shard: 0 must be >= 1"),
        ({"dataset_path": "missing.jsonl"}, "dataset file not found"),
        ({"eval_split_size": 0.1}, "tokenize writes the training stream; give pretrain its eval data"),
    ],
)
def test_tokenize_config_mistakes_are_user_errors(tmp_path, base_model_dir, overrides, message):
    config = {**tokenize_config(RAW_CORPUS, base_model_dir, tmp_path / "out"), **overrides}
    config = {key: value for key, value in config.items() if value is not None}
    with pytest.raises(UserError, match=message):
        TOKENIZE.parse_args(["--config", str(write_yaml(tmp_path / "t.yaml", config))])


def test_a_broken_shard_folder_is_refused_in_one_line(tmp_path, shards):
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((shards / "shards.json").read_text())
    (broken / "shards.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=f"{broken} lacks {len(manifest['shards'])} of its shards"):
        read_shard_manifest(broken)
    del manifest["block_size"]
    (broken / "shards.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="shards.json is incomplete"):
        read_shard_manifest(broken)


# --------------------------------------------------------------------------------------------------------------
# pretrain on shards


@pytest.mark.slow
def test_pretrain_streams_shards_through_the_console_script(tmp_path, shards, base_model_dir):
    """Eval data comes from eval_dataset_path (tokenized in memory: it is small); nothing is held out of a stream."""
    config = pretrain_config(
        shards, base_model_dir, tmp_path / "out", eval_dataset_path=str(RAW_CORPUS), max_eval_samples=8
    )
    result = run_cli("pretrain", "--config", write_yaml(tmp_path / "p.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_shard_manifest(shards)
    recorded = read_manifest(tmp_path / "out")
    assert recorded["inputs"]["datasets"] == [str(shards), str(RAW_CORPUS)]
    summary = recorded["metrics"]
    assert summary["optimizer steps"] == 3 and summary["training blocks"] == manifest.blocks
    assert summary["tokens per epoch"] == manifest.tokens and summary["training documents"] == 3
    assert summary[f"rows kept from {shards}"].startswith(f"{manifest.blocks:,} blocks, {manifest.tokens:,} tokens")
    assert summary["tokens trained on"] == round(3 * 4 * manifest.tokens / manifest.blocks)
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["epoch"] == pytest.approx(3 * 4 / manifest.blocks)  # epochs of the data, not of max_steps
    assert summary["eval documents"] == 8 and summary["eval perplexity"] < summary["eval perplexity before training"]
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_start_up_reads_no_text_and_only_the_shards_it_trains_on(tmp_path, shards, base_model_dir, monkeypatch):
    """Memory flat in corpus size: nothing is tokenized at start-up, and 2 steps of 4 blocks read 2 of the 5-block
    shards (the Parquet reader holds one row group at a time)."""

    def no_text(*args, **kwargs):
        raise AssertionError("the text was read or tokenized")

    monkeypatch.setattr("llm_recipes.pretrain.trainer.load_pretraining_texts", no_text)
    monkeypatch.setattr("llm_recipes.pretrain.trainer.build_blocks", no_text)
    reads = []
    real = streaming.read_shuffled_blocks
    monkeypatch.setattr(
        streaming, "read_shuffled_blocks", lambda path, *a: reads.append(Path(path).name) or real(path, *a)
    )
    config = pretrain_config(shards, base_model_dir, tmp_path / "out", max_steps=2)
    PRETRAIN.main(*PRETRAIN.parse_args(["--config", str(write_yaml(tmp_path / "p.yaml", config))]))
    manifest = read_shard_manifest(shards)
    order = ShardStream(shards, manifest, seed=0).epoch_order(0)
    assert reads == [manifest.shards[index].file for index in order[:2]]
    assert len(manifest.shards) > 5


def test_shards_of_another_tokenizer_are_refused_in_one_line(tmp_path, shards, base_model_dir, chat_model_dir):
    config = write_yaml(tmp_path / "p.yaml", pretrain_config(shards, chat_model_dir, tmp_path / "out"))
    result = run_cli("pretrain", "--config", config)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: dataset_path: the shards were tokenized with another tokenizer ({base_model_dir}) than this run's; "
        "rerun tokenize with this tokenizer"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"block_size": 128}, "the shards hold blocks of 64 tokens but block_size is 128"),
        ({"max_steps": -1, "num_train_epochs": 1}, "max_steps is required with a shard folder"),
        ({"curriculum": "length"}, "curriculum: a shard folder is read in its own order"),
        ({"packing_boundaries": "separate"}, r"the shards were cut with packing cross \(packing, packing_boundaries\)"),
    ],
)
def test_stream_config_mistakes_are_user_errors(tmp_path, shards, base_model_dir, overrides, message):
    config = pretrain_config(shards, base_model_dir, tmp_path / "out", **overrides)
    with pytest.raises(UserError, match=message):
        PRETRAIN.parse_args(["--config", str(write_yaml(tmp_path / "p.yaml", config))])


def test_each_rank_reads_its_own_shards_and_more_ranks_than_shards_is_refused(shards):
    manifest = read_shard_manifest(shards)
    count = len(manifest.shards)
    ranks = [ShardStream(shards, manifest, rank=rank, world_size=3, seed=1) for rank in range(3)]
    assert sorted(index for stream in ranks for index in stream.shards) == list(range(count))
    assert [stream.shards for stream in ranks] == [list(range(rank, count, 3)) for rank in range(3)]
    assert ranks[0].epoch_order(0) != ranks[0].epoch_order(1)  # a new shard order every epoch
    assert sorted(ranks[0].epoch_order(1)) == ranks[0].shards
    with pytest.raises(UserError, match=f"{count} shards cannot feed {count + 1} data-parallel processes"):
        rank_shards(count, 0, count + 1)


def test_a_stream_started_at_a_block_continues_the_whole_stream_across_epochs(shards):
    manifest = read_shard_manifest(shards)
    stream = ShardStream(shards, manifest, rank=1, world_size=2, seed=3)
    length = stream.blocks_per_epoch
    whole = [block["input_ids"] for _, block in zip(range(2 * length + 7), iter(stream), strict=False)]
    assert whole[length : 2 * length] != whole[:length]  # epoch 2 visits the shards in another order
    assert sorted(map(tuple, whole[length : 2 * length])) == sorted(map(tuple, whole[:length]))
    for start in (0, 3, 5, length - 1, length + 6):
        resumed = [block["input_ids"] for _, block in zip(range(7), iter(stream.starting_at(start)), strict=False)]
        assert resumed == whole[start : start + 7]


@pytest.fixture(scope="module")
def grouped_shards(tmp_path_factory, shared_data, base_model_dir) -> Path:
    """The first 3 C4 pages in shards of 10 blocks, in row groups of 4 (4, 4, 2): several row groups per shard."""
    folder = tmp_path_factory.mktemp("grouped")
    texts, _ = load_source_texts(DatasetSpec(path=str(shared_data / "c4_demo.jsonl")))
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shards_module, "ROW_GROUP_BLOCKS", 4)
        write_token_shards(
            texts.select(range(3)).select_columns(["text"]).iter(batch_size=2000),
            tokenizer,
            folder,
            block_size=64,
            blocks_per_shard=10,
        )
    return folder


def stream_blocks(stream: ShardStream, count: int) -> list[tuple[int, ...]]:
    return [tuple(block["input_ids"]) for _, block in zip(range(count), iter(stream), strict=False)]


def test_blocks_are_shuffled_within_row_groups_once_each_and_anew_every_epoch(grouped_shards):
    manifest = read_shard_manifest(grouped_shards)
    files = [[tuple(row) for row in shard_rows(grouped_shards, shard.file)] for shard in manifest.shards]
    row_groups = [pq.ParquetFile(grouped_shards / shard.file).metadata.num_row_groups for shard in manifest.shards]
    assert row_groups == [3, 3, 3, 3, 3, 1]  # 5 shards of 10 blocks and one of 1-4
    stream = ShardStream(grouped_shards, manifest, seed=3)
    length = stream.blocks_per_epoch
    assert length == manifest.blocks and len(set(map(tuple, (row for rows in files for row in rows)))) == length
    whole = stream_blocks(stream, 3 * length)
    epochs = [whole[epoch * length : (epoch + 1) * length] for epoch in range(3)]
    leading_groups = []  # per shard and epoch: whether its first row group came first
    shard_orders: dict[int, list] = {}  # shard -> its blocks as each epoch read them
    for epoch, blocks in enumerate(epochs):
        assert sorted(blocks) == sorted(row for rows in files for row in rows)  # every block once per epoch
        # shards come whole in the epoch's shard order, and a row group's blocks together (one in memory at a time)
        at = 0
        for index in stream.epoch_order(epoch):
            read = blocks[at : at + len(files[index])]
            at += len(files[index])
            assert sorted(read) == sorted(files[index])
            groups = [sorted(files[index][first : first + 4]) for first in range(0, len(files[index]), 4)]
            spans, first = [], 0
            while first < len(read):
                size = len(next(group for group in groups if read[first] in group))
                spans.append(sorted(read[first : first + size]))
                first += size
            assert sorted(spans) == sorted(groups)
            leading_groups.append(spans[0] == groups[0])
            shard_orders.setdefault(index, []).append(read)
            if len(files[index]) == 10:
                assert read != files[index]  # not file order
    assert not all(leading_groups)  # row groups are shuffled too
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]  # a new order every epoch
    for reads in shard_orders.values():  # ... inside every shard too, not only of the shards
        assert len(reads[0]) < 2 or reads[0] != reads[1] != reads[2] != reads[0]
    for start in (0, 1, 4, 9, 13, length - 1, length + 6, 2 * length + 3):
        assert stream_blocks(stream.starting_at(start), 7) == whole[start : start + 7]  # resumes mid-row-group
    # shuffle_blocks false: file order inside each shard, shards in the same epoch order
    in_file_order = stream_blocks(replace(stream, shuffle_blocks=False), length)
    assert in_file_order == [row for index in stream.epoch_order(0) for row in files[index]]
    assert in_file_order != epochs[0]


def test_pretrain_trains_on_shuffled_blocks_unless_shuffle_blocks_is_false(
    tmp_path, shards, base_model_dir, monkeypatch
):
    batches = []
    real_call = PackedLMCollator.__call__
    monkeypatch.setattr(
        PackedLMCollator,
        "__call__",
        lambda self, examples: batches.append([list(e["input_ids"]) for e in examples]) or real_call(self, examples),
    )
    manifest = read_shard_manifest(shards)
    trained = {}
    for shuffle in (True, False):
        batches.clear()
        config = pretrain_config(shards, base_model_dir, tmp_path / str(shuffle), max_steps=2, shuffle_blocks=shuffle)
        PRETRAIN.main(*PRETRAIN.parse_args(["--config", str(write_yaml(tmp_path / "p.yaml", config))]))
        trained[shuffle] = [block for batch in batches for block in batch]
        assert read_manifest(tmp_path / str(shuffle))["settings"]["shuffle_blocks"] is shuffle
    order = ShardStream(shards, manifest, seed=0).epoch_order(0)
    assert trained[False] == [row for index in order for row in shard_rows(shards, manifest.shards[index].file)][:8]
    assert trained[True] == [list(block) for block in stream_blocks(ShardStream(shards, manifest, seed=0), 8)]
    assert trained[True] != trained[False]


class Interrupted(Exception):
    pass


class InterruptAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise Interrupted(f"stopped after saving step {state.global_step}")


def test_a_resumed_run_trains_on_the_blocks_an_uninterrupted_one_does(tmp_path, shards, base_model_dir, monkeypatch):
    """Killed after step 3's checkpoint, rerun: steps 4-14 see exactly the blocks of the uninterrupted run's steps
    4-14 (the stream wraps into a second epoch on the way), and the resumed stream starts at the next block without
    reading the shards already trained on."""
    batches, reads = [], []
    real_call, real_read = PackedLMCollator.__call__, streaming.read_shuffled_blocks

    def recording_call(self, examples):
        batches.append([list(example["input_ids"]) for example in examples])
        return real_call(self, examples)

    monkeypatch.setattr(PackedLMCollator, "__call__", recording_call)

    def recording_read(path, columns, skip=0, order_seed=None):
        reads.append((Path(path).name, skip))
        return real_read(path, columns, skip, order_seed)

    monkeypatch.setattr(streaming, "read_shuffled_blocks", recording_read)

    def run(output: Path, callbacks=()) -> list:
        batches.clear()
        reads.clear()
        config = pretrain_config(shards, base_model_dir, output, max_steps=14, save_strategy="steps", save_steps=3)
        config_file = write_yaml(tmp_path / "p.yaml", config)
        try:
            PRETRAIN.main(*PRETRAIN.parse_args(["--config", str(config_file)]), callbacks=callbacks)
        finally:
            seen = list(batches)
        return seen

    manifest = read_shard_manifest(shards)
    assert 14 * 4 > manifest.blocks  # the uninterrupted run goes into a second epoch
    straight = run(tmp_path / "straight")
    assert len(straight) == 14
    with pytest.raises(Interrupted):
        run(tmp_path / "resumed", callbacks=[InterruptAfterFirstSave()])
    resumed = run(tmp_path / "resumed")
    assert resumed == straight[3:]
    # 12 blocks trained: the resumed stream opened the third shard of the epoch's order at its third block
    order = ShardStream(shards, manifest, seed=0).epoch_order(0)
    assert reads[0] == (manifest.shards[order[2]].file, 2)


@pytest.mark.slow
def test_two_cpu_processes_read_disjoint_shards(tmp_path, shards, base_model_dir):
    """A real 2-process DDP run (gloo): each process records the shards it opens."""
    wrapper = tmp_path / "recording_pretrain.py"
    wrapper.write_text(
        "import os, sys\n"
        "from pathlib import Path\n"
        "import llm_recipes.pretrain.streaming as streaming\n"
        "from llm_recipes.cli import load_recipe\n"
        "from llm_recipes.configs import run_recipe\n"
        "real = streaming.read_shuffled_blocks\n"
        "def recording(path, columns, skip=0, order_seed=None):\n"
        "    with open(os.path.join(os.environ['READS_DIR'], 'rank-' + os.environ['RANK']), 'a') as log:\n"
        "        log.write(Path(path).name + '\\n')\n"
        "    return real(path, columns, skip, order_seed)\n"
        "streaming.read_shuffled_blocks = recording\n"
        "recipe = load_recipe('pretrain')\n"
        "run_recipe(recipe.main, recipe.parse_args)\n"
    )
    config = write_yaml(tmp_path / "p.yaml", pretrain_config(shards, base_model_dir, tmp_path / "out", max_steps=4))
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(wrapper), "--config", str(config),
    ]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "READS_DIR": str(tmp_path)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=PROJECT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_shard_manifest(shards)
    opened = {rank: (tmp_path / f"rank-{rank}").read_text().split() for rank in (0, 1)}
    for rank in (0, 1):
        # 4 steps x 4 blocks = 16 blocks per process: its first 4 shards of 5 blocks, in its epoch order
        order = ShardStream(shards, manifest, rank=rank, world_size=2, seed=0).epoch_order(0)
        assert opened[rank] == [manifest.shards[index].file for index in order[:4]]
    assert not set(opened[0]) & set(opened[1])
    summary = read_manifest(tmp_path / "out")["metrics"]
    assert summary["tokens trained on"] == round(4 * 4 * 2 * manifest.tokens / manifest.blocks)
