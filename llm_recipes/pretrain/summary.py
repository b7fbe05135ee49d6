"""What a pretraining run did: the final evaluation, how far a resumed run had come, and the run's summary."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from transformers import TrainerState

from llm_recipes.data.packing import non_padding_share, row_lengths
from llm_recipes.models.loading import count_parameters
from llm_recipes.pretrain.build import PretrainingBlocks
from llm_recipes.pretrain.config import PretrainScriptArguments
from llm_recipes.pretrain.streaming import ShardStream
from llm_recipes.pretrain.trainer import BuildFacts
from llm_recipes.training.resume import last_logged

PACKING_DESCRIPTIONS = {"cross": "on, attention across documents", "separate": "on, attention within each document"}


def final_evaluation(trainer: Any) -> dict[str, float]:
    """The eval metrics of the final weights: those the Trainer logged at its last step, or a fresh evaluation."""
    if not trainer.args.load_best_model_at_end:
        for entry in reversed(trainer.state.log_history):
            if "eval_loss" in entry:
                if entry.get("step") == trainer.state.global_step:
                    return entry
                break
    return trainer.evaluate()


def resumed_epoch(checkpoint: str | None) -> float:
    """How far the checkpoint a run resumes from had trained, in epochs (0 for a fresh start)."""
    if not checkpoint:
        return 0.0
    return TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json")).epoch or 0.0


@dataclass
class PretrainSummary:
    """The pretrain run's summary: printed, and written to the manifest (`as_summary`)."""

    objective: str
    model: str | None
    parameters: int
    embedding_rows_added: int
    block_size: int
    packing: str
    curriculum: str
    training_documents: int
    eval_documents: int
    training_blocks: int
    tokens_per_epoch: int
    non_padding_share: float
    optimizer_steps: int
    tokens_trained_on: int
    final_train_loss: float | None
    mean_train_loss: float
    eval_loss: float | None
    eval_perplexity: float | None
    eval_perplexity_before_training: float | None
    seconds: float
    tokens_per_second: int | None  # in this session's training time
    rows_kept: dict[str, str]  # dataset path -> what its format conversion kept

    def as_summary(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "model": self.model,
            "parameters": self.parameters,
            "embedding rows added": self.embedding_rows_added,
            "block size": self.block_size,
            "packing": self.packing,
            "curriculum": self.curriculum,
            "training documents": self.training_documents,
            "eval documents": self.eval_documents,
            "training blocks": self.training_blocks,
            "tokens per epoch": self.tokens_per_epoch,
            "non-padding share": self.non_padding_share,
            "optimizer steps": self.optimizer_steps,
            "tokens trained on": self.tokens_trained_on,
            "final train loss": self.final_train_loss,
            "mean train loss": self.mean_train_loss,
            "eval loss": self.eval_loss,
            "eval perplexity": self.eval_perplexity,
            "eval perplexity before training": self.eval_perplexity_before_training,
            "seconds": self.seconds,
            "tokens/s (training)": self.tokens_per_second,
            **{f"rows kept from {source}": kept for source, kept in self.rows_kept.items()},
        }


def pretrain_summary(
    script_args: PretrainScriptArguments,
    trainer: Any,
    blocks: PretrainingBlocks,
    facts: BuildFacts,
    train_result: Any,
    evaluations: tuple[dict[str, float], dict[str, float]],
    epoch_before: float,
    seconds: float,
) -> PretrainSummary:
    """The summary of a finished run; `evaluations` are the eval metrics (before training, after), `epoch_before`
    how far the checkpoint it resumed from had trained."""
    before, after = evaluations
    state = trainer.state
    args = trainer.args
    runtime = train_result.metrics.get("train_runtime") or 0.0
    _, parameters = count_parameters(trainer.accelerator.unwrap_model(trainer.model))
    if isinstance(blocks.train, ShardStream):
        # a stream has no epochs the Trainer can count: tokens are blocks trained on x the mean block
        manifest = blocks.train.manifest
        mean_block = manifest.tokens / manifest.blocks
        blocks_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        trained_tokens = state.global_step * blocks_per_step * mean_block
        session_steps = state.global_step - getattr(trainer, "_initial_global_step", 0)
        session_tokens = session_steps * blocks_per_step * mean_block
        training_blocks = manifest.blocks
        share = manifest.tokens / (manifest.blocks * blocks.block_size)  # of full-width rows (the packed width)
    else:
        trained_tokens = state.epoch * blocks.tokens_per_epoch
        session_tokens = (state.epoch - epoch_before) * blocks.tokens_per_epoch
        training_blocks = len(blocks.train)
        share = non_padding_share(
            row_lengths(blocks.train),
            args.per_device_train_batch_size,
            fixed_width=blocks.block_size if script_args.packing else None,
            pad_to_multiple_of=trainer.data_collator.pad_to_multiple_of,
            seed=args.seed,
        )
    curriculum = script_args.curriculum
    return PretrainSummary(
        objective=script_args.objective,
        model=script_args.model_name_or_path or script_args.preset or script_args.config_name,
        parameters=parameters,
        embedding_rows_added=facts.embedding_rows_added,
        block_size=blocks.block_size,
        packing=PACKING_DESCRIPTIONS[script_args.packing_boundaries] if script_args.packing else "off",
        curriculum=curriculum if curriculum == "none" else f"{curriculum} ({script_args.curriculum_schedule})",
        training_documents=blocks.train_documents,
        eval_documents=blocks.eval_documents,
        training_blocks=training_blocks,
        tokens_per_epoch=blocks.tokens_per_epoch,
        non_padding_share=round(share, 4),
        optimizer_steps=state.global_step,
        tokens_trained_on=round(trained_tokens),
        final_train_loss=last_logged(state.log_history, "loss"),
        mean_train_loss=train_result.training_loss,
        eval_loss=after.get("eval_loss"),
        eval_perplexity=after.get("eval_perplexity"),
        eval_perplexity_before_training=before.get("eval_perplexity"),
        seconds=round(seconds, 1),
        tokens_per_second=round(session_tokens / runtime) if runtime else None,
        rows_kept={source: report.describe() for source, report in facts.reports},
    )
