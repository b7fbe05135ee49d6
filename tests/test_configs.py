"""Config validation: every user mistake is one line naming what to fix, raised before any model is loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import PROJECT, write_yaml

from llm_recipes.cli import load_recipe
from llm_recipes.configs import ConfigError
from llm_recipes.errors import UserError

SFT = load_recipe("sft")
DATA = str(PROJECT / "configs" / "demo" / "data" / "arithmetic_alpaca.jsonl")


@pytest.fixture
def good_config(base_model_dir, tmp_path) -> dict:
    return {
        "model_name_or_path": str(base_model_dir),
        "dataset_path": DATA,
        "output_dir": str(tmp_path / "out"),
        "max_steps": 2,
        "use_cpu": True,
    }


def parse(tmp_path, config: dict, *overrides: str):
    path = write_yaml(tmp_path / "config.yaml", config)
    return SFT.parse_args(["--config", str(path), *overrides])


def error_of(tmp_path, config: dict, *overrides: str) -> str:
    with pytest.raises(UserError) as caught:
        parse(tmp_path, config, *overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_good_config_parses_and_cli_overrides_yaml(tmp_path, good_config):
    script_args, training_args, model_args = parse(tmp_path, good_config, "--learning_rate", "1e-4", "--lora_r", "4")
    assert training_args.learning_rate == 1e-4
    assert model_args.lora_r == 4
    assert training_args.max_steps == 2
    assert script_args.dataset_path == DATA
    assert training_args.assistant_only_loss is True  # our default, not TRL's


def test_unknown_yaml_key_names_the_closest(tmp_path, good_config):
    message = error_of(tmp_path, {**good_config, "learnig_rate": 1e-4})
    assert message == "unknown key 'learnig_rate' in the config; did you mean learning_rate?"


def test_unknown_command_line_option_names_the_closest(tmp_path, good_config):
    message = error_of(tmp_path, good_config, "--num_train_epoch", "2")
    assert message == "unknown option '--num_train_epoch'; did you mean num_train_epochs?"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("learning_rate", "fast", "learning_rate: invalid value 'fast'"),
        ("per_device_train_batch_size", 2.5, "per_device_train_batch_size: invalid value 2.5"),
        ("lr_scheduler_type", "cosin", "did you mean cosine?"),
        ("packing", [True], "packing: expected a single value"),
    ],
)
def test_wrong_type_in_yaml(tmp_path, good_config, key, value, expected):
    assert expected in error_of(tmp_path, {**good_config, key: value})


def test_wrong_type_on_command_line(tmp_path, good_config):
    assert "invalid float value: 'abc'" in error_of(tmp_path, good_config, "--learning_rate", "abc")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("learning_rate", -1e-4, "learning_rate: -0.0001 must be > 0"),
        ("lora_r", 0, "lora_r: 0 must be >= 1 (the LoRA rank)"),
        ("lora_dropout", 1.5, "lora_dropout: 1.5 must be in [0, 1)"),
        ("per_device_train_batch_size", 0, "per_device_train_batch_size: 0 must be >= 1"),
        ("gradient_accumulation_steps", 0, "gradient_accumulation_steps: 0 must be >= 1"),
    ],
)
def test_out_of_range_values(tmp_path, good_config, key, value, expected):
    assert error_of(tmp_path, {**good_config, key: value}) == expected


def test_missing_data_file(tmp_path, good_config):
    message = error_of(tmp_path, {**good_config, "dataset_path": "data/nowhere.jsonl"})
    assert message == "dataset file not found: data/nowhere.jsonl"


def test_missing_model_path(tmp_path, good_config):
    message = error_of(tmp_path, {**good_config, "model_name_or_path": "./models/none"})
    assert message == "model_name_or_path: model folder not found: ./models/none"


def test_model_folder_without_config(tmp_path, good_config):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    message = error_of(tmp_path, {**good_config, "model_name_or_path": str(empty)})
    assert "has no config.json" in message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        SFT.parse_args(["--config", "nope.yaml"])


def test_mixture_entry_checked(tmp_path, good_config):
    config = {**good_config, "dataset_path": None, "datasets": [{"path": DATA, "wieght": 2}]}
    assert error_of(tmp_path, config) == "datasets[0]: unknown key 'wieght'; did you mean weight?"
    config["datasets"] = [{"path": DATA, "weight": -1}]
    assert error_of(tmp_path, config) == "datasets[0].weight: -1 must be > 0"


def test_qlora_needs_peft_and_partial_excludes_peft(tmp_path, good_config):
    assert "needs use_peft: true" in error_of(tmp_path, {**good_config, "load_in_4bit": True})
    config = {**good_config, "use_peft": True, "trainable_top_layers": 1}
    assert "exclude each other" in error_of(tmp_path, config)


def test_eval_strategy_without_eval_data(tmp_path, good_config):
    message = error_of(tmp_path, {**good_config, "eval_strategy": "steps"})
    assert message.startswith("eval_strategy is 'steps' but there is no eval data")


def test_recipe_script_exits_2_with_one_line(tmp_path, good_config):
    """Run as users do: one line on stderr, exit code 2, no traceback, and no model was loaded."""
    path = write_yaml(tmp_path / "bad.yaml", {**good_config, "lora_r": 0})
    result = subprocess.run(
        [sys.executable, str(PROJECT / "recipes" / "sft.py"), "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and "kernels" not in line]
    assert lines == ["error: lora_r: 0 must be >= 1 (the LoRA rank)"]
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr + result.stdout
