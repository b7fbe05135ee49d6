"""The tokenize stage in the pipeline: between train-tokenizer and pretrain, its corpus and tokenizer chained from
the stages before it, and pretrain streaming its shard folder with the block size and packing it cut."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DEMO_DATA, PROJECT

from llm_recipes.configs import ConfigError
from llm_recipes.data.shards import read_shard_manifest
from llm_recipes.pipeline.plan import PipelineSettings, build_plan
from llm_recipes.runs.manifest import read_manifest

CLI = [sys.executable, "-m", "llm_recipes.cli"]


def streaming_pipeline(out: Path, tokenizer: str | None = None, **pretrain) -> dict:
    """clean-corpus -> train-tokenizer -> tokenize -> pretrain, small; `tokenizer`: an existing one instead of
    training it."""
    config = {
        "pipeline": {"output_root": str(out), "use_existing": {"train-tokenizer": tokenizer} if tokenizer else {}},
        "clean-corpus": {
            "input_paths": [str(DEMO_DATA / "raw_corpus.jsonl")],
            "steps": [{"normalize": "web"}, {"length": {"min_words": 20}}, {"exact_dedup": {}}],
            "validation_size": 0,
            "test_size": 0,
        },
        "train-tokenizer": {"vocab_size": 400},
        "tokenize": {"block_size": 64, "blocks_per_shard": 40},
        "pretrain": {
            "preset": "llama-tiny",
            "max_steps": 3,
            "per_device_train_batch_size": 4,
            "learning_rate": 3e-3,
            "logging_steps": 1,
            "save_strategy": "no",
            "use_cpu": True,
            "disable_tqdm": True,
            "seed": 0,
            **pretrain,
        },
    }
    return config


def plan_of(config: dict):
    sections = {name: section for name, section in config.items() if name != "pipeline"}
    return {step.stage: step for step in build_plan(PipelineSettings(**config["pipeline"]), sections)}


def test_tokenize_sits_between_train_tokenizer_and_pretrain_and_feeds_it_its_shards(tmp_path):
    out = tmp_path / "out"
    steps = plan_of(streaming_pipeline(out))
    assert list(steps)[:4] == ["clean-corpus", "train-tokenizer", "tokenize", "pretrain"]
    assert steps["tokenize"].config["dataset_path"] == str(out / "clean-corpus")
    assert steps["tokenize"].config["tokenizer_name_or_path"] == str(out / "train-tokenizer")
    assert steps["tokenize"].chained == {"dataset_path": "clean-corpus", "tokenizer_name_or_path": "train-tokenizer"}
    pretrain = steps["pretrain"]
    assert pretrain.config["dataset_path"] == str(out / "tokenize")  # the shard folder, not the corpus
    assert pretrain.config["tokenizer_name_or_path"] == str(out / "train-tokenizer")
    assert pretrain.config["block_size"] == 64  # tokenize's, filled in
    assert pretrain.chained == {
        "dataset_path": "tokenize",
        "tokenizer_name_or_path": "train-tokenizer",
        "block_size": "tokenize",
    }
    # without a tokenize section the plan is as before: pretrain reads the cleaned corpus, no tokenize row
    config = streaming_pipeline(out)
    del config["tokenize"]
    steps = plan_of(config)
    assert "tokenize" not in steps and steps["pretrain"].config["dataset_path"] == str(out / "clean-corpus")
    assert "block_size" not in steps["pretrain"].config


def test_pretrain_takes_the_tokenizer_of_the_shards_when_nothing_else_names_one(tmp_path):
    config = streaming_pipeline(tmp_path / "out")
    del config["train-tokenizer"], config["clean-corpus"]
    config["tokenize"].update(dataset_path="corpus.jsonl", tokenizer_name_or_path="some/tokenizer")
    steps = plan_of(config)
    assert steps["pretrain"].config["tokenizer_name_or_path"] == "some/tokenizer"
    assert steps["pretrain"].chained["tokenizer_name_or_path"] == "tokenize"


@pytest.mark.parametrize(
    ("pretrain", "message"),
    [
        (
            {"block_size": 128},
            "pretrain.block_size: 128 but tokenize cuts its shards with block_size 64; set the same in both sections "
            "(or leave pretrain's out)",
        ),
        ({"packing_boundaries": "separate"}, "pretrain.packing_boundaries: separate but tokenize cuts its shards"),
        ({"max_steps": -1}, "pretrain.max_steps: required when pretrain streams tokenize's shards"),
        ({"curriculum": "length"}, "pretrain.curriculum: tokenize's shards are read in their own order"),
    ],
)
def test_a_pretrain_section_that_cannot_read_the_shards_is_refused_in_one_line(tmp_path, pretrain, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_of(streaming_pipeline(tmp_path / "out", **pretrain))


def run_pipeline(config: dict, path: Path, *extra: str) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    command = [*CLI, "pipeline", "--config", str(path), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=PROJECT)


def test_the_pipeline_tokenizes_then_pretrains_on_the_shards(tmp_path):
    """Through the console script: a dry run shows the chaining (the tokenizer tokenize needs does not exist yet),
    then the run cleans the corpus, trains the tokenizer on it, cuts shards with it and pretrain streams them."""
    out = tmp_path / "out"
    config = streaming_pipeline(out)
    dry = run_pipeline(config, tmp_path / "pipeline.yaml", "--dry_run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    rows = {line.split()[1]: line for line in dry.stdout.splitlines() if line[:2].strip().isdigit()}
    assert list(rows)[:4] == ["clean-corpus", "train-tokenizer", "tokenize", "pretrain"]
    assert rows["train-tokenizer"].split()[2] == "run" and rows["tokenize"].split()[2] == "run"
    assert {row.split()[2] for row in list(rows.values())[4:]} == {"skip"}
    assert "dataset_path <- clean-corpus, tokenizer_name_or_path <- train-tokenizer" in rows["tokenize"]
    assert (
        "dataset_path <- tokenize, tokenizer_name_or_path <- train-tokenizer, block_size <- tokenize"
        in rows["pretrain"]
    )
    assert not out.exists()

    result = run_pipeline(config, tmp_path / "pipeline.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    shards = read_shard_manifest(out / "tokenize")
    corpus = read_manifest(out / "clean-corpus")["metrics"]
    assert shards.block_size == 64 and shards.tokenizer == str(out / "train-tokenizer")
    assert shards.documents == corpus["documents_out"] and len(shards.shards) == -(-shards.blocks // 40)
    pretrain = read_manifest(out / "pretrain")
    assert pretrain["inputs"]["datasets"] == [str(out / "tokenize")]
    metrics = pretrain["metrics"]
    assert metrics[f"rows kept from {out / 'tokenize'}"] == (
        f"{shards.blocks:,} blocks, {shards.tokens:,} tokens in {len(shards.shards)} shards (streamed)"
    )
    assert metrics["training blocks"] == shards.blocks and metrics["optimizer steps"] == 3
    assert metrics["tokens trained on"] == round(3 * 4 * shards.tokens / shards.blocks)
    assert pretrain["settings"]["block_size"] == 64
    table = result.stdout[result.stdout.index("pipeline finished") :]
    assert f"blocks {shards.blocks:,}; tokens {shards.tokens:,}; shards {len(shards.shards)}" in table
    state = json.loads((out / "pipeline_run" / "state.json").read_text())
    assert set(state["stages"]) >= {"clean-corpus", "train-tokenizer", "tokenize", "pretrain"}
