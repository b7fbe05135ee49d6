"""The tokenize stage on Ray (`engine: ray`) against the single-machine engine, on a 2-node Ray cluster on this
machine: the same shard files block for block, in the same order, and the same manifest, from three real-format
sources (one long enough for several batches and read tasks, one cut at max_train_samples, one source never read);
pretrain trains on the Ray-written folder; engine mistakes are one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import PROJECT, write_yaml
from test_corpus_ray import ray_cluster  # noqa: F401 - the shared 2-node cluster fixture
from test_streaming_pretrain import pretrain_config, shard_rows

import llm_recipes.pretrain.ray_shards as ray_shards
from llm_recipes.cli import load_recipe
from llm_recipes.data.shards import PACK_BATCH_DOCUMENTS, read_shard_manifest
from llm_recipes.errors import UserError
from llm_recipes.pretrain.ray_shards import plan_batches
from llm_recipes.runs.manifest import read_manifest

pytest.importorskip("ray")

TOKENIZE = load_recipe("tokenize")
CONSOLE = str(PROJECT / ".venv" / "bin" / "llm-recipes")


def run_console(*args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([CONSOLE, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=PROJECT)


@pytest.fixture(scope="module")
def sources(tmp_path_factory, shared_data) -> dict:
    """The C4 sample one sentence a document (4,156: three batches, two read tasks), the C4 sample itself, and the
    Alpaca sample (instructions, flattened to text) cut after 400 by max_train_samples; the wiki file is never read."""
    folder = tmp_path_factory.mktemp("tokenize_ray")
    pages = [json.loads(line)["text"] for line in (shared_data / "c4_demo.jsonl").read_text().splitlines()]
    sentences = [part for page in pages for part in page.split(". ") if part.strip()]
    lines = "".join(json.dumps({"text": sentence}) + "\n" for sentence in sentences)
    (folder / "sentences.jsonl").write_text(lines, encoding="utf-8")
    paths = [folder / "sentences.jsonl", shared_data / "c4_demo.jsonl", shared_data / "alpaca_en_demo.json"]
    paths.append(shared_data / "wiki_demo.txt")
    return {
        "folder": folder,
        "datasets": [{"path": str(path)} for path in paths],
        "max_train_samples": len(sentences) + len(pages) + 400,
        "sentences": len(sentences),
    }


def config(sources: dict, tokenizer: Path, output: Path) -> dict:
    return {
        "datasets": sources["datasets"],
        "max_train_samples": sources["max_train_samples"],
        "tokenizer_name_or_path": str(tokenizer),
        "block_size": 64,
        "blocks_per_shard": 700,  # shards run across batches and sources
        "output_dir": str(output),
    }


@pytest.fixture(scope="module")
def both_engines(sources, base_model_dir, ray_cluster) -> dict:  # noqa: F811 - the imported fixture
    """The datasets engine in-process, then engine ray through the console script against the cluster."""
    folder = sources["folder"]
    here = write_yaml(folder / "here.yaml", config(sources, base_model_dir, folder / "here"))
    TOKENIZE.main(*TOKENIZE.parse_args(["--config", str(here)]))
    on_ray = write_yaml(folder / "ray.yaml", config(sources, base_model_dir, folder / "ray"))
    result = run_console("tokenize", "--config", on_ray, "--engine", "ray", "--ray_address", ray_cluster.address)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"here": folder / "here", "ray": folder / "ray", "stdout": result.stdout}


def test_ray_writes_the_shards_the_datasets_engine_writes(both_engines, sources):
    here, on_ray = both_engines["here"], both_engines["ray"]
    expected = shard_rows(here)
    assert shard_rows(on_ray) == expected  # block for block, in the same order
    assert len(expected) > 2 * 700 and sum(len(row) < 64 for row in expected) >= 5  # a short block ends each batch
    mine, theirs = read_shard_manifest(on_ray), read_shard_manifest(here)
    assert mine.to_json() == theirs.to_json()  # shards, blocks, tokens, documents, fingerprint, sources
    assert mine.documents == sources["max_train_samples"] and len(mine.shards) >= 3
    assert [source["path"] for source in mine.sources] == [spec["path"] for spec in sources["datasets"]]
    assert sorted(path.name for path in on_ray.iterdir()) == sorted(path.name for path in here.iterdir())
    summary = dict(line.rsplit(None, 1) for line in both_engines["stdout"].splitlines() if line.startswith("blocks"))
    assert summary == {"blocks": f"{mine.blocks:,}"}
    recorded = read_manifest(on_ray)
    assert recorded["complete"] and recorded["metrics"]["engine"] == "ray"
    assert not list(on_ray.parent.glob(".ray.*"))  # written beside and renamed into place: nothing left over


def test_plan_keeps_the_batches_and_the_cut_of_one_machine(sources):
    """Ranges of whole batches in source order; the cut at max_train_samples falls inside the third source (a short
    last batch there) and the fourth is not read."""
    batch = PACK_BATCH_DOCUMENTS
    plan = plan_batches([sources["sentences"], 300, 999, 30], sources["max_train_samples"])
    assert plan == [
        {"source": 0, "start": 0, "stop": 2 * batch, "batch": 0},
        {"source": 0, "start": 2 * batch, "stop": sources["sentences"], "batch": 2},
        {"source": 1, "start": 0, "stop": 300, "batch": 3},
        {"source": 2, "start": 0, "stop": 400, "batch": 4},
    ]


@pytest.mark.slow
def test_pretrain_trains_on_the_ray_written_shards(tmp_path, both_engines, base_model_dir):
    shards = both_engines["ray"]
    config = pretrain_config(shards, base_model_dir, tmp_path / "out", max_steps=2)
    result = run_console("pretrain", "--config", write_yaml(tmp_path / "p.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_shard_manifest(shards)
    summary = read_manifest(tmp_path / "out")["metrics"]
    assert summary["optimizer steps"] == 2 and summary["training blocks"] == manifest.blocks
    assert summary["tokens per epoch"] == manifest.tokens
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_ray_address_without_engine_ray_is_one_line(tmp_path, sources, base_model_dir):
    path = write_yaml(tmp_path / "t.yaml", config(sources, base_model_dir, tmp_path / "out"))
    result = run_console("tokenize", "--config", path, "--ray_address", "auto")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: ray_address is for engine: ray; set engine: ray or drop ray_address"]
    assert not (tmp_path / "out").exists()


def test_engine_ray_without_ray_installed_is_one_line(tmp_path, sources, base_model_dir, monkeypatch):
    find_spec = ray_shards.importlib.util.find_spec
    monkeypatch.setattr(
        ray_shards.importlib.util, "find_spec", lambda name, *rest: None if name == "ray" else find_spec(name, *rest)
    )
    path = write_yaml(tmp_path / "t.yaml", config(sources, base_model_dir, tmp_path / "out"))
    with pytest.raises(UserError) as raised:
        TOKENIZE.parse_args(["--config", str(path), "--engine", "ray"])
    assert str(raised.value) == "engine: ray needs Ray Data on this machine: pip install 'llm-recipes[ray]'"
