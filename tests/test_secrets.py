"""Hub tokens are never written: a fake token given on the command line or in YAML is in no file of a run (model,
checkpoints, training_args.bin, logs, manifest, card, pipeline stage configs, a dry run's temporary folder) and in
nothing printed; it reaches huggingface_hub through HF_TOKEN."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DEMO_DATA, PROJECT, relocated_demo_pipeline, write_yaml

from llm_recipes.cli import load_recipe
from llm_recipes.runs.manifest import config_as_dict, read_manifest
from llm_recipes.runs.secrets import take_secrets, take_token

FAKE_TOKEN = "hf_FAKEtoken0123456789abcdefXYZ"
CLI = [sys.executable, "-m", "llm_recipes.cli"]


def files_holding(secret: str, *folders: Path) -> list[str]:
    """Every file under the folders whose bytes contain the secret (pickles and binary logs included)."""
    found = []
    for folder in folders:
        for path in Path(folder).rglob("*"):
            if path.is_file() and secret.encode() in path.read_bytes():
                found.append(str(path))
    return found


@pytest.fixture
def token_env(monkeypatch):
    """HF_TOKEN as the test left it is undone afterwards (the stages move a given token there)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    return monkeypatch


# --------------------------------------------------------------------------------------------------------------
# The pieces


def test_a_config_token_moves_to_hf_token_and_its_fields_are_emptied(token_env):
    from trl import SFTConfig

    args = SFTConfig(
        output_dir="unused", use_cpu=True, bf16=False, hub_token=FAKE_TOKEN, model_init_kwargs={"token": FAKE_TOKEN}
    )
    take_token(args)
    assert args.hub_token is None and args.model_init_kwargs == {}
    assert os.environ["HF_TOKEN"] == FAKE_TOKEN


def test_a_section_loses_its_tokens_and_secret_env_entries(token_env):
    section = {
        "output_dir": "out",
        "hub_token": FAKE_TOKEN,
        "env": {"WANDB_API_KEY": "wandb-secret", "TOKENIZERS_PARALLELISM": "false"},
        "model_init_kwargs": {"token": FAKE_TOKEN, "dtype": "float32"},
    }
    assert take_secrets(section)
    assert section == {
        "output_dir": "out",
        "env": {"TOKENIZERS_PARALLELISM": "false"},
        "model_init_kwargs": {"dtype": "float32"},
    }
    assert os.environ["HF_TOKEN"] == FAKE_TOKEN and os.environ["WANDB_API_KEY"] == "wandb-secret"
    token_env.delenv("WANDB_API_KEY")
    assert not take_secrets({"output_dir": "out"})


def test_the_manifest_masks_secrets_only_and_keeps_the_other_token_fields():
    from trl import SFTConfig

    args = SFTConfig(
        output_dir="unused", use_cpu=True, bf16=False, eos_token="<|im_end|>", model_init_kwargs={"token": FAKE_TOKEN}
    )
    args.hub_token = FAKE_TOKEN
    saved = config_as_dict(args)
    assert saved["hub_token"] == "<redacted>" and saved["model_init_kwargs"] == {"token": "<redacted>"}
    assert saved["eos_token"] == "<|im_end|>"  # transformers' to_dict would say "<EOS_TOKEN>"
    assert FAKE_TOKEN not in json.dumps(saved)
    args.hub_token = None
    assert config_as_dict(args)["hub_token"] is None  # no token given: nothing to mask


# --------------------------------------------------------------------------------------------------------------
# Stages run with a token


def pretrain_config(tokenizer_dir: Path, output_dir: Path, **extra) -> dict:
    return {
        "dataset_path": str(DEMO_DATA / "arithmetic_alpaca.jsonl"),
        "tokenizer_name_or_path": str(tokenizer_dir),
        "preset": "llama-tiny",
        "block_size": 32,
        "eval_split_size": 0.1,
        "output_dir": str(output_dir),
        "max_steps": 2,
        "save_steps": 1,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "use_cpu": True,
        "seed": 0,
        **extra,
    }


@pytest.mark.slow
def test_pretrain_with_a_token_in_yaml_writes_it_nowhere(tmp_path, base_model_dir, token_env, capsys):
    out = tmp_path / "pretrain"
    config = write_yaml(tmp_path / "pretrain.yaml", pretrain_config(base_model_dir, out, hub_token=FAKE_TOKEN))
    recipe = load_recipe("pretrain")
    recipe.main(*recipe.parse_args(["--config", str(config)]))
    assert (out / "training_args.bin").is_file() and list(out.glob("checkpoint-*/training_args.bin"))
    assert files_holding(FAKE_TOKEN, out) == []
    printed = capsys.readouterr()
    assert FAKE_TOKEN not in printed.out + printed.err
    assert os.environ["HF_TOKEN"] == FAKE_TOKEN  # where huggingface_hub finds it


def sft_config(model_dir: Path, output_dir: Path) -> dict:
    return {
        "model_name_or_path": str(model_dir),
        "dataset_path": str(DEMO_DATA / "arithmetic_alpaca.jsonl"),
        "max_train_samples": 16,
        "max_length": 64,
        "output_dir": str(output_dir),
        "max_steps": 2,
        "save_steps": 1,
        "per_device_train_batch_size": 4,
        "logging_steps": 1,
        "use_cpu": True,
        "seed": 0,
    }


@pytest.mark.slow
def test_sft_from_the_console_script_with_a_token_on_the_command_line_writes_it_nowhere(tmp_path, chat_model_dir):
    """The push cannot reach the Hub here (offline): the stage stops after writing everything, which is checked."""
    out = tmp_path / "sft"
    config = write_yaml(tmp_path / "sft.yaml", sft_config(chat_model_dir, out))
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [*CLI, "sft", "--config", str(config), "--push_to_hub", "true", "--hub_token", FAKE_TOKEN],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert read_manifest(out)["stage"] == "sft" and (out / "training_args.bin").is_file()
    assert files_holding(FAKE_TOKEN, out) == []
    assert FAKE_TOKEN not in done.stdout + done.stderr
    assert "could not reach the Hub (offline?" in done.stderr and done.returncode == 2, done.stderr[-3000:]


# --------------------------------------------------------------------------------------------------------------
# The pipeline


def small_pipeline(tmp_path: Path, **pretrain) -> dict:
    """clean-corpus -> train-tokenizer -> pretrain, under tmp_path."""
    config = relocated_demo_pipeline(tmp_path)
    config = {
        name: section
        for name, section in config.items()
        if name in {"pipeline", "clean-corpus", "train-tokenizer", "pretrain"}
    }
    config["pretrain"].update(max_steps=2, save_steps=1, per_device_train_batch_size=4, logging_steps=1, **pretrain)
    return config


@pytest.mark.slow
def test_a_pipeline_with_a_token_in_a_section_writes_it_nowhere_and_pushes_with_it(tmp_path, token_env, capsys):
    from test_hub import FakeHfApi

    from llm_recipes import hub

    FakeHfApi.instances, FakeHfApi.fail = [], {}
    token_env.setattr(hub.push, "HfApi", FakeHfApi)
    token_env.setenv("HF_HUB_OFFLINE", "0")
    token_env.chdir(PROJECT)
    config = small_pipeline(tmp_path, hub_token=FAKE_TOKEN, push_to_hub=True, hub_model_id="me/tiny-pretrain")
    path = tmp_path / "pipeline.yaml"  # the user's own file holds the token; nothing we write does
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    recipe = load_recipe("pipeline")
    (args,) = recipe.parse_args(["--config", str(path)])
    recipe.main(args)

    out = tmp_path / "out"
    stage_config = out / "pipeline_run" / "configs" / "pretrain.yaml"
    assert "hub_token" not in yaml.safe_load(stage_config.read_text()) and "set HF_TOKEN" in stage_config.read_text()
    assert files_holding(FAKE_TOKEN, out) == []
    printed = capsys.readouterr()
    assert FAKE_TOKEN not in printed.out + printed.err
    (api,) = FakeHfApi.instances  # one push, the pretrained model's, with the token from the environment
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"] and api.calls[0][1]["private"] is True
    assert os.environ["HF_TOKEN"] == FAKE_TOKEN


def test_a_pipeline_dry_run_writes_the_token_nowhere_and_leaves_no_folder_behind(tmp_path):
    config = relocated_demo_pipeline(tmp_path)
    config["sft"]["hub_token"] = FAKE_TOKEN
    config["export"]["env"] = {"HF_TOKEN": FAKE_TOKEN}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "TMPDIR": str(temporary), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*CLI, "pipeline", "--config", str(path), "--dry_run"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "every stage config checked" in done.stdout
    assert list(temporary.glob("llm_recipes_pipeline_*")) == []
    assert files_holding(FAKE_TOKEN, temporary) == [] and not (tmp_path / "out").exists()
    assert FAKE_TOKEN not in done.stdout + done.stderr
