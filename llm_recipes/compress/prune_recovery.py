"""The prune stage's recovery fine-tune: the saved pruned model trained briefly, pruned weights kept at zero.

On text (`recovery_dataset_path`) it trains as the pretrain stage does (packed text blocks, NaN guard); on chats
(`recovery_datasets`) as SFT does (the chat template, loss on the assistant turns), so a pruned chat model keeps
ending its answers -- plain-text recovery taught it to run on. Either resumes from checkpoints in output_dir.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainingArguments
from trl import ModelConfig, SFTConfig

from llm_recipes.compress.config import PruneArguments
from llm_recipes.compress.prune import MaskKeeper
from llm_recipes.errors import UserError
from llm_recipes.pretrain.config import PretrainScriptArguments
from llm_recipes.pretrain.trainer import build_trainer as build_pretrain_trainer
from llm_recipes.sft.build import build_trainer as build_sft_trainer
from llm_recipes.sft.config import SFTScriptArguments
from llm_recipes.training.resume import last_logged, resume_point

if TYPE_CHECKING:
    from llm_recipes.runs.manifest import StageRun


def recover(
    script_args: PruneArguments, training_args: TrainingArguments, pruned_dir: Path, run: StageRun
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune the saved pruned model on the recovery data and save it into output_dir. Returns (the recovered
    model, the report's record of the recovery)."""
    if script_args.recovery_datasets:
        return _recover_on_chats(script_args, training_args, pruned_dir, run)
    pretrain_args = PretrainScriptArguments(
        dataset_path=script_args.recovery_dataset_path,
        data_format=script_args.data_format,
        text_field=script_args.text_field,
        eval_split_size=0,
        max_train_samples=script_args.max_recovery_samples,
        model_name_or_path=str(pruned_dir),
        block_size=script_args.recovery_block_size,
        trust_remote_code=script_args.trust_remote_code,
    )
    callbacks = [MaskKeeper()] if script_args.method != "structured" else []
    trainer, blocks, _ = build_pretrain_trainer(pretrain_args, training_args, callbacks)
    last_checkpoint = resume_point(trainer, run)
    result = trainer.train(resume_from_checkpoint=last_checkpoint)
    if trainer.loss_guard.failure:
        raise UserError(trainer.loss_guard.failure)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    recovery = {
        "optimizer steps": trainer.state.global_step,
        "training blocks": len(blocks.train),
        "block size": blocks.block_size,
        "final train loss": last_logged(trainer.state.log_history, "loss"),
        "mean train loss": result.training_loss,
    }
    return trainer.accelerator.unwrap_model(trainer.model), recovery


def _recover_on_chats(
    script_args: PruneArguments, training_args: TrainingArguments, pruned_dir: Path, run: StageRun
) -> tuple[Any, dict[str, Any]]:
    """The recovery fine-tune as SFT: the run's training arguments as an `SFTConfig`, the recovery mixture as SFT's
    datasets."""
    values = {f.name: getattr(training_args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    sft_config = SFTConfig(
        **values,
        assistant_only_loss=True,
        max_length=script_args.recovery_block_size,
        trust_remote_code=script_args.trust_remote_code,
    )
    sft_args = SFTScriptArguments(
        datasets=script_args.recovery_datasets, max_train_samples=script_args.max_recovery_samples
    )
    model_args = ModelConfig(model_name_or_path=str(pruned_dir))
    trainer, data = build_sft_trainer(sft_args, sft_config, model_args)
    if script_args.method != "structured":
        trainer.add_callback(MaskKeeper())
    result = trainer.train(resume_from_checkpoint=resume_point(trainer, run))
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    recovery = {
        "optimizer steps": trainer.state.global_step,
        "training rows": len(data.train),
        "data": "chats (SFT: chat template, loss on assistant turns)",
        "final train loss": last_logged(trainer.state.log_history, "loss"),
        "mean train loss": result.training_loss,
    }
    return trainer.accelerator.unwrap_model(trainer.model), recovery
