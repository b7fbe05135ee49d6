"""The console script: stage list, argument routing to accelerate, and real launches (single and 2-process CPU)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import PROJECT, write_yaml

from llm_recipes.cli import STAGES, cpu_data_parallel, launch_command, main, split_arguments, usage

CLI = [sys.executable, "-m", "llm_recipes.cli"]


def test_help_lists_every_stage_with_one_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert list(lines) == list(STAGES)
    assert lines["sft"].split(None, 1)[1] == "Supervised fine-tuning over TRL's SFTTrainer."
    assert "Raw text to a clean, deduplicated" in lines["clean-corpus"]
    assert out == usage() + "\n"


def test_unknown_stage_suggests_the_closest(capsys):
    assert main(["sfft"]) == 2
    message = "error: unknown stage 'sfft'; did you mean sft? (llm-recipes --help lists them)"
    assert capsys.readouterr().err.strip() == message


def test_accelerate_flags_are_split_from_recipe_fields():
    launcher, recipe = split_arguments(
        [
            "--config",
            "c.yaml",
            "--num_processes",
            "2",
            "--cpu",
            "--learning_rate",
            "1e-4",
            "--config_file=acc.yaml",
            "--gradient_accumulation_steps",
            "4",
            "--mixed_precision",
            "no",
        ]
    )
    assert launcher == ["--num_processes", "2", "--cpu", "--config_file=acc.yaml", "--mixed_precision", "no"]
    # gradient_accumulation_steps is both an accelerate flag and a training field: the recipe keeps it
    assert recipe == ["--config", "c.yaml", "--learning_rate", "1e-4", "--gradient_accumulation_steps", "4"]


def test_cpu_with_several_processes_becomes_torchrun_on_gloo():
    launcher, env = cpu_data_parallel(["--cpu", "--num_processes", "2"])
    assert launcher == ["--multi_gpu", "--num_processes", "2"] and env == {"ACCELERATE_USE_CPU": "true"}
    assert cpu_data_parallel(["--cpu"]) == (["--cpu"], {})


def test_launch_command_runs_the_recipe_through_accelerate():
    command = launch_command("sft", ["--config_file", "acc.yaml"], ["--config", "c.yaml"])
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[-3:] == [str(PROJECT / "recipes" / "sft.py"), "--config", "c.yaml"]
    assert "--num_processes" not in command  # the accelerate config file decides


def test_cli_validates_before_launching(tmp_path):
    result = subprocess.run(
        CLI + ["sft", "--config", str(tmp_path / "missing.yaml")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: config file not found: {tmp_path / 'missing.yaml'}"


@pytest.mark.slow
def test_sft_under_two_cpu_processes(tmp_path, base_model_dir):
    """Real data parallelism: two processes, gloo, each seeing half of every global batch."""
    config = {
        "model_name_or_path": str(base_model_dir),
        "dataset_path": str(PROJECT / "configs" / "demo" / "data" / "arithmetic_alpaca.jsonl"),
        "output_dir": str(tmp_path / "ddp"),
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "max_length": 64,
        "use_cpu": True,
        "save_strategy": "no",
        "logging_steps": 1,
    }
    path = write_yaml(tmp_path / "ddp.yaml", config)
    result = subprocess.run(
        CLI + ["sft", "--config", str(path), "--cpu", "--num_processes", "2"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = dict(
        line.rsplit(None, 1) for line in result.stdout.splitlines() if line.startswith(("processes", "examples seen"))
    )
    assert summary["processes"] == "2"
    assert summary["examples seen"] == "24"  # 3 steps x 4 per process x 2 processes
    assert (tmp_path / "ddp" / "model.safetensors").is_file()


def test_init_model_demo_config(tmp_path):
    from llm_recipes.cli import load_recipe

    recipe = load_recipe("init-model")
    config = str(PROJECT / "configs" / "demo" / "init_model.yaml")
    summary = recipe.main(*recipe.parse_args(["--config", config, "--output_dir", str(tmp_path)]))
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path).num_parameters() == summary["parameters"]


@pytest.mark.parametrize("stage", ["clean-corpus", "sft"])
def test_stage_help_lists_its_fields(stage):
    result = subprocess.run(CLI + [stage, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--output_dir" in result.stdout
    assert "error" not in result.stderr.lower() and "kernels" not in result.stderr
