"""The pretrain recipe's config checks: one model source, a tokenizer to find, a coherent curriculum, evaluation
scheduled only where there is eval data, and the model-level checks a tokenizer and a config (no weights) allow."""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from llm_recipes.configs import check_model_path, is_planned, looks_local
from llm_recipes.configs.paths import check_eval_split_size
from llm_recipes.data.shards import check_packing_matches, check_shards_match, is_shard_folder, read_shard_manifest
from llm_recipes.errors import UserError
from llm_recipes.models.loading import preset_names
from llm_recipes.pretrain.build import (
    capped_block_size,
    load_tokenizer,
    model_config,
    prepare_tokenizer,
    separates_documents,
)
from llm_recipes.pretrain.config import PretrainScriptArguments
from llm_recipes.pretrain.streaming import rank_shards


def evaluation_defaults(given: dict[str, Any]) -> dict[str, Any]:
    """Evaluate when we save: eval_strategy and eval_steps default to save_strategy and save_steps. Set before
    TrainingArguments checks them (load_best_model_at_end needs the two schedules to agree)."""
    save_strategy = str(given.get("save_strategy", "steps"))
    save_steps = given.get("save_steps", TrainingArguments.__dataclass_fields__["save_steps"].default)
    return {
        "eval_strategy": save_strategy if save_strategy in ("no", "steps", "epoch") else "steps",
        "eval_steps": save_steps,
    }


def check_model_source(script_args: PretrainScriptArguments) -> None:
    sources = [name for name in ("model_name_or_path", "preset", "config_name") if getattr(script_args, name)]
    if len(sources) != 1:
        raise UserError(
            "set exactly one of model_name_or_path (continued pretraining), preset or config_name (from scratch)"
            + (f"; got {', '.join(sources)}" if sources else "")
        )
    if script_args.model_name_or_path:
        check_model_path(script_args.model_name_or_path)
    if script_args.preset and script_args.preset not in preset_names():
        raise UserError(f"preset: unknown '{script_args.preset}'; choose from {', '.join(preset_names())}")
    if script_args.config_name and looks_local(script_args.config_name):
        check_model_path(script_args.config_name, "config_name", weights=False)
    tokenizer_path = script_args.tokenizer_name_or_path or script_args.model_name_or_path
    if not tokenizer_path:
        raise UserError("tokenizer_name_or_path is required when training from scratch (train one first)")
    tokenizer_missing = not is_planned(tokenizer_path) and not os.path.isdir(os.path.expanduser(tokenizer_path))
    if looks_local(tokenizer_path) and tokenizer_missing:
        raise UserError(f"tokenizer_name_or_path: tokenizer folder not found: {tokenizer_path}")


def check_curriculum(script_args: PretrainScriptArguments) -> None:
    if script_args.curriculum == "column" and not script_args.curriculum_column:
        raise UserError("curriculum: column needs curriculum_column (the numeric score column, low = easy)")
    if script_args.curriculum == "model_loss":
        if not script_args.curriculum_model:
            raise UserError("curriculum: model_loss needs curriculum_model (a small causal LM to score documents)")
        check_model_path(script_args.curriculum_model, "curriculum_model")


def schedule_evaluation(
    script_args: PretrainScriptArguments, training_args: TrainingArguments, given: dict[str, Any]
) -> None:
    """No eval data means no evaluation during training (an error if it was asked for); early stopping needs it."""
    check_eval_split_size(script_args.eval_split_size)
    if not (script_args.eval_dataset_path or script_args.eval_split_size):
        if "eval_strategy" in given and training_args.eval_strategy != IntervalStrategy.NO:
            raise UserError(
                f"eval_strategy is '{training_args.eval_strategy.value}' but there is no eval data: "
                "set eval_split_size or eval_dataset_path"
            )
        training_args.eval_strategy = IntervalStrategy.NO
    if script_args.early_stopping_patience is not None:
        if training_args.eval_strategy == IntervalStrategy.NO:
            raise UserError("early_stopping_patience needs evaluation during training (eval data and eval_strategy)")
        if training_args.metric_for_best_model is None:
            training_args.metric_for_best_model = "eval_loss"
            training_args.greater_is_better = False


def check_model(script_args: PretrainScriptArguments) -> None:
    """Cheap model-level checks: the tokenizer and the architecture's config, no weights (none while an earlier
    pipeline stage has yet to write the tokenizer)."""

    if is_planned(script_args.tokenizer_name_or_path or script_args.model_name_or_path):
        return
    tokenizer = load_tokenizer(script_args)
    prepare_tokenizer(tokenizer, script_args.objective)
    config = model_config(script_args, tokenizer)
    if script_args.packing and script_args.packing_boundaries == "separate" and config.model_type == "recurrent_lm":
        raise UserError(
            "packing_boundaries: separate needs an attention model; a recurrent model's state crosses documents "
            "(use cross)"
        )


def check_stream(script_args: PretrainScriptArguments, training_args: TrainingArguments) -> None:
    """A shard folder (tokenize's output) as dataset_path: what a stream cannot do, and shards that do not fit.
    Runs before `schedule_evaluation`: evaluation is then scheduled only when eval_dataset_path is set."""
    if not is_shard_folder(script_args.dataset_path):
        return
    if script_args.datasets:
        raise UserError("datasets: a shard folder as dataset_path is the whole corpus; mix sources when tokenizing")
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise UserError("max_steps is required with a shard folder: a stream has no length to count epochs by")
    if script_args.curriculum != "none":
        raise UserError("curriculum: a shard folder is read in its own order; order documents before tokenize")
    if training_args.dataloader_num_workers:
        raise UserError("dataloader_num_workers: a shard stream is read by one process per rank; set it to 0")
    script_args.eval_split_size = 0  # nothing is held out of a stream: eval data comes from eval_dataset_path
    manifest = read_shard_manifest(script_args.dataset_path)
    check_packing_matches(manifest, script_args.packing, separates_documents(script_args))
    if not is_planned(script_args.tokenizer_name_or_path or script_args.model_name_or_path):
        tokenizer = load_tokenizer(script_args)
        check_shards_match(manifest, tokenizer)  # as loaded, before pretraining adds its pad or mask token
        prepare_tokenizer(tokenizer, script_args.objective)
        config = model_config(script_args, tokenizer)
        check_shards_match(manifest, block_size=capped_block_size(script_args.block_size, config))
    rank_shards(len(manifest.shards), 0, training_args.world_size)
