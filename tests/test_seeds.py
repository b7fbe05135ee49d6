"""The same seed gives the same result: every training stage run twice with one seed ends with the same summary
and the same weights, even when the process's random state differs before each run (as two separate processes'
do: torch seeds itself from the OS at start-up)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEMO_DATA, write_yaml
from safetensors.torch import load_file
from test_distill import distill_config
from test_finetune_task import task_config, task_data  # noqa: F401  (task_data is a fixture used below)
from test_ppo import SYNTHETIC_REWARD, ppo_config, prompt_files  # noqa: F401  (prompt_files: a fixture)
from test_pretrain import pretrain_config
from test_prune import CALIBRATION, CORPUS, FAST_REPORT
from test_rl_trl import task  # noqa: F401  (a fixture: the synthetic colour task's data and base model)
from test_sft import sft_config

from llm_recipes.cli import load_recipe

pytestmark = pytest.mark.slow

ALPACA = str(DEMO_DATA / "arithmetic_alpaca.jsonl")
FAST = {"use_cpu": True, "save_strategy": "no", "report_to": "none", "seed": 7}
TRL_FAST = {**FAST, "bf16": False, "gradient_checkpointing": False, "dtype": "float32", "logging_steps": 1}


def _rl(colour_task: Path, output: Path, **extra) -> dict:
    return {
        **TRL_FAST,
        "dataset_path": str(colour_task / "data" / "rl_prompts.jsonl"),
        "max_train_samples": 16,
        "model_name_or_path": str(colour_task / "base"),
        "output_dir": str(output),
        "reward_function": SYNTHETIC_REWARD,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 8,
        "max_steps": 2,
        "learning_rate": 1e-3,
        **extra,
    }


def _preferences(colour_task: Path, output: Path, **extra) -> dict:
    return {
        **TRL_FAST,
        "dataset_path": str(colour_task / "data" / "preferences.jsonl"),
        "max_train_samples": 32,
        "eval_split_size": 16,
        "model_name_or_path": str(colour_task / "base"),
        "output_dir": str(output),
        "per_device_train_batch_size": 8,
        "max_length": 64,
        "max_steps": 2,
        "learning_rate": 3e-3,
        **extra,
    }


# stage -> (the config of one run writing to `output`, given the fixtures)
CONFIGS: dict[str, Callable[[dict, Path], dict]] = {
    "pretrain": lambda f, out: pretrain_config(f["base_model_dir"], out, max_steps=2, seed=7),
    "sft": lambda f, out: sft_config(f["base_model_dir"], out, dataset_path=ALPACA, max_steps=2, seed=7),
    "reward": lambda f, out: _preferences(f["task"], out),
    "dpo": lambda f, out: _preferences(f["task"], out, max_length=64),
    "grpo": lambda f, out: _rl(f["task"], out),
    "rloo": lambda f, out: _rl(f["task"], out),
    # conversations on a model without a chat template: the template's new tokens get random embedding rows
    "grpo chat": lambda f, out: _rl(f["task"], out, dataset_path=str(DEMO_DATA / "rl_prompts.jsonl")),
    "ppo": lambda f, out: ppo_config(
        f["task"] / "base", out, f["prompt_files"], num_ppo_steps=2, rollout_batch_size=8, mini_batch_size=4, seed=7
    ),
    "distill": lambda f, out: distill_config(
        f["chat_model_dir"], out, ALPACA, student_preset="llama-tiny", max_steps=2, seed=7
    ),
    "finetune-task": lambda f, out: task_config(
        "question-answering", f["task_data"], f["base_model_dir"], out, num_train_epochs=1, seed=7
    ),
    "prune": lambda f, out: {
        **FAST,
        "model_name_or_path": str(f["base_model_dir"]),
        "output_dir": str(out),
        "method": "wanda",
        "sparsity": 0.5,
        "recovery_dataset_path": CORPUS,
        "recovery_block_size": 64,
        "max_recovery_samples": 40,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 3e-3,
        **CALIBRATION,
        **FAST_REPORT,
    },
}


def _scramble_random_state(seed: int) -> None:
    """Leave the process's generators somewhere else, as a fresh process would find them."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update({f"{file.name}:{name}": tensor for name, tensor in load_file(file).items()})
    assert tensors, f"no weights written to {folder}"
    return tensors


def _comparable(summary: dict, output: Path) -> dict:
    """The summary without timings and without the output folder's own name."""
    timed = ("second", "latency", "ms/", "per s", "/s")
    return {
        key: (str(value).replace(str(output), "<output>") if isinstance(value, str) else value)
        for key, value in summary.items()
        if not any(word in key.lower() for word in timed)
    }


@pytest.mark.parametrize("stage", list(CONFIGS))
def test_the_same_seed_trains_the_same_model(stage, tmp_path, request):
    names = ("base_model_dir", "chat_model_dir", "task", "prompt_files", "task_data")
    fixtures = {name: request.getfixturevalue(name) for name in names}
    recipe = load_recipe(stage.split()[0])
    runs = []
    for number in (1, 2):
        output = tmp_path / f"run{number}"
        config = CONFIGS[stage](fixtures, output)
        _scramble_random_state(1000 + number)
        summary = recipe.main(*recipe.parse_args(["--config", str(write_yaml(tmp_path / f"{number}.yaml", config))]))
        runs.append((_comparable(summary, output), _weights(output)))
    (summary_1, weights_1), (summary_2, weights_2) = runs
    assert summary_1 == summary_2
    assert weights_1.keys() == weights_2.keys()
    differing = [name for name in weights_1 if not torch.equal(weights_1[name], weights_2[name])]
    assert not differing, f"{stage}: {len(differing)} tensors differ between two runs, e.g. {differing[:3]}"
