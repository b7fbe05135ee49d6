"""The reward stage's trainer: TRL's RewardTrainer with exact pairwise evaluation (`PairwiseRewardTrainer`), built
from the stage's config (`build_trainer`: preference data, tokenizer, a one-output classifier, LoRA), and the
table a run ends with (`RewardSummary`). Loading and scoring with the trained model is `rewards`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import set_seed
from trl import RewardTrainer, get_peft_config

from llm_recipes.data.mixture import check_batches
from llm_recipes.data.preferences import load_preference_data
from llm_recipes.errors import UserError
from llm_recipes.models.chat import ensure_chat_template, read_chat_template
from llm_recipes.models.loading import count_parameters, load_tokenizer
from llm_recipes.rl.rewards import load_reward_model_for_training, pairwise_metrics, record_reward_input
from llm_recipes.training.resume import last_logged

if TYPE_CHECKING:
    from trl import ModelConfig, RewardConfig

    from llm_recipes.rl.config import RewardScriptArguments


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


def build_trainer(
    script_args: RewardScriptArguments, training_args: RewardConfig, model_args: ModelConfig
) -> tuple[PairwiseRewardTrainer, Any]:
    """Data, tokenizer, model and the reward trainer, ready to train. Returns (trainer, data)."""
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


@dataclass
class RewardSummary:
    """The table a reward run ends with (and records in its manifest): the pairs trained and held out (and those
    dropped), the parameters, the training curve's end and the held-out pairwise accuracy and margin."""

    data_format: str
    conversational: bool
    training_pairs: int
    unusable_pairs: int
    pairs_over_max_length: int
    eval_pairs: int
    eval_pairs_over_max_length: int | None
    margin_in_loss: bool
    optimizer_steps: int
    trainable_parameters: int
    total_parameters: int
    final_train_loss: float | None
    final_train_accuracy: float | None
    mean_train_loss: float
    eval_loss: float | None
    eval_pairwise_accuracy: float | None
    eval_mean_margin: float | None
    seconds: float
    rows_kept: dict[str, str]  # source -> what its rows became

    @classmethod
    def of(
        cls, trainer: Any, data: Any, train_result: Any, eval_metrics: dict[str, float], seconds: float
    ) -> RewardSummary:
        trainable, total = count_parameters(trainer.model)
        state = trainer.state
        return cls(
            data_format=data.reports[0][1].source_format,
            conversational=data.conversational,
            training_pairs=len(trainer.train_dataset),
            unusable_pairs=sum(sum(report.dropped.values()) for _, report in data.reports),
            pairs_over_max_length=len(data.train) - len(trainer.train_dataset),
            eval_pairs=len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
            eval_pairs_over_max_length=len(data.eval) - len(trainer.eval_dataset) if data.eval is not None else None,
            margin_in_loss="margin" in data.train.column_names,
            optimizer_steps=state.global_step,
            trainable_parameters=trainable,
            total_parameters=total,
            final_train_loss=last_logged(state.log_history, "loss"),
            final_train_accuracy=last_logged(state.log_history, "accuracy"),
            mean_train_loss=train_result.training_loss,
            eval_loss=eval_metrics.get("eval_loss"),
            eval_pairwise_accuracy=eval_metrics.get("eval_pairwise_accuracy"),
            eval_mean_margin=eval_metrics.get("eval_mean_margin"),
            seconds=seconds,
            rows_kept={source: report.describe() for source, report in data.reports},
        )

    def as_summary(self) -> dict[str, Any]:
        return {
            "data format": self.data_format,
            "conversational": self.conversational,
            "training pairs": self.training_pairs,
            "unusable pairs (dropped)": self.unusable_pairs,
            "pairs over max_length (dropped)": self.pairs_over_max_length,
            "eval pairs": self.eval_pairs,
            "eval pairs over max_length (dropped)": self.eval_pairs_over_max_length,
            "margin in loss": self.margin_in_loss,
            "optimizer steps": self.optimizer_steps,
            "trainable parameters": self.trainable_parameters,
            "total parameters": self.total_parameters,
            "final train loss": self.final_train_loss,
            "final train accuracy": self.final_train_accuracy,
            "mean train loss": self.mean_train_loss,
            "eval loss": self.eval_loss,
            "eval pairwise accuracy": self.eval_pairwise_accuracy,
            "eval mean margin": self.eval_mean_margin,
            "seconds": round(self.seconds, 1),
            **{f"rows kept from {source}": kept for source, kept in self.rows_kept.items()},
        }
