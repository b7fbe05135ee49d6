"""PPO sharded with FSDP2 in two CPU processes (configs/accelerate/fsdp_cpu.yaml), through the console script: its
first update is DDP's (same seed), a run killed half way resumes to DDP's weights, LoRA under FSDP2 resumes and
saves a merged policy; DeepSpeed and FSDP1 are refused before anything loads, in the config checks and the dry run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PROJECT, write_yaml
from safetensors.torch import load_file
from test_ppo import PPO, colour_model_dir, interrupting_reward, log_history, ppo_config  # noqa: F401  (a fixture)

from llm_recipes.data.synthetic import synthetic_prompts
from llm_recipes.errors import UserError
from llm_recipes.runs.manifest import read_manifest

CLI = [sys.executable, "-m", "llm_recipes.cli", "ppo"]
DDP = ["--cpu", "--num_processes", "2"]
FSDP2 = ["--config_file", str(PROJECT / "configs" / "accelerate" / "fsdp_cpu.yaml")]


@pytest.fixture(scope="module")
def small_prompts(tmp_path_factory) -> tuple[Path, Path]:
    """Training prompts, and 5 held-out ones: an odd number, so the two processes' shares differ in size."""
    folder = tmp_path_factory.mktemp("prompts")
    train, held_out = folder / "train.jsonl", folder / "eval.jsonl"
    train.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in synthetic_prompts(64, seed=1)))
    held_out.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in synthetic_prompts(5, seed=5)))
    return train, held_out


def config_for(folder: Path, model: Path, prompts: tuple[Path, Path], name: str, **overrides) -> Path:
    """Two PPO steps of 8 prompts per process, a checkpoint after each; reward calls: 1 the held-out evaluation,
    2-3 the rollouts, 4 the last evaluation (checkpoint-1 is written after call 3, checkpoint-2 after call 4)."""
    config = ppo_config(
        model,
        folder / name,
        prompts,
        rollout_batch_size=8,
        mini_batch_size=4,
        ppo_epochs=1,
        num_ppo_steps=2,
        save_steps=1,
        save_total_limit=None,
        reward_function=interrupting_reward(folder),
        **overrides,
    )
    return write_yaml(folder / f"{name}.yaml", {key: value for key, value in config.items() if value is not None})


def launch(config: Path, launcher: list[str], **env: str) -> subprocess.CompletedProcess:
    """`llm-recipes ppo` in two CPU processes: DDP (--cpu --num_processes 2) or FSDP2 (fsdp_cpu.yaml, which needs
    ACCELERATE_USE_CPU=true)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", **env}
    return subprocess.run(
        [*CLI, "--config", str(config), *launcher],
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, colour_model_dir, small_prompts) -> Path:  # noqa: F811
    folder = tmp_path_factory.mktemp("ppo-ddp")
    done = launch(config_for(folder, colour_model_dir, small_prompts, "ddp"), DDP)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "ddp"


@pytest.fixture(scope="module")
def killed_fsdp_run(tmp_path_factory, colour_model_dir, small_prompts) -> tuple[Path, Path]:  # noqa: F811
    """An FSDP2 run whose rank 0 is killed (SIGKILL) in the last held-out evaluation, after step 2's update."""
    folder = tmp_path_factory.mktemp("ppo-fsdp")
    config = config_for(folder, colour_model_dir, small_prompts, "fsdp")
    done = launch(config, FSDP2, KILL_AT_REWARD_CALL="4")
    assert done.returncode != 0
    assert "[ppo] FSDP2: policy, value model and reference sharded over 2 processes" in done.stdout
    assert "[ppo] step 2/2" in done.stdout and "PPO finished" not in done.stdout
    return config, folder / "fsdp"


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


def step_stats(output_dir: Path) -> list[dict]:
    return [entry for entry in log_history(output_dir) if "policy_loss" in entry]


@pytest.mark.slow
def test_fsdp2_first_update_is_ddps(ddp_run, killed_fsdp_run, colour_model_dir):  # noqa: F811
    _, fsdp = killed_fsdp_run
    assert sorted(p.name for p in fsdp.glob("checkpoint-*")) == ["checkpoint-1"]  # killed before checkpoint-2
    ddp_checkpoint, fsdp_checkpoint = ddp_run / "checkpoint-1", fsdp / "checkpoint-1"

    # the weights after step 1, gathered from the shards: DDP's, and the update is far larger than the difference
    fsdp_policy = load_file(fsdp_checkpoint / "policy" / "model.safetensors")
    close(fsdp_policy, load_file(ddp_checkpoint / "policy" / "model.safetensors"))
    start = load_file(colour_model_dir / "model.safetensors")
    assert max((fsdp_policy[name] - start[name]).abs().max() for name in start) > 1e-3
    close(
        load_file(fsdp_checkpoint / "value_model" / "model.safetensors"),
        load_file(ddp_checkpoint / "value_model" / "model.safetensors"),
    )
    # AdamW's moments, gathered into one state keyed by parameter name, are DDP's too
    fsdp_optimizer = torch.load(fsdp_checkpoint / "optimizer.pt", weights_only=True)
    ddp_optimizer = torch.load(ddp_checkpoint / "optimizer.pt", weights_only=True)
    assert fsdp_optimizer["state"].keys() == ddp_optimizer["state"].keys()
    for name, state in fsdp_optimizer["state"].items():
        close(state, ddp_optimizer["state"][name], atol=1e-7)
    assert {p.name for p in fsdp_checkpoint.glob("rng_state_*")} == {"rng_state_0.json", "rng_state_1.json"}

    (fsdp_step,), (ddp_step, _) = step_stats(fsdp_checkpoint), step_stats(ddp_run)
    for key in ("score", "kl", "entropy", "policy_loss", "value_loss", "approx_kl", "response_length", "episodes"):
        assert fsdp_step[key] == pytest.approx(ddp_step[key], abs=1e-5), key


@pytest.mark.slow
def test_a_killed_fsdp2_run_resumes_to_the_uninterrupted_ddp_weights(ddp_run, killed_fsdp_run):
    config, fsdp = killed_fsdp_run
    done = launch(config, FSDP2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"[ppo] resumed from {fsdp / 'checkpoint-1'} at step 1" in done.stdout
    assert done.stdout.count("PPO finished") == 1
    metrics = read_manifest(fsdp)["metrics"]
    assert (metrics["processes"], metrics["sharding"]) == (2, "FSDP2")
    assert read_manifest(ddp_run)["metrics"]["sharding"] == "none"

    close(load_file(fsdp / "model.safetensors"), load_file(ddp_run / "model.safetensors"))
    close(
        load_file(fsdp / "checkpoint-2" / "value_model" / "model.safetensors"),
        load_file(ddp_run / "checkpoint-2" / "value_model" / "model.safetensors"),
    )
    for fsdp_step, ddp_step in zip(step_stats(fsdp), step_stats(ddp_run), strict=True):
        assert fsdp_step["step"] == ddp_step["step"]
        for key in ("score", "kl", "policy_loss", "value_loss"):
            assert fsdp_step[key] == pytest.approx(ddp_step[key], abs=1e-5), key


@pytest.mark.slow
def test_lora_under_fsdp2_resumes_its_adapter_and_saves_the_merged_policy(
    tmp_path,
    colour_model_dir,  # noqa: F811
    small_prompts,
):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = config_for(
        tmp_path, colour_model_dir, small_prompts, "lora", use_peft=True, lora_r=8, lora_alpha=16, learning_rate=1e-2
    )
    out = tmp_path / "lora"
    assert launch(config, FSDP2, KILL_AT_REWARD_CALL="4").returncode != 0
    assert (out / "checkpoint-1" / "policy" / "adapter_model.safetensors").is_file()
    done = launch(config, FSDP2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout and "[ppo] FSDP2: policy, value model sharded over 2 processes" in done.stdout

    saved = AutoModelForCausalLM.from_pretrained(out).state_dict()
    base = AutoModelForCausalLM.from_pretrained(colour_model_dir)
    expected = PeftModel.from_pretrained(base, out / "checkpoint-2" / "policy").merge_and_unload().state_dict()
    close(saved, expected)
    start = AutoModelForCausalLM.from_pretrained(colour_model_dir).state_dict()
    changed = {name for name in start if not torch.equal(saved[name], start[name])}
    assert changed and all("q_proj" in name or "v_proj" in name for name in changed)  # LoRA's default targets


# ---------------------------------------------------------------------------------------------- refused launches


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "not under DeepSpeed (ZeRO)"),
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "FSDP2 only, not fsdp_version 1"),
    ],
)
def test_a_launch_ppo_cannot_run_under_is_refused_before_anything_loads(
    tmp_path,
    colour_model_dir,  # noqa: F811
    small_prompts,
    monkeypatch,
    environment,
    message,
):
    """What `accelerate launch` exports for a DeepSpeed or FSDP1 config, seen by the recipe's checks."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    config = config_for(tmp_path, colour_model_dir, small_prompts, "refused")
    with pytest.raises(UserError) as error:
        PPO.parse_args(["--config", str(config)])
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_a_dry_run_refuses_ppo_under_zero3(tmp_path, colour_model_dir, small_prompts):  # noqa: F811
    zero3 = ["--config_file", "configs/accelerate/deepspeed_zero3.yaml"]
    ppo = {
        "model_name_or_path": str(colour_model_dir),
        "dataset_path": str(small_prompts[0]),
        "reward_function": "llm_recipes.data.synthetic:synthetic_reward",
        "output_dir": str(tmp_path / "out" / "ppo"),
    }
    pipeline = {"output_root": str(tmp_path / "out"), "rl_algorithm": "ppo", "launch": {"ppo": zero3}}
    config = write_yaml(tmp_path / "pipeline.yaml", {"pipeline": pipeline, "ppo": ppo})
    done = subprocess.run(
        [sys.executable, "-m", "llm_recipes.cli", "pipeline", "--config", str(config), "--dry_run"],
        cwd=PROJECT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ppo: our PPO trainer runs on one device, under DDP or under FSDP2" in errors[0]
    assert not (tmp_path / "out").exists()
