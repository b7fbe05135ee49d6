"""A completion cut at its length limit without an EOS is not scored as if it had ended: PPO, GRPO and RLOO subtract
`missing_eos_penalty` (1.0 unless set) from its reward."""

from __future__ import annotations

import json

import pytest
from conftest import write_yaml
from test_ppo import ppo_config, prompt_files  # noqa: F401  (prompt_files: a fixture)
from test_rl_trl import task  # noqa: F401  (a fixture: the synthetic colour task's data and base model)
from test_seeds import TRL_FAST

from llm_recipes.cli import load_recipe
from llm_recipes.rl.online import missing_eos_penalty_function, with_missing_eos_penalty

SYNTHETIC_REWARD = "llm_recipes.data.synthetic:synthetic_reward"


def test_ppo_penalises_a_missing_eos_unless_told_otherwise(tmp_path, task, prompt_files):  # noqa: F811
    ppo = load_recipe("ppo")

    def parsed(**overrides):
        config = ppo_config(task / "base", tmp_path / "out", prompt_files, **overrides)
        return ppo.parse_args(["--config", str(write_yaml(tmp_path / "ppo.yaml", config))])[1]

    assert parsed().missing_eos_penalty == 1.0
    assert parsed(missing_eos_penalty=None).missing_eos_penalty is None


@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_trl_stages_penalise_a_missing_eos_unless_told_otherwise(stage, tmp_path, task):  # noqa: F811
    recipe = load_recipe(stage)
    config = {
        **TRL_FAST,
        "dataset_path": str(task / "data" / "rl_prompts.jsonl"),
        "model_name_or_path": str(task / "base"),
        "reward_function": SYNTHETIC_REWARD,
        "output_dir": str(tmp_path / "out"),
    }
    script_args, _, _ = recipe.parse_args(["--config", str(write_yaml(tmp_path / "rl.yaml", config))])
    assert script_args.missing_eos_penalty == 1.0
    script_args, _, _ = recipe.parse_args(
        ["--config", str(write_yaml(tmp_path / "rl.yaml", config)), "--missing_eos_penalty", "0"]
    )
    assert script_args.missing_eos_penalty == 0


def test_the_penalty_is_a_reward_function_beside_the_stages_own():
    penalty = missing_eos_penalty_function(1.5, eos_ids=[2, 7])
    assert penalty.__name__ == "missing_eos_penalty"  # TRL logs it under this name
    ids = [[5, 6, 2], [5, 6, 6], [7], [4, 7, 4]]  # ended, cut, ended at once, an EOS not at the end: cut
    assert penalty(prompts=["p"] * 4, completions=["c"] * 4, completion_ids=ids) == [0.0, -1.5, 0.0, -1.5]

    class Args:
        reward_weights = [2.0]

    args, reward = Args(), object()
    assert with_missing_eos_penalty([reward], 0, [2], args) == [reward] and args.reward_weights == [2.0]
    rewards = with_missing_eos_penalty([reward], 1.0, [2], args)
    assert rewards[0] is reward and rewards[1].__name__ == "missing_eos_penalty" and args.reward_weights == [2.0, 1.0]


@pytest.mark.slow
def test_grpo_subtracts_the_penalty_from_cut_completions_only(tmp_path, task):  # noqa: F811
    """A random policy with 6 tokens to answer in rarely ends: the penalty's logged mean is minus the share of cut
    completions, and the summary's reward is the reward function's own, penalty left out."""
    grpo = load_recipe("grpo")
    output = tmp_path / "grpo"
    config = {
        **TRL_FAST,
        "dataset_path": str(task / "data" / "rl_prompts.jsonl"),
        "max_train_samples": 16,
        "eval_split_size": 8,
        "model_name_or_path": str(task / "base"),
        "output_dir": str(output),
        "reward_function": SYNTHETIC_REWARD,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "num_generations": 4,
        "max_completion_length": 6,
        "max_steps": 2,
        "learning_rate": 1e-3,
    }
    summary = grpo.main(*grpo.parse_args(["--config", str(write_yaml(tmp_path / "grpo.yaml", config))]))
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "rewards/missing_eos_penalty/mean" in entry]
    assert steps, "the penalty was not among the rewards"
    for entry in steps:
        assert entry["rewards/missing_eos_penalty/mean"] == pytest.approx(-entry["completions/clipped_ratio"])
        own = entry["rewards/synthetic_reward/mean"]
        assert entry["reward"] == pytest.approx(own + entry["rewards/missing_eos_penalty/mean"])
    assert summary["final share cut without EOS"] > 0
    assert summary["final train reward"] == steps[-1]["rewards/synthetic_reward/mean"]
    evaluated = [entry for entry in history if "eval_rewards/synthetic_reward/mean" in entry]
    assert summary["eval reward after"] == evaluated[-1]["eval_rewards/synthetic_reward/mean"]
