"""DPO, GRPO and RLOO (thin wrappers over TRL) on the synthetic colour task: SFT policy -> a few steps from each
recipe module -> a policy that loads. GRPO's eval reward before and after training is printed (and must not
drop); the true reward (does the answer name a colour?) of the trained policies is printed for the report."""

from __future__ import annotations

import functools
import importlib.util
import json

import pytest
import torch
from conftest import PROJECT

from llm_recipes.errors import UserError


def load_stage(stage: str, script: str):
    """The recipe module, through the CLI's stage table once the stage is registered there."""
    from llm_recipes.cli import STAGES, load_recipe

    if stage in STAGES:
        return load_recipe(stage)
    spec = importlib.util.spec_from_file_location(f"recipe_{stage}", PROJECT / "recipes" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DPO = load_stage("dpo", "dpo.py")
GRPO = load_stage("grpo", "grpo.py")
RLOO = load_stage("rloo", "rloo.py")

TRAINING = [
    "--bf16",
    "false",
    "--use_cpu",
    "true",
    "--gradient_checkpointing",
    "false",
    "--save_strategy",
    "no",
    "--dtype",
    "float32",
    "--seed",
    "42",
]
SYNTHETIC_REWARD = "llm_recipes.data.synthetic:synthetic_reward"


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """The task's data and a tiny base model (no training yet)."""
    from llm_recipes.data.synthetic import write_synthetic_base_model, write_synthetic_demo_data

    folder = tmp_path_factory.mktemp("colour-task")
    write_synthetic_demo_data(folder / "data", conversational=False)
    write_synthetic_base_model(folder / "base")
    return folder


@pytest.fixture(scope="module")
def sft_policy(task):
    """The SFT policy RL starts from: it names a colour in about half its answers."""
    sft = load_stage("sft", "sft.py")
    output = task / "sft"
    args = [
        "--dataset_path",
        str(task / "data" / "colour_sft.jsonl"),
        "--model_name_or_path",
        str(task / "base"),
        "--output_dir",
        str(output),
        "--num_train_epochs",
        "5",
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "3e-3",
        "--lr_scheduler_type",
        "cosine",
        "--max_length",
        "64",
        "--packing",
        "false",
        *TRAINING,
    ]
    sft.main(*sft.parse_args(args))
    return output


@pytest.fixture(scope="module")
def reward_model(task):
    reward = load_stage("reward", "reward.py")
    output = task / "rm"
    args = [
        "--dataset_path",
        str(task / "data" / "preferences.jsonl"),
        "--model_name_or_path",
        str(task / "base"),
        "--output_dir",
        str(output),
        "--num_train_epochs",
        "1",
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "3e-3",
        "--max_length",
        "64",
        "--eval_split_size",
        "0",
        *TRAINING,
    ]
    reward.main(*reward.parse_args(args))
    return output


@functools.cache
def true_reward(model_dir, n: int = 48) -> float:
    """Mean synthetic reward of sampled answers to held-out prompts (a seed unseen in training)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_recipes.data.synthetic import synthetic_prompts, synthetic_reward

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = synthetic_prompts(n, seed=99)
    torch.manual_seed(0)
    answers = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        out = model.generate(ids, do_sample=True, top_k=0, max_new_tokens=24, pad_token_id=tokenizer.pad_token_id)
        answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return sum(synthetic_reward(prompts, answers)) / n


def rl_args(task, policy, output, *extra):
    return [
        "--dataset_path",
        str(task / "data" / "rl_prompts.jsonl"),
        "--eval_split_size",
        "32",
        "--model_name_or_path",
        str(policy),
        "--output_dir",
        str(output),
        "--per_device_train_batch_size",
        "16",
        "--per_device_eval_batch_size",
        "32",
        "--num_generations",
        "8",
        "--max_completion_length",
        "24",
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "5",
        *TRAINING,
        *extra,
    ]


# ---------------------------------------------------------------------------------------------------------------
# Config checks (no model is loaded)


def test_rl_config_mistakes_fail_early(task, tmp_path):
    base = rl_args(task, task / "base", tmp_path / "out")
    with pytest.raises(UserError, match="set exactly one of reward_model_path"):
        GRPO.parse_args(base)
    with pytest.raises(UserError, match="set exactly one of reward_model_path"):
        RLOO.parse_args([*base, "--reward_function", SYNTHETIC_REWARD, "--reward_model_path", str(task / "base")])
    with pytest.raises(UserError, match="reward_model_path: model folder not found"):
        GRPO.parse_args([*base, "--reward_model_path", str(tmp_path / "no-rm")])
    with pytest.raises(UserError, match="'llm_recipes.data.synthetic' has no 'colour_reward'"):
        RLOO.parse_args([*base, "--reward_function", "llm_recipes.data.synthetic:colour_reward"])
    with pytest.raises(UserError, match="dataset file not found"):
        GRPO.parse_args([*base, "--reward_function", SYNTHETIC_REWARD, "--dataset_path", "missing.jsonl"])
    with pytest.raises(UserError, match="GRPO requires at least 2 generations per prompt"):
        GRPO.parse_args([*base, "--reward_function", SYNTHETIC_REWARD, "--num_generations", "1"])
    script_args, training_args, _ = GRPO.parse_args([*base, "--reward_function", SYNTHETIC_REWARD])
    assert script_args.reward_model_path is None and training_args.use_vllm is False
    # an empty value on the command line unsets what the YAML named
    script_args, _, _ = RLOO.parse_args([*base, "--reward_function", "", "--reward_model_path", str(task / "base")])
    assert script_args.reward_function is None
    with pytest.raises(UserError, match="beta: -0.1 must be >= 0"):
        RLOO.parse_args([*base, "--reward_function", SYNTHETIC_REWARD, "--beta", "-0.1"])
    with pytest.raises(UserError, match="dataset_path is required"):
        DPO.parse_args(["--model_name_or_path", str(task / "base"), *TRAINING])


def test_a_reward_model_becomes_a_trl_reward_function(base_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from llm_recipes.rl.rewards import reward_model_function, score_responses

    model = AutoModelForSequenceClassification.from_pretrained(base_model_dir, num_labels=1).eval()
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    reward = reward_model_function(model, tokenizer, batch_size=2)
    assert reward.__name__ == "reward_model"  # TRL logs rewards/<name>/mean
    prompts = ["Name an animal.", "Name a colour."]
    completions = [" A dog.", [{"role": "assistant", "content": " Blue."}]]
    expected = score_responses(model, tokenizer, prompts, [" A dog.", " Blue."])
    assert reward(prompts=prompts, completions=completions, completion_ids=None, trainer_state=None) == expected


# ---------------------------------------------------------------------------------------------------------------
# Each trainer, a few steps on the synthetic task


def _loads_as_policy(folder) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_recipes.runs.manifest import read_manifest

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = model.generate(**tokenizer("Describe the cat.", return_tensors="pt"), max_new_tokens=8, do_sample=False)
    assert out.shape[1] > 0
    assert read_manifest(folder)["complete"] is True
    assert json.loads((folder / "trainer_state.json").read_text())["log_history"]


@pytest.mark.slow
def test_dpo_on_the_synthetic_preferences(task, sft_policy, tmp_path):
    output = tmp_path / "dpo"
    args = [
        "--dataset_path",
        str(task / "data" / "preferences.jsonl"),
        "--eval_split_size",
        "64",
        "--model_name_or_path",
        str(sft_policy),
        "--output_dir",
        str(output),
        "--max_steps",
        "20",
        "--per_device_train_batch_size",
        "16",
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "5",
        *TRAINING,
    ]
    summary = DPO.main(*DPO.parse_args(args))
    assert summary["optimizer steps"] == 20 and summary["training pairs"] == 1200 - 64
    _loads_as_policy(output)
    before, after = true_reward(sft_policy), true_reward(output)
    print(
        f"\nDPO: eval reward accuracy {summary['eval reward accuracy']:.3f}, "
        f"margin {summary['eval reward margin']:.3f}; "
        f"true reward of sampled answers {before:.3f} (SFT) -> {after:.3f} (DPO)"
    )
    assert summary["eval reward accuracy"] > 0.5


@pytest.mark.slow
def test_dpo_from_a_base_model_without_a_chat_template(base_model_dir, shared_data, tmp_path):
    """Conversational pairs give the policy ChatML tokens; the reference must have their rows too (TRL loaded it
    from the path, with the old vocabulary, and DPO crashed with an IndexError)."""
    output = tmp_path / "dpo"
    args = ["--dataset_path", str(shared_data / "dpo_en_demo.json"), "--model_name_or_path", str(base_model_dir)]
    args += ["--output_dir", str(output), "--max_steps", "2", "--per_device_train_batch_size", "2", "--max_length"]
    summary = DPO.main(*DPO.parse_args([*args, "128", "--max_train_samples", "8", "--eval_split_size", "0", *TRAINING]))
    assert summary["optimizer steps"] == 2 and summary["conversational"]
    _loads_as_policy(output)


@pytest.mark.slow
def test_grpo_with_the_synthetic_reward_function(task, sft_policy, tmp_path):
    output = tmp_path / "grpo"
    summary = GRPO.main(
        *GRPO.parse_args(rl_args(task, sft_policy, output, "--reward_function", SYNTHETIC_REWARD, "--max_steps", "20"))
    )
    _loads_as_policy(output)
    before, after = summary["eval reward before"], summary["eval reward after"]
    print(
        f"\nGRPO (synthetic reward): eval reward {before:.3f} -> {after:.3f}; train reward "
        f"{summary['first train reward']:.3f} -> {summary['final train reward']:.3f}; "
        f"true reward of sampled answers {true_reward(sft_policy):.3f} -> {true_reward(output):.3f}"
    )
    assert summary["optimizer steps"] == 20
    assert after >= before  # seeded: measured 0.42 -> 0.89 on held-out prompts


@pytest.mark.slow
def test_rloo_with_the_trained_reward_model(task, sft_policy, reward_model, tmp_path):
    output = tmp_path / "rloo"
    args = rl_args(task, sft_policy, output, "--reward_model_path", str(reward_model), "--max_steps", "15")
    summary = RLOO.main(*RLOO.parse_args(args))
    _loads_as_policy(output)
    print(
        f"\nRLOO (reward model): eval reward {summary['eval reward before']:.3f} -> "
        f"{summary['eval reward after']:.3f}, final KL {summary['final KL']}; true reward of sampled answers "
        f"{true_reward(sft_policy):.3f} -> {true_reward(output):.3f}"
    )
    assert summary["optimizer steps"] == 15 and summary["final KL"] is not None  # RLOO's default beta is 0.05


@pytest.mark.slow
def test_grpo_with_lora_saves_an_adapter(task, sft_policy, tmp_path):
    from peft import AutoPeftModelForCausalLM

    output = tmp_path / "grpo-lora"
    extra = ["--reward_function", SYNTHETIC_REWARD, "--max_steps", "3", "--use_peft", "true", "--lora_r", "8"]
    extra += ["--eval_before_training", "false", "--eval_split_size", "8", "--per_device_eval_batch_size", "8"]
    summary = GRPO.main(*GRPO.parse_args(rl_args(task, sft_policy, output, *extra)))
    assert (output / "adapter_config.json").is_file() and not (output / "model.safetensors").exists()
    assert summary["eval reward before"] is None and summary["eval reward after"] is not None
    assert summary["trainable parameters"] < summary["total parameters"] / 10
    AutoPeftModelForCausalLM.from_pretrained(output)
