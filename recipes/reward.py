"""Reward modelling over TRL's RewardTrainer: a one-output classifier trained on preference pairs.

    llm-recipes reward --config configs/demo/reward.yaml [field overrides] [accelerate flags]
    accelerate launch recipes/reward.py --config configs/demo/reward.yaml
    python recipes/reward.py --config configs/demo/reward.yaml

Reads pairwise preference data in any common shape (prompt/chosen/rejected, implicit prompt, ShareGPT, HH-RLHF;
an optional `margin` column), trains a one-output sequence classifier on top of a causal LM (fully or with LoRA,
the score head trained and saved in full; `center_rewards_coefficient` pulls rewards towards zero mean), reports
pairwise accuracy and mean margin on the held-out pairs, and writes a model that loads with
`AutoModelForSequenceClassification` (or `AutoPeftModelForSequenceClassification` for LoRA), its tokenizer and
a manifest. Score with it: `llm_recipes.rl.rewards.load_reward_model` + `score_responses`.
"""

from __future__ import annotations

from collections.abc import Sequence

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from trl import ModelConfig, RewardConfig

from llm_recipes.configs import parse_config, run_recipe
from llm_recipes.hub import push_trained_output, take_over_trainer_push
from llm_recipes.rl.checks import check_reward_arguments
from llm_recipes.rl.config import RewardScriptArguments
from llm_recipes.rl.reward_training import RewardSummary, build_trainer
from llm_recipes.rl.rewards import save_reward_input
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main
from llm_recipes.runs.summary import format_summary
from llm_recipes.training.resume import resume_point

# Our defaults where TRL's differ: no tracker unless asked, private pushes, a classifier head for LoRA.
REWARD_DEFAULTS = dict(report_to="none", hub_private_repo=True, logging_steps=10, lora_task_type="SEQ_CLS")


def parse_args(argv: Sequence[str] | None = None) -> tuple[RewardScriptArguments, RewardConfig, ModelConfig]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    script_args, training_args, model_args = parse_config(
        (RewardScriptArguments, RewardConfig, ModelConfig), argv, **REWARD_DEFAULTS
    )
    check_reward_arguments(script_args, training_args, model_args)
    return script_args, training_args, model_args


@stage_main
def main(script_args: RewardScriptArguments, training_args: RewardConfig, model_args: ModelConfig) -> dict:
    configs = {"script": script_args, "training": training_args, "model": model_args}
    run = StageRun.begin("reward", training_args.output_dir, configs, training=True)
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card
    trainer, data = build_trainer(script_args, training_args, model_args)
    run.inputs = {"model": model_args.model_name_or_path, "datasets": [path for path, _ in data.reports]}

    last_checkpoint = resume_point(trainer, run)
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    eval_metrics = trainer.evaluate() if data.eval is not None else {}

    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json beside the model: the evaluate stage plots its curves
    summary = RewardSummary.of(trainer, data, train_result, eval_metrics, run.seconds).as_summary()
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(training_args.output_dir)
        if model_args.use_peft:
            save_reward_input(training_args.output_dir, data.conversational)  # the config.json of a full model
        run.write(configs, summary)
        print(format_summary(f"Reward model finished: {training_args.output_dir}", summary))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(training_args, "reward")
    trainer.accelerator.wait_for_everyone()
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
