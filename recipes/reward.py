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
import torch
from trl import ModelConfig, RewardConfig, RewardTrainer

from llm_recipes.configs import (
    check_dataset_path,
    check_eval_data,
    check_model_path,
    check_quantized_training,
    parse_config,
    run_recipe,
)
from llm_recipes.errors import UserError
from llm_recipes.rl.config import RewardScriptArguments
from llm_recipes.runs.outputs import stage_main

# Our defaults where TRL's differ: no tracker unless asked, private pushes, a classifier head for LoRA.
REWARD_DEFAULTS = dict(report_to="none", hub_private_repo=True, logging_steps=10, lora_task_type="SEQ_CLS")


class PairwiseRewardTrainer(RewardTrainer):
    """RewardTrainer whose evaluation hands `compute_metrics` every pair's (chosen, rejected) rewards, so pairwise
    accuracy and mean margin are exact over the eval set (TRL's own logged accuracy is a mean of batch means)."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        chosen, rejected = torch.chunk(outputs.logits.squeeze(-1).detach(), chunks=2)
        pairs = torch.stack([chosen, rejected], dim=1)
        return loss.detach(), pairs, torch.zeros(len(pairs), device=pairs.device)


def parse_args(argv: Sequence[str] | None = None) -> tuple[RewardScriptArguments, RewardConfig, ModelConfig]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    script_args, training_args, model_args = parse_config(
        (RewardScriptArguments, RewardConfig, ModelConfig), argv, **REWARD_DEFAULTS
    )
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
    return script_args, training_args, model_args


def build_trainer(script_args: RewardScriptArguments, training_args: RewardConfig, model_args: ModelConfig):
    """Data, tokenizer, model and the reward trainer, ready to train. Returns (trainer, data)."""
    from transformers import set_seed
    from trl import get_peft_config

    from llm_recipes.data.mixture import check_batches
    from llm_recipes.data.preferences import load_preference_data
    from llm_recipes.models.chat import ensure_chat_template, read_chat_template
    from llm_recipes.models.loading import load_tokenizer
    from llm_recipes.rl.rewards import load_reward_model_for_training, pairwise_metrics, record_reward_input

    # Data: any preference shape -> prompt/chosen/rejected (+ margin), eval pairs held out
    with training_args.main_process_first(desc="loading preference data"):
        data = load_preference_data(
            script_args.dataset_path,
            script_args.data_format,
            split=script_args.dataset_split,
            eval_path=script_args.eval_dataset_path,
            eval_size=script_args.eval_split_size,
            max_train_samples=script_args.max_train_samples,
            max_eval_samples=script_args.max_eval_samples,
            seed=training_args.seed,
            num_proc=training_args.dataset_num_proc,
        )
    if not script_args.use_margin and "margin" in data.train.column_names:
        data.train = data.train.remove_columns("margin")
        data.eval = data.eval.remove_columns("margin") if data.eval is not None else None

    # Model and tokenizer: a one-output classifier that knows its pad token and how it will be read. Seeded first:
    # the score head (and a LoRA adapter) start random, and the Trainer seeds only once they exist
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(model_args, training_args.trust_remote_code)
    model = load_reward_model_for_training(model_args, training_args.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    added_token_ids: list[int] = []
    if training_args.chat_template_path:
        tokenizer.chat_template = read_chat_template(training_args.chat_template_path)
        training_args.chat_template_path = None  # applied here; TRL would otherwise apply it again
    if data.conversational:
        added_token_ids = ensure_chat_template(tokenizer, model)
    model.config.pad_token_id = tokenizer.pad_token_id
    record_reward_input(model, data.conversational)

    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        # The score head is new: it must train (and be saved) in full, as must embeddings of added chat tokens
        extra = ["score"] + (["embed_tokens"] if added_token_ids else [])
        peft_config.modules_to_save = list(dict.fromkeys([*(peft_config.modules_to_save or []), *extra]))

    trainer = PairwiseRewardTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        compute_metrics=pairwise_metrics,
        peft_config=peft_config,
    )
    check_pairs_fit(len(data.train), len(trainer.train_dataset), training_args.max_length)
    if data.eval is not None:
        check_pairs_fit(len(data.eval), len(trainer.eval_dataset), training_args.max_length, "eval")
    eval_pairs = len(trainer.eval_dataset) if data.eval is not None else None
    check_batches(len(trainer.train_dataset), eval_pairs, training_args, "pairs")
    return trainer, data


def check_pairs_fit(pairs: int, kept: int, max_length: int | None, which: str = "training") -> None:
    """RewardTrainer drops pairs longer than max_length rather than cutting them (a cut answer is another
    answer): an error when none is left, a warning when most are gone."""
    if kept == 0:
        raise UserError(f"all {pairs} {which} pairs are longer than max_length={max_length} tokens; raise max_length")
    if kept < pairs / 2:
        left_out = pairs - kept
        print(f"warning: {left_out} of {pairs} {which} pairs are longer than max_length={max_length}; left out")


@stage_main
def main(script_args: RewardScriptArguments, training_args: RewardConfig, model_args: ModelConfig) -> dict:
    from llm_recipes.hub import push_trained_output, take_over_trainer_push
    from llm_recipes.models.loading import count_parameters
    from llm_recipes.rl.rewards import save_reward_input
    from llm_recipes.runs.manifest import StageRun
    from llm_recipes.runs.summary import format_summary
    from llm_recipes.training.resume import last_logged, resume_point

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
    trainable, total = count_parameters(trainer.model)
    state = trainer.state
    summary = {
        "data format": data.reports[0][1].source_format,
        "conversational": data.conversational,
        "training pairs": len(trainer.train_dataset),
        "unusable pairs (dropped)": sum(sum(report.dropped.values()) for _, report in data.reports),
        "pairs over max_length (dropped)": len(data.train) - len(trainer.train_dataset),
        "eval pairs": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "eval pairs over max_length (dropped)": (
            len(data.eval) - len(trainer.eval_dataset) if data.eval is not None else None
        ),
        "margin in loss": "margin" in data.train.column_names,
        "optimizer steps": state.global_step,
        "trainable parameters": trainable,
        "total parameters": total,
        "final train loss": last_logged(state.log_history, "loss"),
        "final train accuracy": last_logged(state.log_history, "accuracy"),
        "mean train loss": train_result.training_loss,
        "eval loss": eval_metrics.get("eval_loss"),
        "eval pairwise accuracy": eval_metrics.get("eval_pairwise_accuracy"),
        "eval mean margin": eval_metrics.get("eval_mean_margin"),
        "seconds": round(run.seconds, 1),
        **{f"rows kept from {source}": report.describe() for source, report in data.reports},
    }
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
