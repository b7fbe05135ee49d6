"""The corpus stage end to end: the recipe on real web text and the demo pages, its report, resume and errors."""

from __future__ import annotations

import json
import subprocess

import datasets
import pytest
from conftest import PROJECT, write_yaml

from llm_recipes.cli import load_recipe
from llm_recipes.corpus.report import REPORT_CHART, REPORT_JSON, REPORT_TABLE
from llm_recipes.errors import UserError
from llm_recipes.runs.manifest import read_manifest

clean_corpus = load_recipe("clean-corpus")

WEB_STEPS = [
    {"normalize": "web"},
    "gopher_repetition",
    "gopher_quality",
    "c4",
    "fineweb",
    {"pii": {}},
    {"exact_dedup": {}},
    {"near_dedup": {"threshold": 0.8, "verify": True}},
]


def run(tmp_path, config: dict, *extra: str) -> dict:
    path = write_yaml(tmp_path / "clean.yaml", config)
    return clean_corpus.main(*clean_corpus.parse_args(["--config", str(path), *extra]))


@pytest.fixture
def c4_with_copies(tmp_path, shared_data):
    """The shared C4 sample plus 10 exact copies and 10 near copies (one word changed) of its first documents."""
    rows = [json.loads(line) for line in (shared_data / "c4_demo.jsonl").read_text().splitlines()]
    long_rows = [row for row in rows if len(row["text"].split()) > 200][:10]
    near = []
    for row in long_rows:
        words = row["text"].split(" ")
        words[len(words) // 2] = "zebra"
        near.append({"text": " ".join(words)})
    path = tmp_path / "c4.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + long_rows + near), encoding="utf-8")
    return path


def test_c4_report_counts_every_step(tmp_path, c4_with_copies):
    out = tmp_path / "corpus"
    report = run(
        tmp_path,
        {"input_paths": [str(c4_with_copies)], "output_dir": str(out), "steps": WEB_STEPS, "validation_size": 0.1},
    )
    assert report["read"]["documents"] == 320
    steps = report["steps"]
    assert [s["name"] for s in steps] == [
        "normalize",
        "gopher_repetition",
        "gopher_quality",
        "c4",
        "fineweb",
        "pii",
        "exact_dedup",
        "near_dedup",
    ]
    for before, after in zip(steps, steps[1:], strict=False):
        assert after["docs_in"] == before["docs_out"]
        assert after["chars_in"] == before["chars_out"]
    for step in steps:
        assert sum(step["drop_reasons"].values()) == step["docs_removed"], step["name"]
    by_name = {s["name"]: s for s in steps}
    assert by_name["gopher_quality"]["drop_reasons"]["gopher_quality:min_doc_words"] > 0
    assert by_name["c4"]["chars_out"] < by_name["c4"]["chars_in"]  # C4 removes lines as well as documents
    # the injected copies: every one that survived the filters is caught as an exact or near duplicate
    assert by_name["exact_dedup"]["docs_removed"] >= 8
    assert by_name["near_dedup"]["docs_removed"] >= 8
    assert by_name["near_dedup"]["details"]["clusters"] >= 8

    saved = datasets.load_from_disk(str(out))
    assert {name: len(split) for name, split in saved.items()} == report["splits"]
    assert sum(report["splits"].values()) == steps[-1]["docs_out"] - sum(
        split["dropped"] for split in report["cross_split_dedup"]["splits"].values()
    )
    assert set(saved["train"].column_names) >= {"id", "text", "source"}
    for name in (REPORT_JSON, REPORT_TABLE, REPORT_CHART):
        assert (out / name).stat().st_size > 0
    table = (out / REPORT_TABLE).read_text()
    assert "top drop reasons" in table and "gopher_quality:min_doc_words" in table
    manifest = read_manifest(out)
    assert manifest["stage"] == "clean-corpus" and manifest["metrics"]["documents_out"] == steps[-1]["docs_out"]
    assert not (tmp_path / "corpus.partial").exists()  # checkpoints are removed after success


def test_interrupted_run_resumes_from_the_last_finished_step(tmp_path, c4_with_copies, monkeypatch):
    out = tmp_path / "corpus"
    config = {"input_paths": [str(c4_with_copies)], "output_dir": str(out), "steps": WEB_STEPS}
    real_run_step = clean_corpus_run_step()
    calls = []

    def crash_once_on_c4(ds, step, **kwargs):
        calls.append(step.name)
        if step.name == "c4" and calls.count("c4") == 1:
            raise RuntimeError("simulated crash")
        return real_run_step(ds, step, **kwargs)

    monkeypatch.setattr(clean_corpus, "run_step", crash_once_on_c4)  # the recipe's own name for it
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, config)
    assert not out.exists()  # nothing that looks like a finished dataset
    finished = sorted(p.name for p in (tmp_path / "corpus.partial").iterdir())
    assert finished == ["00-read", "01-normalize", "02-gopher_repetition", "03-gopher_quality"]

    del calls[:3]
    resumed = run(tmp_path, config)
    assert calls == ["c4", "c4", "fineweb", "pii", "exact_dedup", "near_dedup"]  # the first three were not redone
    assert [s["cached"] for s in resumed["steps"]] == [True] * 3 + [False] * 5

    monkeypatch.undo()
    fresh = run(tmp_path, {**config, "output_dir": str(tmp_path / "fresh")})
    assert (
        datasets.load_from_disk(str(out))["train"]["text"]
        == datasets.load_from_disk(str(tmp_path / "fresh"))["train"]["text"]
    )
    assert [s["docs_out"] for s in resumed["steps"]] == [s["docs_out"] for s in fresh["steps"]]


def clean_corpus_run_step():
    from llm_recipes.corpus import steps as corpus_steps

    return corpus_steps.run_step


def test_changed_step_is_recomputed_with_everything_after_it(tmp_path, c4_with_copies):
    out = tmp_path / "corpus"
    steps = [{"normalize": "default"}, {"length": {"min_words": 50}}, {"exact_dedup": {}}]
    config = {"input_paths": [str(c4_with_copies)], "output_dir": str(out), "steps": steps, "keep_intermediate": True}
    first = run(tmp_path, config)
    again = run(tmp_path, config)
    assert all(s["cached"] for s in again["steps"])
    changed = run(tmp_path, {**config, "steps": [steps[0], {"length": {"min_words": 300}}, steps[2]]})
    assert [s["cached"] for s in changed["steps"]] == [True, False, False]
    assert changed["steps"][1]["docs_out"] < first["steps"][1]["docs_out"]


def test_parquet_output_loads_back_by_split(tmp_path, c4_with_copies):
    out = tmp_path / "corpus"
    report = run(
        tmp_path,
        {
            "input_paths": [str(c4_with_copies)],
            "output_dir": str(out),
            "preset": "minimal",
            "validation_size": 20,
            "test_size": 0.1,
            "output_format": "parquet",
            "rows_per_shard": 100,
        },
    )
    assert len(list((out / "data").glob("train-*-of-*.parquet"))) == (report["splits"]["train"] + 99) // 100
    loaded = datasets.load_dataset(str(out))
    assert {name: len(split) for name, split in loaded.items()} == report["splits"]
    assert report["splits"]["validation"] <= 20


def test_demo_config_through_the_console_script(tmp_path):
    out = tmp_path / "corpus"
    result = subprocess.run(
        [str(PROJECT / ".venv" / "bin" / "llm-recipes"), "clean-corpus", "--config", "configs/demo/clean_corpus.yaml"]
        + ["--output_dir", str(out)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / REPORT_JSON).read_text())
    by_name = {s["name"]: s for s in report["steps"]}
    # the demo pages carry every kind of noise; each step must have found its share
    assert by_name["language"]["drop_reasons"].get("language:de", 0) > 0
    assert by_name["pii"]["details"]["redactions"] > 0
    assert by_name["exact_dedup"]["docs_removed"] > 0 and by_name["near_dedup"]["docs_removed"] > 0
    assert by_name["normalize"]["chars_out"] < by_name["normalize"]["chars_in"]
    train = datasets.load_from_disk(str(out))["train"]
    assert not any("Ã©" in text or "@parks.example.org" in text for text in train["text"])
    assert "corpus written" in result.stdout


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"steps": ["gopherr"]}, "unknown step 'gopherr'; did you mean gopher"),
        ({"steps": [{"near_dedup": {"treshold": 0.8}}]}, "near_dedup"),
        ({"steps": [{"length": {"min_wrds": 5}}]}, "min_wrds"),
        ({"preset": "web", "steps": ["c4"]}, "either steps or preset"),
        ({}, "set steps"),
        ({"preset": "web", "push_to_hub": True}, "hub_dataset_id"),
        ({"preset": "web", "input_paths": ["missing/*.jsonl"]}, "matches no file"),
        ({"preset": "web", "validation_size": -1}, "validation_size"),
    ],
)
def test_config_errors_are_one_line(tmp_path, config, message):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "hello"}\n')
    with pytest.raises(UserError, match=message):
        run(tmp_path, {"input_paths": [str(corpus)], "output_dir": str(tmp_path / "out"), **config})


def test_everything_removed_is_an_error_not_an_empty_dataset(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"short {i}"}) + "\n" for i in range(5)))
    with pytest.raises(UserError, match="every document was removed"):
        run(tmp_path, {"input_paths": [str(corpus)], "output_dir": str(tmp_path / "out"), "preset": "minimal"})
    assert not (tmp_path / "out").exists()


def test_helpers_compose_in_a_user_script(c4_with_copies):
    """The import path: the same helpers in a user's own script, on datasets.map/filter with num_proc."""
    import llm_recipes.corpus as data
    from llm_recipes.corpus import (
        FilterBatch,
        MinHashConfig,
        NormalizeBatch,
        build_filters,
        build_normalizers,
        exact_dedup,
        near_dedup,
        read_corpus,
    )

    ds, report = read_corpus(str(c4_with_copies))
    assert report.documents == len(ds) == 320
    ds = ds.map(NormalizeBatch(build_normalizers(["default"])), batched=True, num_proc=2)
    marked = ds.map(FilterBatch(build_filters(["gopher"])), batched=True, batch_size=64, num_proc=2)
    reasons = [reason for reason in marked["drop_reason"] if reason]
    assert reasons and all(reason.startswith("gopher_") for reason in reasons)
    kept = marked.filter(lambda reason: reason is None, input_columns="drop_reason", num_proc=2)
    assert len(kept) == len(ds) - len(reasons)
    unique, exact_stats = exact_dedup(kept)
    near, near_stats = near_dedup(unique, MinHashConfig(threshold=0.8), num_proc=2)
    assert exact_stats.duplicates >= 8 and near_stats.duplicates >= 8
    assert len(near) == len(kept) - exact_stats.duplicates - near_stats.duplicates
    assert "read_corpus" in data.__all__ and "near_dedup" in dir(data)
