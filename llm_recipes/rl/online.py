"""What the GRPO and RLOO stages share: TRL's online RL trainers differ in the algorithm, not in the story.

Both read prompts, a policy and one reward (our reward model or a Python function), train, evaluate the mean reward
on held-out prompts before and after, and save the policy with its tokenizer, generation config and manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llm_recipes.hub import push_trained_output, take_over_trainer_push
from llm_recipes.models.loading import count_parameters
from llm_recipes.rl.rewards import load_rl_inputs, rl_summary
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.summary import format_summary
from llm_recipes.training.resume import resume_point


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The ids that end a completion, as TRL's GRPO and RLOO trainers collect them: the tokenizer's EOS and the
    generation config's."""
    configured = model.generation_config.eos_token_id
    configured = configured if isinstance(configured, list) else [configured]
    return [i for i in dict.fromkeys([tokenizer.eos_token_id, *configured]) if i is not None]


def missing_eos_penalty_function(penalty: float, eos_ids: Sequence[int]) -> Callable[..., list[float]]:
    """A TRL reward function worth -`penalty` for a completion that never ended (cut at max_completion_length: its
    last id is no EOS), 0 otherwise. TRL adds it to the stage's reward and logs it as rewards/missing_eos_penalty."""
    ends = frozenset(eos_ids)

    def missing_eos_penalty(prompts: Any, completions: Any, completion_ids: Any, **kwargs: Any) -> list[float]:
        return [0.0 if ids and ids[-1] in ends else -float(penalty) for ids in completion_ids]

    return missing_eos_penalty


def with_missing_eos_penalty(rewards: list, penalty: float | None, eos_ids: Sequence[int], training_args: Any) -> list:
    """The stage's reward plus the missing-EOS penalty (when there is one), its weight 1 beside the user's."""
    if not penalty:
        return rewards
    weights = getattr(training_args, "reward_weights", None)
    if weights is not None and len(weights) == len(rewards):
        training_args.reward_weights = [*weights, 1.0]
    return [*rewards, missing_eos_penalty_function(penalty, eos_ids)]


def build_online_rl_trainer(trainer_class: type, script_args: Any, training_args: Any, model_args: Any):
    """Prompts, policy, reward and the TRL trainer (GRPOTrainer, RLOOTrainer). Returns (trainer, data)."""

    data, model, tokenizer, rewards, peft_config = load_rl_inputs(script_args, training_args, model_args)
    # TRL scores a completion cut at max_completion_length as if it had ended; the penalty makes ending pay
    eos_ids = eos_token_ids(model, tokenizer)
    rewards = with_missing_eos_penalty(rewards, script_args.missing_eos_penalty, eos_ids, training_args)
    trainer = trainer_class(
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return trainer, data


def train_online_rl(stage: str, trainer_class: type, script_args: Any, training_args: Any, model_args: Any) -> dict:
    """Train, evaluate before and after, save, write the manifest, print the summary and push if asked."""

    configs = {"script": script_args, "training": training_args, "model": model_args}
    run = StageRun.begin(stage, training_args.output_dir, configs, training=True)
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card
    trainer, data = build_online_rl_trainer(trainer_class, script_args, training_args, model_args)
    run.inputs = {
        "model": model_args.model_name_or_path,
        "datasets": [path for path, _ in data.reports],
        "reward": script_args.reward_model_path or script_args.reward_function,
    }

    last_checkpoint = resume_point(trainer, run)
    evaluate = data.eval is not None
    eval_before = trainer.evaluate() if evaluate and script_args.eval_before_training and not last_checkpoint else {}
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    eval_after = trainer.evaluate() if evaluate else {}

    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    summary = rl_summary(
        trainer, data, train_result, eval_before, eval_after, count_parameters(trainer.model), run.seconds
    )
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(training_args.output_dir)
        trainer.accelerator.unwrap_model(trainer.model).generation_config.save_pretrained(training_args.output_dir)
        run.write(configs, summary)
        print(format_summary(f"{stage.upper()} finished: {training_args.output_dir}", summary))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(training_args, stage)
    trainer.accelerator.wait_for_everyone()
    return summary
