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


def run_cli(*argv: str, timeout: int = 400) -> subprocess.CompletedProcess:
    result = subprocess.run(CLI + list(argv), capture_output=True, text=True, timeout=timeout, cwd=PROJECT)
    assert result.returncode == 0, f"{argv[0]} failed:\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_demo_pipeline_runs_end_to_end(tmp_path):
    """`make demo`, shortened: every demo config through the console script, each stage reading the one before."""
    stages = ("corpus", "tokenizer", "pretrain", "sft", "reward", "ppo", "evaluate", "export")
    out = {name: str(tmp_path / name) for name in stages}
    run_cli("clean-corpus", "--config", "configs/demo/clean_corpus.yaml", "--output_dir", out["corpus"])
    run_cli(
        "train-tokenizer", "--config", "configs/demo/train_tokenizer.yaml",
        "--dataset_path", out["corpus"], "--output_dir", out["tokenizer"],
    )  # fmt: skip
    pretrain = run_cli(
        "pretrain", "--config", "configs/demo/pretrain.yaml", "--dataset_path", out["corpus"],
        "--tokenizer_name_or_path", out["tokenizer"], "--output_dir", out["pretrain"], "--num_train_epochs", "1",
    )  # fmt: skip
    assert "pretraining finished" in pretrain.stdout
    sft = run_cli(
        "sft", "--config", "configs/demo/sft.yaml", "--model_name_or_path", out["pretrain"],
        "--output_dir", out["sft"], "--num_train_epochs", "1",
    )  # fmt: skip
    assert "SFT finished" in sft.stdout
    run_cli(
        "reward", "--config", "configs/demo/reward.yaml", "--model_name_or_path", out["sft"],
        "--output_dir", out["reward"], "--max_steps", "5",
    )  # fmt: skip
    run_cli(
        "ppo", "--config", "configs/demo/ppo.yaml", "--model_name_or_path", out["sft"],
        "--reward_model_path", out["reward"], "--output_dir", out["ppo"], "--num_ppo_steps", "3",
    )  # fmt: skip
    run_cli(
        "evaluate", "--config", "configs/demo/evaluate.yaml", "--models", out["pretrain"], out["sft"], out["ppo"],
        "--reward_model", out["reward"], "--perplexity_dataset_path", out["corpus"],
        "--output_dir", out["evaluate"], "--max_eval_samples", "8",
    )  # fmt: skip
    run_cli(
        "export", "--config", "configs/demo/export.yaml", "--model_name_or_path", out["ppo"],
        "--output_dir", out["export"], "--eval_results_path", out["evaluate"],
    )  # fmt: skip

    from transformers import pipeline

    generator = pipeline("text-generation", model=out["export"])
    assert generator("What is 2 plus 3?", max_new_tokens=4)[0]["generated_text"].startswith("What is 2 plus 3?")
    card = (tmp_path / "export" / "README.md").read_text()
    for stage in ("clean-corpus", "train-tokenizer", "pretrain", "sft", "ppo"):
        assert stage in card, stage
    assert "perplexity" in card


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
