"""The error contract, as a user meets it through the console script: a mistake found anywhere -- in the config
checks, or by a recipe after `accelerate launch` started it, on one process or two, in a stage or a pipeline -- is
exactly one `error: ...` line on stderr, exit code 2, no traceback, no token, and no output folder left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT, write_yaml

DEMO = PROJECT / "configs" / "demo"
CLI = [sys.executable, "-m", "llm_recipes.cli"]
TOKEN = "hf_FAKEtokenForTheErrorContract0123"
STAGES_WITH_HUB_TOKEN = {
    "pretrain",
    "sft",
    "finetune-task",
    "reward",
    "ppo",
    "grpo",
    "rloo",
    "dpo",
    "kto",
    "distill",
    "prune",
}


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=PROJECT)


def assert_one_error_line(result: subprocess.CompletedProcess, *, contains: str) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    assert contains in errors[0], errors[0]
    assert "Traceback" not in result.stderr and "CalledProcessError" not in result.stderr, result.stderr[-3000:]
    assert TOKEN not in result.stderr + result.stdout
    return errors[0]


@pytest.fixture(scope="module")
def bad_rows(tmp_path_factory) -> Path:
    """Rows in no format any stage knows."""
    path = tmp_path_factory.mktemp("bad") / "bad_rows.jsonl"
    path.write_text("".join(json.dumps({"foo": index}) + "\n" for index in range(6)), encoding="utf-8")
    return path


def stage_config(stage: str, base: Path, chat: Path, bad: Path, output: Path) -> dict:
    """The stage's demo config with its data pointed at `bad` and its models at the test fixtures."""
    demo_file, overrides = {
        "clean-corpus": ("clean_corpus.yaml", {"input_paths": [bad]}),
        "train-tokenizer": ("train_tokenizer.yaml", {"dataset_path": bad}),
        "init-model": ("init_model.yaml", {"tokenizer_datasets": [bad]}),
        "pretrain": ("pretrain.yaml", {"dataset_path": bad, "tokenizer_name_or_path": base}),
        "sft": ("sft.yaml", {"datasets": None, "dataset_path": bad, "model_name_or_path": base}),
        "reward": ("reward.yaml", {"dataset_path": bad, "model_name_or_path": base}),
        "dpo": ("dpo.yaml", {"dataset_path": bad, "model_name_or_path": chat}),
        "kto": ("kto.yaml", {"dataset_path": bad, "model_name_or_path": chat}),
        "ppo": ("ppo.yaml", {"dataset_path": bad, "model_name_or_path": chat, "reward_model_path": chat}),
        "grpo": ("grpo.yaml", {"dataset_path": bad, "model_name_or_path": chat, "reward_model_path": chat}),
        "rloo": ("rloo.yaml", {"dataset_path": bad, "model_name_or_path": chat}),
        "distill": (
            "distill.yaml",
            {"datasets": None, "dataset_path": bad, "teacher_name_or_path": chat, "compare_labels_only": False},
        ),
        "quantize": ("quantize.yaml", {"model_name_or_path": chat, "eval_dataset_path": bad}),
        "prune": (
            "prune.yaml",
            {
                "model_name_or_path": base,
                "calibration_dataset_path": bad,
                "eval_dataset_path": None,
                "recovery_dataset_path": None,
            },
        ),
        "evaluate": (
            "evaluate.yaml",
            {"models": [base], "reward_model": None, "dataset_path": bad, "perplexity_dataset_path": None},
        ),
    }[stage]
    config = yaml.safe_load((DEMO / demo_file).read_text(encoding="utf-8"))
    config.pop("protocol", None)  # the demo's evaluation protocol reads the demo's outputs, absent here
    config.update(
        {key: [str(v) for v in value] if isinstance(value, list) else value for key, value in overrides.items()}
    )
    config = {
        key: str(value) if isinstance(value, Path) else value for key, value in config.items() if value is not None
    }
    config["output_dir"] = str(output)
    return config


DATA_STAGES = [
    "clean-corpus",
    "train-tokenizer",
    "init-model",
    "pretrain",
    "sft",
    "reward",
    "dpo",
    "kto",
    "ppo",
    "grpo",
    "rloo",
    "distill",
    "quantize",
    "prune",
    "evaluate",
]


@pytest.mark.slow
@pytest.mark.parametrize("stage", DATA_STAGES)
def test_a_data_error_in_any_stage_is_one_line_through_the_console_script(
    stage, tmp_path, base_model_dir, chat_model_dir, bad_rows
):
    output = tmp_path / "out"
    config = write_yaml(tmp_path / "stage.yaml", stage_config(stage, base_model_dir, chat_model_dir, bad_rows, output))
    token = ["--hub_token", TOKEN] if stage in STAGES_WITH_HUB_TOKEN else []
    result = run_cli(stage, "--config", config, *token)
    line = assert_one_error_line(result, contains="bad_rows.jsonl")
    assert not output.exists(), f"{stage} left {sorted(p.name for p in output.iterdir())} after: {line}"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no lock or staging folder left


def test_export_of_a_folder_without_weights_is_one_line(tmp_path, chat_model_dir):
    folder = tmp_path / "no_weights"
    folder.mkdir()
    (folder / "config.json").write_text((chat_model_dir / "config.json").read_text(), encoding="utf-8")
    config = write_yaml(
        tmp_path / "export.yaml", {"model_name_or_path": str(folder), "output_dir": str(tmp_path / "x")}
    )
    assert_one_error_line(run_cli("export", "--config", config), contains="no_weights")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_a_data_error_under_two_cpu_processes_is_one_line(tmp_path, base_model_dir, bad_rows):
    output = tmp_path / "out"
    config = write_yaml(tmp_path / "sft.yaml", stage_config("sft", base_model_dir, base_model_dir, bad_rows, output))
    result = run_cli("sft", "--config", config, "--cpu", "--num_processes", "2", "--hub_token", TOKEN)
    assert_one_error_line(result, contains="bad_rows.jsonl")
    assert not output.exists()


def test_a_launch_ppo_cannot_run_under_is_one_line_before_it_starts(tmp_path, chat_model_dir):
    config = stage_config("ppo", chat_model_dir, chat_model_dir, DEMO / "data" / "rl_prompts.jsonl", tmp_path / "out")
    path = write_yaml(tmp_path / "ppo.yaml", config)
    result = run_cli(
        "ppo", "--config", path, "--config_file", PROJECT / "configs" / "accelerate" / "deepspeed_zero3.yaml"
    )
    assert_one_error_line(result, contains="not under DeepSpeed (ZeRO)")


def test_cpu_with_an_accelerate_config_file_keeps_the_files_distribution():
    from llm_recipes.cli import cpu_data_parallel

    launcher, env = cpu_data_parallel(["--cpu", "--config_file", "configs/accelerate/fsdp_cpu.yaml"])
    assert launcher == ["--config_file", "configs/accelerate/fsdp_cpu.yaml"] and env == {"ACCELERATE_USE_CPU": "true"}


def test_the_token_never_reaches_the_launched_command_line():
    from llm_recipes.cli import secret_arguments

    kept, env = secret_arguments(["--config", "c.yaml", "--hub_token", TOKEN, "--learning_rate", "1e-4"])
    assert kept == ["--config", "c.yaml", "--learning_rate", "1e-4"] and env == {"HF_TOKEN": TOKEN}
    kept, env = secret_arguments([f"--hub_token={TOKEN}"])
    assert kept == [] and env == {"HF_TOKEN": TOKEN}


def test_a_crash_keeps_its_traceback_but_masks_tokens(tmp_path, monkeypatch):
    """Not a user error: the traceback is for the bug report, with anything shaped like a token masked."""
    from llm_recipes.cli import forward_stderr

    class Stream:
        def __init__(self, chunks):
            self.chunks = list(chunks)

        def read1(self, size):
            return self.chunks.pop(0) if self.chunks else b""

    written = []
    monkeypatch.setattr("llm_recipes.cli._write", lambda out, text: written.append(text))
    token_split_across_chunks = [
        b"Traceback (most recent call last):\n  cmd --hub_token hf_FAKEtokenFor",
        b"TheErrorContract0123\n",
    ]
    forward_stderr(Stream(token_split_across_chunks), str(tmp_path), [TOKEN])
    text = "".join(written)
    assert "Traceback" in text and TOKEN not in text and "hf_FAKE" not in text


def pipeline_config(tmp_path: Path, base: Path, bad: Path, launch: list[str] | None) -> Path:
    """A pipeline whose first stages come from existing outputs and whose SFT section reads bad data."""
    sft = stage_config("sft", base, base, bad, tmp_path / "unused")
    del sft["output_dir"], sft["model_name_or_path"]
    pipeline = {
        "output_root": str(tmp_path / "run"),
        "use_existing": {"pretrain": str(base)},
        "skip": [
            "clean-corpus",
            "train-tokenizer",
            "reward",
            "rl",
            "evaluate",
            "distill",
            "quantize",
            "prune",
            "export",
        ],
    }
    if launch:
        pipeline["launch"] = {"training": launch}
    return write_yaml(tmp_path / "pipeline.yaml", {"pipeline": pipeline, "sft": sft})


@pytest.mark.slow
@pytest.mark.parametrize("launch", [None, ["--cpu", "--num_processes", "2"]], ids=["in-process", "launched"])
def test_a_data_error_in_a_pipeline_stage_is_one_line(tmp_path, base_model_dir, bad_rows, launch):
    config = pipeline_config(tmp_path, base_model_dir, bad_rows, launch)
    result = run_cli("pipeline", "--config", config)
    line = assert_one_error_line(result, contains="bad_rows.jsonl")
    assert line.startswith("error: stage sft: ")
    assert not (tmp_path / "run" / "sft").exists()
