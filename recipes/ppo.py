"""RLHF PPO with our trainer (TRL 1.x ships none): a policy learns to raise a reward while a KL penalty keeps it
near where it started.

    llm-recipes ppo --config configs/demo/ppo.yaml [field overrides] [accelerate flags]
    llm-recipes ppo --config configs/demo/ppo.yaml --cpu --num_processes 2
    accelerate launch recipes/ppo.py --config configs/demo/ppo.yaml
    python recipes/ppo.py --config configs/demo/ppo.yaml

Reads prompts (a `prompt` column, or the prompt side of any SFT or preference format), a starting policy (usually
the SFT stage's output), and one reward: a reward model from the reward stage or a Python function
`package.module:function`. The value model starts from the reward model (or `value_model_path`, or the policy
with a fresh scalar head). Trains fully or with LoRA (`use_peft`: the reference is then the policy with its
adapter switched off), evaluates the mean reward and KL on held-out prompts before and after, and writes the
policy (merged, loadable by `AutoModelForCausalLM`), its tokenizer, `trainer_state.json` and a manifest.
A rerun into the same output_dir resumes from the last checkpoint; a NaN or a KL blow-up stops the run and
names the last good checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from trl import ModelConfig

from llm_recipes.configs import check_dataset_path, check_model_path, check_quantized_training, parse_config, run_recipe
from llm_recipes.errors import UserError
from llm_recipes.pipeline.launch import check_ppo_launch, resolve_launch
from llm_recipes.rl.config import PPOConfig, PPOScriptArguments
from llm_recipes.runs.outputs import stage_main

# Our defaults where the dataclasses' differ: hold out prompts to measure the gain on.
PPO_DEFAULTS = dict(eval_split_size=0.1, max_eval_samples=256)


def check_launch(launcher_args: list[str], parsed: tuple) -> None:
    """Before `accelerate launch` starts anything: our trainer runs on one device, under DDP or under FSDP2 (not
    DeepSpeed, FSDP1, or FSDP2 over a 4-/8-bit base)."""
    model_args = parsed[2]
    quantized = {"load_in_4bit": model_args.load_in_4bit, "load_in_8bit": model_args.load_in_8bit}
    check_ppo_launch(resolve_launch(launcher_args), quantized)


def parse_args(argv: Sequence[str] | None = None) -> tuple[PPOScriptArguments, PPOConfig, ModelConfig]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded (a launch
    PPO cannot run under, such as DeepSpeed, included)."""
    from llm_recipes.rl.ppo.launch import check_launch_environment
    from llm_recipes.rl.rewards import check_reward_function

    script_args, config, model_args = parse_config((PPOScriptArguments, PPOConfig, ModelConfig), argv, **PPO_DEFAULTS)
    if not script_args.dataset_path:
        raise UserError("dataset_path is required: the prompts to train on (a `prompt` column, or any SFT format)")
    check_dataset_path(script_args.dataset_path)
    if script_args.eval_dataset_path:
        check_dataset_path(script_args.eval_dataset_path, "eval dataset")
    check_model_path(model_args.model_name_or_path)
    if bool(script_args.reward_model_path) == bool(script_args.reward_function):
        raise UserError("set exactly one reward: reward_model_path (a reward model) or reward_function (module:fn)")
    if script_args.reward_model_path:
        check_model_path(script_args.reward_model_path, "reward_model_path")
    else:
        check_reward_function(script_args.reward_function)  # imported now (a dry run only finds it)
    if script_args.value_model_path:
        check_model_path(script_args.value_model_path, "value_model_path")
    if config.rollout_batch_size % config.mini_batch_size:
        raise UserError(
            f"mini_batch_size ({config.mini_batch_size}) must divide rollout_batch_size ({config.rollout_batch_size})"
        )
    if config.mini_batch_size % config.gradient_accumulation_steps:
        raise UserError(
            f"gradient_accumulation_steps ({config.gradient_accumulation_steps}) must divide mini_batch_size "
            f"({config.mini_batch_size})"
        )
    check_quantized_training(model_args)
    check_launch_environment(quantized=bool(model_args.load_in_4bit or model_args.load_in_8bit))
    if config.resume_from_checkpoint and not os.path.isdir(config.resume_from_checkpoint):
        raise UserError(f"resume_from_checkpoint: folder not found: {config.resume_from_checkpoint}")
    return script_args, config, model_args


def load_value_model(script_args: PPOScriptArguments, model_args: ModelConfig, device: Any):
    """The value model's starting point: value_model_path, else the reward model (its backbone already reads the
    task), else the policy with a fresh scalar head."""
    from transformers import AutoModelForSequenceClassification

    from llm_recipes.models.loading import torch_dtype
    from llm_recipes.rl.rewards import load_reward_model

    source = script_args.value_model_path or script_args.reward_model_path
    if source:
        model, _ = load_reward_model(source, dtype=model_args.dtype, device=device)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path,
            num_labels=1,
            revision=model_args.model_revision,
            dtype=torch_dtype(model_args.dtype),
            trust_remote_code=script_args.trust_remote_code,
            use_safetensors=True,
        )
    return model.requires_grad_(True).train()


def load_reward(script_args: PPOScriptArguments, model_args: ModelConfig, device: Any):
    """The reward as one callable fn(prompts=, completions=) -> floats, from a reward model or a Python function."""
    from llm_recipes.rl.rewards import load_reward_model, reward_function_from_path, reward_model_function

    if script_args.reward_function:
        return reward_function_from_path(script_args.reward_function)
    model, tokenizer = load_reward_model(script_args.reward_model_path, dtype=model_args.dtype, device=device)
    model.requires_grad_(False)
    return reward_model_function(model, tokenizer, batch_size=script_args.reward_batch_size)


def build_trainer(script_args: PPOScriptArguments, config: PPOConfig, model_args: ModelConfig):
    """Prompts, tokenizer, policy, reference, value model, reward and our PPOTrainer. Returns (trainer, data)."""
    from dataclasses import replace

    from peft import TaskType, get_peft_model
    from transformers import set_seed
    from trl import get_peft_config

    from llm_recipes.data.preferences import load_prompt_data
    from llm_recipes.models.loading import load_causal_lm, load_tokenizer
    from llm_recipes.rl.ppo.trainer import PPOTrainer, make_accelerator

    accelerator = make_accelerator(config)
    with accelerator.main_process_first():
        data = load_prompt_data(
            script_args.dataset_path,
            script_args.data_format,
            split=script_args.dataset_split,
            eval_path=script_args.eval_dataset_path,
            eval_size=script_args.eval_split_size,
            max_train_samples=script_args.max_train_samples,
            max_eval_samples=script_args.max_eval_samples,
            seed=config.seed,
        )

    # Models: seeded, so every process (and a resumed run) starts the value head from the same weights
    set_seed(config.seed)
    tokenizer = load_tokenizer(model_args, script_args.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # responses are cut at the first EOS, so padding with it is safe
    policy = load_causal_lm(model_args, script_args.trust_remote_code)
    value_model = load_value_model(script_args, model_args, accelerator.device)
    value_model.config.pad_token_id = tokenizer.pad_token_id
    reward_function = load_reward(script_args, model_args, accelerator.device)
    peft_config = get_peft_config(model_args)
    ref_model = None
    if peft_config is not None:
        # the adapter-disabled policy is the reference: no second copy of the weights
        policy = get_peft_model(policy, peft_config)
        value_model = get_peft_model(value_model, replace(peft_config, task_type=TaskType.SEQ_CLS))
    else:
        ref_model = load_causal_lm(model_args, script_args.trust_remote_code)

    trainer = PPOTrainer(
        config,
        policy,
        tokenizer,
        value_model=value_model,
        ref_model=ref_model,
        reward_function=reward_function,
        train_prompts=data.train["prompt"],
        eval_prompts=data.eval["prompt"] if data.eval is not None else None,
        accelerator=accelerator,
    )
    return trainer, data


def ppo_summary(trainer: Any, data: Any, train_stats: dict[str, Any], seconds: float) -> dict[str, Any]:
    evals = [entry for entry in trainer.log_history if "eval_score" in entry]
    summary: dict[str, Any] = {
        "PPO steps": trainer.global_step,
        "episodes": trainer.global_step * trainer.config.rollout_batch_size * trainer.num_processes,
        "train prompts": len(data.train),
        "eval prompts": len(data.eval) if data.eval is not None else 0,
        "processes": trainer.num_processes,
        "sharding": "FSDP2" if trainer.sharded else "none",
    }
    if evals:
        first, last = evals[0], evals[-1]
        summary.update(
            {
                "eval score before": first["eval_score"],
                "eval score after": last["eval_score"],
                "eval score gain": last["eval_score"] - first["eval_score"],
                "eval KL to reference": last["eval_kl"],
                "eval response length": last["eval_response_length"],
            }
        )
    for key in ("score", "kl", "kl_coef", "entropy", "rollouts_per_second"):
        if key in train_stats:
            summary[f"last step {key}"] = train_stats[key]
    summary["seconds"] = round(seconds, 1)
    return summary


@stage_main
def main(script_args: PPOScriptArguments, config: PPOConfig, model_args: ModelConfig) -> dict:
    from llm_recipes.hub import push_trained_output, take_over_trainer_push
    from llm_recipes.runs.manifest import StageRun
    from llm_recipes.runs.summary import format_summary
    from llm_recipes.training.resume import resume_point

    configs = {"script": script_args, "ppo": config, "model": model_args}
    run = StageRun.begin("ppo", config.output_dir, configs, training=True)
    push = take_over_trainer_push(config)  # pushed once at the end, with our model card
    trainer, data = build_trainer(script_args, config, model_args)
    run.inputs = {
        "model": model_args.model_name_or_path,
        "datasets": [path for path, _ in data.reports],
        "reward_model": script_args.reward_model_path,
        "reward_function": script_args.reward_function,
    }

    last_checkpoint = resume_point(trainer, run)
    train_stats = trainer.train(last_checkpoint, eval_before_training=script_args.eval_before_training)
    trainer.save_model(config.output_dir)
    trainer.save_state()  # trainer_state.json beside the model: the evaluate stage plots its curves
    summary = ppo_summary(trainer, data, train_stats, run.seconds)
    if trainer.accelerator.is_main_process:
        run.write(configs, summary)
        print(format_summary(f"PPO finished: {config.output_dir}", summary))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(config, "ppo")
    trainer.accelerator.wait_for_everyone()
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
