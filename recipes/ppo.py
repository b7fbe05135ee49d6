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

from collections.abc import Sequence

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from trl import ModelConfig

from llm_recipes.configs import parse_config, run_recipe
from llm_recipes.hub import push_trained_output, take_over_trainer_push
from llm_recipes.pipeline.launch import check_ppo_launch, resolve_launch
from llm_recipes.rl.checks import check_ppo_arguments
from llm_recipes.rl.config import PPOConfig, PPOScriptArguments
from llm_recipes.rl.ppo.build import PPOSummary, build_trainer
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main
from llm_recipes.runs.summary import format_summary
from llm_recipes.training.resume import resume_point

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
    script_args, config, model_args = parse_config((PPOScriptArguments, PPOConfig, ModelConfig), argv, **PPO_DEFAULTS)
    check_ppo_arguments(script_args, config, model_args)
    return script_args, config, model_args


@stage_main
def main(script_args: PPOScriptArguments, config: PPOConfig, model_args: ModelConfig) -> dict:
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
    summary = PPOSummary.of(trainer, data, train_stats, run.seconds).as_summary()
    if trainer.accelerator.is_main_process:
        run.write(configs, summary)
        print(format_summary(f"PPO finished: {config.output_dir}", summary))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(config, "ppo")
    trainer.accelerator.wait_for_everyone()
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
