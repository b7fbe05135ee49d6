"""Input that is broken or not what it claims is one line naming the file (and line), or is read correctly: bytes
that are not UTF-8, cut-short archives, broken JSON, a `.json` holding one object, a model folder without weights,
splits and batches the data is too small for."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DEMO_DATA, PROJECT, write_yaml

from llm_recipes.configs import check_model_path
from llm_recipes.data.config import DatasetSpec
from llm_recipes.data.io import load_dataset_source
from llm_recipes.data.loading import load_standard, load_training_data
from llm_recipes.data.mixture import check_batches, hold_out
from llm_recipes.data.preferences import load_preference_data
from llm_recipes.errors import UserError

CLI = [sys.executable, "-m", "llm_recipes.cli"]

ALPACA = [json.loads(line) for line in (DEMO_DATA / "arithmetic_alpaca.jsonl").read_text().splitlines()][:40]
PAIR = {"prompt": "Name an animal.", "chosen": "A lion.", "rejected": "A rock."}


def run_command(command: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=PROJECT)


def assert_one_error_line(completed: subprocess.CompletedProcess, expected: str) -> None:
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert errors == [f"error: {expected}"], completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def alpaca_bytes(bad_line: int | None = None) -> bytes:
    """The demo's Alpaca rows as JSON Lines; line `bad_line` (1-based) gets a Latin-1 'é' in its answer."""
    lines = [json.dumps(row).encode() for row in ALPACA]
    if bad_line is not None:
        lines[bad_line - 1] = lines[bad_line - 1].replace(b'"output": "', b'"output": "caf\xe9 ', 1)
    return b"".join(line + b"\n" for line in lines)


def column_of_bad_byte(line: bytes) -> int:
    return line.index(b"\xe9") + 1


# ---------------------------------------------------------------------------------------------------------------
# Bytes that are not UTF-8: every reader, every stage that reads training or evaluation data


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".txt", ".csv"])
def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        raw = alpaca_bytes(bad_line=7)
        line, number = raw.splitlines()[6], 7
    elif suffix == ".json":  # a pretty-printed list: one row per line after the opening bracket
        rows = [json.dumps(row).encode() for row in ALPACA[:5]]
        rows[2] = rows[2].replace(b'"output": "', b'"output": "caf\xe9 ', 1)
        raw = b"[\n" + b",\n".join(rows) + b"\n]\n"
        line, number = raw.splitlines()[3], 4
    elif suffix == ".txt":
        raw = b"first document\nsecond caf\xe9 document\nthird\n"
        line, number = b"second caf\xe9 document", 2
    else:
        raw = b"text\nhello\ncaf\xe9 au lait\n"
        line, number = b"caf\xe9 au lait", 3
    path.write_bytes(raw)
    expected = (
        f"dataset file '{path}' line {number} is not UTF-8 text (byte 0xe9 at column {column_of_bad_byte(line)}); "
        "save the file as UTF-8"
    )
    with pytest.raises(UserError) as caught:
        load_standard(DatasetSpec(path=str(path)))
    assert str(caught.value) == expected


def test_pretraining_and_evaluation_data_that_is_not_utf8_is_one_line(tmp_path):
    from llm_recipes.evaluation.data import load_eval_data
    from llm_recipes.pretrain.build import load_pretraining_texts

    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"text": "one"}\n{"text": "two"}\n{"text": "caf\xe9"}\n')
    expected = f"dataset file '{path}' line 3 is not UTF-8 text (byte 0xe9 at column 14); save the file as UTF-8"
    with pytest.raises(UserError) as caught:
        load_pretraining_texts([DatasetSpec(path=str(path))])
    assert str(caught.value) == expected
    with pytest.raises(UserError) as caught:
        load_eval_data(str(path))
    assert str(caught.value) == expected


@pytest.mark.slow
def test_sft_on_data_that_is_not_utf8_stops_in_one_line(tmp_path, base_model_dir):
    data = tmp_path / "train.jsonl"
    data.write_bytes(alpaca_bytes(bad_line=12))
    config = {
        "dataset_path": str(data),
        "model_name_or_path": str(base_model_dir),
        "output_dir": str(tmp_path / "out"),
        "max_steps": 1,
        "use_cpu": True,
        "report_to": "none",
    }
    completed = run_command([*CLI, "sft", "--config", str(write_yaml(tmp_path / "sft.yaml", config))])
    column = column_of_bad_byte(alpaca_bytes(bad_line=12).splitlines()[11])
    assert_one_error_line(
        completed,
        f"dataset file '{data}' line 12 is not UTF-8 text (byte 0xe9 at column {column}); save the file as UTF-8",
    )
    assert not (tmp_path / "out" / "model.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------------
# Archives cut short, broken JSON


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [(".gz", gzip.compress), (".zst", _zstd), (".bz2", bz2.compress), (".xz", lzma.compress)],
)
def test_a_cut_short_archive_is_one_line(tmp_path, suffix, compress):
    whole = compress(alpaca_bytes())
    path = tmp_path / f"train.jsonl{suffix}"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError) as caught:
        load_dataset_source(str(path))
    assert str(caught.value) == (
        f"dataset file '{path}' is cut short: its compressed data ends early (an interrupted download or copy?)"
    )
    path.write_bytes(whole)  # the same archive whole is read whole
    assert len(load_dataset_source(str(path))) == len(ALPACA)


def test_several_zstd_frames_are_one_whole_file(tmp_path):
    lines = alpaca_bytes().splitlines(keepends=True)
    path = tmp_path / "train.jsonl.zst"
    path.write_bytes(_zstd(b"".join(lines[:10])) + _zstd(b"".join(lines[10:])))  # as `zstd a b > c` would write
    assert len(load_dataset_source(str(path))) == len(ALPACA)


def test_broken_json_names_the_file_and_line(tmp_path):
    lines = alpaca_bytes().decode().splitlines()
    lines[9] = '{"instruction": "Add 2 and 2.", "output": "4",}'  # a trailing comma
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as caught:
        load_dataset_source(str(jsonl))
    message = "is not valid JSON: expecting property name enclosed in double quotes at column 47"
    assert str(caught.value) == f"dataset file '{jsonl}' line 10 {message}"

    listed = tmp_path / "train.json"
    listed.write_text(json.dumps(ALPACA[:4], indent=1).replace('"output"', '"output" "', 1))
    with pytest.raises(UserError) as caught:
        load_dataset_source(str(listed))
    message = "is not valid JSON: expecting ':' delimiter at column 12"
    assert str(caught.value) == f"dataset file '{listed}' line 5 {message}"


# ---------------------------------------------------------------------------------------------------------------
# A .json file holding one object


@pytest.mark.parametrize(
    ("content", "hint"),
    [
        (json.dumps(PAIR), ""),
        (json.dumps(PAIR, indent=2), ""),
        (json.dumps({"version": 1, "data": [PAIR, PAIR]}, indent=2), " (are the rows the list under 'data'? save "),
        (json.dumps({key: [value, value] for key, value in PAIR.items()}), " (it holds columns, not rows)"),
    ],
)
def test_a_json_file_holding_one_object_is_refused(tmp_path, content, hint):
    path = tmp_path / "pairs.json"
    path.write_text(content)
    with pytest.raises(UserError) as caught:
        load_preference_data(str(path), eval_size=0.1)
    message = str(caught.value)
    assert message.startswith(f"dataset file '{path}' holds one JSON object, not a list of rows{hint}")
    assert message.endswith("write a list ([{...}, {...}]) or one object per line (.jsonl)")


def test_json_lines_named_json_and_a_one_row_list_are_still_read(tmp_path):
    lines = tmp_path / "lines.json"
    lines.write_text(json.dumps(PAIR) + "\n" + json.dumps({**PAIR, "chosen": "A cat."}) + "\n")
    assert len(load_dataset_source(str(lines))) == 2
    one_row = tmp_path / "one.json"
    one_row.write_text(json.dumps([PAIR]))
    assert len(load_dataset_source(str(one_row))) == 1


@pytest.mark.slow
def test_reward_on_one_object_stops_in_one_line(tmp_path, base_model_dir):
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(PAIR))
    completed = run_command(
        [
            *CLI,
            "reward",
            "--dataset_path",
            str(data),
            "--model_name_or_path",
            str(base_model_dir),
            "--output_dir",
            str(tmp_path / "rm"),
            "--use_cpu",
            "true",
        ]
    )
    assert_one_error_line(
        completed,
        f"dataset file '{data}' holds one JSON object, not a list of rows; write a list ([{{...}}, {{...}}]) or one "
        "object per line (.jsonl)",
    )


# ---------------------------------------------------------------------------------------------------------------
# A model folder with a config but no weights: found when the config is checked, before launch


def _weightless(tmp_path: Path, base_model_dir: Path, *extra_files: str) -> Path:
    folder = tmp_path / "weightless"
    folder.mkdir()
    (folder / "config.json").write_text((base_model_dir / "config.json").read_text())
    for name in extra_files:
        (folder / name).write_bytes(b"")
    return folder


def test_a_model_folder_without_weights_fails_the_config_check(tmp_path, base_model_dir):
    folder = _weightless(tmp_path, base_model_dir, "pytorch_model.bin")
    with pytest.raises(UserError) as caught:
        check_model_path(str(folder))
    assert str(caught.value) == (
        f"model_name_or_path: {folder} has no weights -- no .safetensors file (found pytorch_model.bin: load and "
        "save_pretrained it to convert)"
    )
    check_model_path(str(folder), "config_name", weights=False)  # a config is all config_name needs
    (folder / "model.safetensors.index.json").write_text("{}")  # sharded weights: the index names the shards
    check_model_path(str(folder))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="has no weights"):
        check_model_path(str(adapter))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    check_model_path(str(adapter))


def test_reward_and_export_check_the_weights_before_loading(tmp_path, base_model_dir):
    from llm_recipes.cli import load_recipe

    folder = _weightless(tmp_path, base_model_dir)
    data = write_jsonl(tmp_path / "pairs.jsonl", [PAIR] * 4)
    message = f"model_name_or_path: {folder} has no weights -- no .safetensors file"
    with pytest.raises(UserError) as caught:
        load_recipe("reward").parse_args(
            ["--dataset_path", str(data), "--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "rm")]
            + ["--use_cpu", "true"]
        )
    assert str(caught.value) == message
    with pytest.raises(UserError) as caught:
        load_recipe("export").parse_args(["--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "ex")])
    assert str(caught.value) == message


def test_sft_from_a_weightless_folder_is_one_line_through_the_console_script(tmp_path, base_model_dir):
    folder = _weightless(tmp_path, base_model_dir)
    completed = run_command(
        CLI
        + [
            "sft",
            "--dataset_path",
            str(DEMO_DATA / "arithmetic_alpaca.jsonl"),
            "--model_name_or_path",
            str(folder),
            "--output_dir",
            str(tmp_path / "out"),
            "--use_cpu",
            "true",
        ]
    )
    assert_one_error_line(completed, f"model_name_or_path: {folder} has no weights -- no .safetensors file")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# Splits and batches the data is too small for


def test_eval_split_size_must_be_a_share_or_a_whole_count(tmp_path):
    from datasets import Dataset

    ten = Dataset.from_dict({"text": [str(i) for i in range(10)]})
    with pytest.raises(UserError) as caught:
        hold_out(ten, 1.5)
    assert str(caught.value) == (
        "eval_split_size: 1.5 is neither a share below 1 (0.1 = 10%) nor a whole number of rows"
    )
    with pytest.raises(UserError) as caught:
        hold_out(ten, 0.99)
    assert (
        str(caught.value)
        == "eval_split_size: 0.99 holds out 10 of 10 rows, leaving none to train on; lower it or add data"
    )
    with pytest.raises(UserError, match="holds out 1 of 1 pairs, leaving none"):
        hold_out(ten.select([0]), 0.1, unit="pairs")
    assert [len(part) for part in hold_out(ten, 2.0)] == [8, 2]
    assert [len(part) for part in hold_out(ten.select([0, 1]), 0.1)] == [1, 1]


def test_one_pair_is_too_few_for_an_eval_split(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", [PAIR])
    with pytest.raises(UserError) as caught:
        load_preference_data(str(data), eval_size=0.1)
    assert (
        str(caught.value)
        == "eval_split_size: 0.1 holds out 1 of 1 rows, leaving none to train on; lower it or add data"
    )
    with pytest.raises(UserError, match="holds out 1 of 1 rows"):
        load_training_data([DatasetSpec(path=str(write_jsonl(tmp_path / "one.jsonl", ALPACA[:1])))], eval_size=0.1)


def test_a_fractional_row_count_is_refused_through_the_console_script(tmp_path):
    completed = run_command(
        CLI
        + [
            "sft",
            "--dataset_path",
            str(DEMO_DATA / "arithmetic_alpaca.jsonl"),
            "--model_name_or_path",
            "some-org/some-model",
            "--eval_split_size",
            "1.5",
            "--output_dir",
            str(tmp_path / "out"),
            "--use_cpu",
            "true",
        ]
    )
    assert_one_error_line(
        completed, "eval_split_size: 1.5 is neither a share below 1 (0.1 = 10%) nor a whole number of rows"
    )


@pytest.mark.parametrize("stage", ["pretrain", "finetune-task"])
def test_a_fractional_row_count_is_refused_before_launch_in_every_training_stage(stage, tmp_path, base_model_dir):
    from llm_recipes.cli import load_recipe

    config = {
        "pretrain": {"dataset_path": str(DEMO_DATA / "arithmetic_alpaca.jsonl"), "preset": "llama-tiny"},
        "finetune-task": {
            "task": "classification",
            "dataset_path": str(DEMO_DATA / "sentiment.csv"),
            "preset": "bert-tiny",
        },
    }[stage]
    config |= {"tokenizer_name_or_path": str(base_model_dir), "output_dir": str(tmp_path / "out")}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**config, "eval_split_size": 1.5}))
    with pytest.raises(UserError, match=r"eval_split_size: 1\.5 is neither a share below 1"):
        load_recipe(stage).parse_args(["--config", str(path)])


def test_data_smaller_than_one_batch_with_drop_last_is_one_line():
    from types import SimpleNamespace

    args = SimpleNamespace(
        dataloader_drop_last=True, world_size=2, per_device_train_batch_size=4, per_device_eval_batch_size=8
    )
    with pytest.raises(UserError) as caught:
        check_batches(7, 20, args, "pairs")
    assert str(caught.value) == (
        "the training data has 7 pairs, fewer than one batch (4 per device x 2 processes) and dataloader_drop_last is "
        "true: lower per_device_train_batch_size or add data"
    )
    with pytest.raises(UserError, match="the eval data has 15 rows, fewer than one batch"):
        check_batches(8, 15, args)
    check_batches(8, None, args)
    check_batches(1, 1, SimpleNamespace(**{**vars(args), "dataloader_drop_last": False}))
