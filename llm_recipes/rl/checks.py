"""Config checks of the reward and PPO stages: everything a user can get wrong in the config fails here, before a
model is loaded (GRPO's and RLOO's are `rewards.check_rl_arguments`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from llm_recipes.configs import check_dataset_path, check_eval_data, check_model_path, check_quantized_training
from llm_recipes.errors import UserError
from llm_recipes.rl.ppo.launch import check_launch_environment
from llm_recipes.rl.rewards import check_reward_function

if TYPE_CHECKING:
    from trl import ModelConfig, RewardConfig

    from llm_recipes.rl.config import PPOConfig, PPOScriptArguments, RewardScriptArguments


def check_reward_arguments(
    script_args: RewardScriptArguments, training_args: RewardConfig, model_args: ModelConfig
) -> None:
    """Data and model paths, a classifier LoRA, quantized training, the held-out pairs."""
    if not script_args.dataset_path:
        raise UserError("dataset_path is required: the preference pairs to train on")
    check_dataset_path(script_args.dataset_path)
    if script_args.eval_dataset_path:
        check_dataset_path(script_args.eval_dataset_path, "eval dataset")
    check_model_path(model_args.model_name_or_path)
    if model_args.use_peft and model_args.lora_task_type != "SEQ_CLS":
        raise UserError(f"lora_task_type: a reward model is a classifier, so SEQ_CLS (not {model_args.lora_task_type})")
    check_quantized_training(model_args)
    check_eval_data(script_args, training_args)


def check_ppo_arguments(script_args: PPOScriptArguments, config: PPOConfig, model_args: ModelConfig) -> None:
    """Prompts, policy, exactly one reward, the value model, batch sizes that divide, quantized training, a launch
    PPO can run under (such as not DeepSpeed) and a checkpoint to resume from."""

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
