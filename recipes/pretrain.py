"""Pretraining: a causal or masked language model from scratch, or continued from a checkpoint.

    llm-recipes pretrain --config configs/demo/pretrain.yaml [field overrides] [accelerate flags]
    accelerate launch recipes/pretrain.py --config configs/demo/pretrain.yaml
    python recipes/pretrain.py --config configs/demo/pretrain_mlm.yaml

Reads text (txt, json, jsonl, csv, parquet, `save_to_disk` folders, Hub datasets; chats are flattened), tokenizes
it with a given tokenizer, packs documents into fixed-length blocks (EOS between them, attention optionally kept
inside each document), optionally orders them easy -> hard (curriculum), and trains with `transformers.Trainer`:
every optimizer, schedule, accumulation, clipping, evaluation and checkpoint option is a `TrainingArguments` field.
Reports eval perplexity before, during and after training; stops on a NaN/Inf loss before saving; a rerun into
the same output_dir resumes from the last checkpoint. Writes the model, tokenizer and a manifest.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from llm_recipes.configs import (
    check_dataset_path,
    check_model_path,
    given_values,
    is_planned,
    looks_local,
    parse_config,
    run_recipe,
)
from llm_recipes.configs.paths import check_eval_split_size
from llm_recipes.data.config import dataset_specs
from llm_recipes.errors import UserError
from llm_recipes.pretrain.config import PretrainScriptArguments
from llm_recipes.runs.outputs import stage_main

# Our defaults where transformers' differ: no tracker unless asked, frequent logs, two checkpoints kept; and
# evaluation when we save (see _evaluation_defaults).
PRETRAIN_DEFAULTS = dict(report_to="none", logging_steps=10, save_total_limit=2)


def parse_args(argv: Sequence[str] | None = None) -> tuple[PretrainScriptArguments, TrainingArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    from llm_recipes.pretrain.build import model_config, parse_overrides, prepare_tokenizer

    given = given_values(argv)
    defaults = {**PRETRAIN_DEFAULTS, **_evaluation_defaults(given)}
    script_args, training_args = parse_config((PretrainScriptArguments, TrainingArguments), argv, **defaults)
    for spec in dataset_specs(script_args):
        check_dataset_path(spec.path)
    if script_args.eval_dataset_path:
        check_dataset_path(script_args.eval_dataset_path, "eval dataset")
    _check_model_source(script_args)
    _check_curriculum(script_args)
    parse_overrides(script_args.config_overrides)
    _schedule_evaluation(script_args, training_args, given)

    # cheap model-level checks: the tokenizer and the architecture's config, no weights (unless an earlier pipeline
    # stage has yet to write the tokenizer)
    if is_planned(script_args.tokenizer_name_or_path or script_args.model_name_or_path):
        return script_args, training_args
    tokenizer = _load_tokenizer(script_args)
    prepare_tokenizer(tokenizer, script_args.objective)
    config = model_config(script_args, tokenizer)
    if script_args.packing and script_args.packing_boundaries == "separate" and config.model_type == "recurrent_lm":
        raise UserError(
            "packing_boundaries: separate needs an attention model; a recurrent model's state crosses documents "
            "(use cross)"
        )
    return script_args, training_args


def _evaluation_defaults(given: dict[str, Any]) -> dict[str, Any]:
    """Evaluate when we save: eval_strategy and eval_steps default to save_strategy and save_steps. Set before
    TrainingArguments checks them (load_best_model_at_end needs the two schedules to agree)."""
    save_strategy = str(given.get("save_strategy", "steps"))
    save_steps = given.get("save_steps", TrainingArguments.__dataclass_fields__["save_steps"].default)
    return {
        "eval_strategy": save_strategy if save_strategy in ("no", "steps", "epoch") else "steps",
        "eval_steps": save_steps,
    }


def _check_model_source(script_args: PretrainScriptArguments) -> None:
    from llm_recipes.models.loading import preset_names

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


def _check_curriculum(script_args: PretrainScriptArguments) -> None:
    if script_args.curriculum == "column" and not script_args.curriculum_column:
        raise UserError("curriculum: column needs curriculum_column (the numeric score column, low = easy)")
    if script_args.curriculum == "model_loss":
        if not script_args.curriculum_model:
            raise UserError("curriculum: model_loss needs curriculum_model (a small causal LM to score documents)")
        check_model_path(script_args.curriculum_model, "curriculum_model")


def _schedule_evaluation(
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


def _load_tokenizer(script_args: PretrainScriptArguments):
    from transformers import AutoTokenizer

    path = script_args.tokenizer_name_or_path or script_args.model_name_or_path
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=script_args.trust_remote_code)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"tokenizer_name_or_path: cannot load a tokenizer from '{path}': {first_line}") from None


def build_trainer(
    script_args: PretrainScriptArguments, training_args: TrainingArguments, callbacks: Sequence[Any] = ()
) -> tuple[Any, Any, dict[str, Any]]:
    """Tokenizer, data blocks, model and trainer, ready to train. Returns (trainer, blocks, facts for the summary)."""
    from transformers import EarlyStoppingCallback, set_seed

    from llm_recipes.data.config import DatasetSpec
    from llm_recipes.pretrain.build import (
        PretrainTrainer,
        build_blocks,
        capped_block_size,
        load_or_init_model,
        load_pretraining_texts,
        make_collator,
        model_config,
        prepare_tokenizer,
    )

    # Tokenizer and architecture: the vocabulary follows the tokenizer, blocks fit the model's positions
    tokenizer = _load_tokenizer(script_args)
    notes = prepare_tokenizer(tokenizer, script_args.objective)
    config = model_config(script_args, tokenizer)
    block_size = capped_block_size(script_args.block_size, config)
    if block_size < script_args.block_size:
        notes.append(f"block_size {script_args.block_size} capped at the model's {block_size} positions")

    # Data: text -> documents (EOS-terminated) -> curriculum order -> blocks
    eval_spec = None
    if script_args.eval_dataset_path:
        eval_spec = DatasetSpec(
            path=script_args.eval_dataset_path, format=script_args.data_format, text_field=script_args.text_field
        )
    with training_args.main_process_first(desc="preparing pretraining data"):
        texts = load_pretraining_texts(
            dataset_specs(script_args),
            eval_spec=eval_spec,
            eval_size=script_args.eval_split_size,
            max_train_samples=script_args.max_train_samples,
            max_eval_samples=script_args.max_eval_samples,
            seed=training_args.seed,
            num_proc=script_args.dataset_num_proc,
            score_column=script_args.curriculum_column if script_args.curriculum == "column" else None,
        )
        blocks = build_blocks(texts, tokenizer, script_args, block_size, seed=training_args.seed)

    # Model: seeded, so a rerun (or a resumed run) starts from the same weights
    set_seed(training_args.seed)
    model, rows_added = load_or_init_model(script_args, config, tokenizer)
    if rows_added:
        notes.append(f"the tokenizer grew: {rows_added} embedding rows added")

    extra_callbacks = list(callbacks)
    if script_args.early_stopping_patience is not None:
        extra_callbacks.append(EarlyStoppingCallback(early_stopping_patience=script_args.early_stopping_patience))
    trainer = PretrainTrainer(
        model=model,
        args=training_args,
        train_dataset=blocks.train,
        eval_dataset=blocks.eval,
        processing_class=tokenizer,
        data_collator=make_collator(tokenizer, script_args, model, block_size),
        callbacks=extra_callbacks,
        sequential=script_args.curriculum != "none",
        causal=script_args.objective == "clm",
    )
    for note in notes:
        trainer.accelerator.print(f"note: {note}")
    facts = {"reports": texts.reports, "embedding rows added": rows_added}
    return trainer, blocks, facts


@stage_main
def main(script_args: PretrainScriptArguments, training_args: TrainingArguments, callbacks: Sequence[Any] = ()) -> dict:
    """Train, evaluate, save and report. `callbacks` are extra `TrainerCallback`s (for users and tests)."""
    from llm_recipes.hub import push_trained_output, take_over_trainer_push
    from llm_recipes.runs.manifest import StageRun
    from llm_recipes.runs.summary import format_summary
    from llm_recipes.training.resume import resume_point

    configs = {"script": script_args, "training": training_args}
    run = StageRun.begin("pretrain", training_args.output_dir, configs, training=True)
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card
    trainer, blocks, facts = build_trainer(script_args, training_args, callbacks)
    run.inputs = {
        "tokenizer": script_args.tokenizer_name_or_path or script_args.model_name_or_path,
        "model": script_args.model_name_or_path or script_args.preset or script_args.config_name,
        "datasets": [path for path, _ in facts["reports"]],
    }

    before = trainer.evaluate() if blocks.eval is not None and script_args.eval_before_training else {}
    last_checkpoint = resume_point(trainer, run)
    facts["epoch before"] = resumed_epoch(last_checkpoint)  # read now: save_total_limit may rotate it away
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    if trainer.loss_guard.failure:
        raise UserError(trainer.loss_guard.failure)
    eval_metrics = _final_evaluation(trainer) if blocks.eval is not None else {}

    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json beside the model: the evaluate stage plots its curves
    summary = _summary(script_args, trainer, blocks, facts, train_result, before, eval_metrics, run)
    if trainer.accelerator.is_main_process:
        run.write(configs, summary)
        print(format_summary(f"pretraining finished: {training_args.output_dir}", summary))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(training_args, "pretrain")
    trainer.accelerator.wait_for_everyone()
    return summary


def _final_evaluation(trainer) -> dict[str, float]:
    """The eval metrics of the final weights: those the Trainer logged at its last step, or a fresh evaluation."""
    if not trainer.args.load_best_model_at_end:
        for entry in reversed(trainer.state.log_history):
            if "eval_loss" in entry:
                if entry.get("step") == trainer.state.global_step:
                    return entry
                break
    return trainer.evaluate()


PACKING_DESCRIPTIONS = {"cross": "on, attention across documents", "separate": "on, attention within each document"}


def resumed_epoch(checkpoint: str | None) -> float:
    """How far the checkpoint a run resumes from had trained, in epochs (0 for a fresh start)."""
    from transformers import TrainerState

    if not checkpoint:
        return 0.0
    return TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json")).epoch or 0.0


def _summary(script_args, trainer, blocks, facts, train_result, before, eval_metrics, run) -> dict:
    from llm_recipes.data.packing import non_padding_share, row_lengths
    from llm_recipes.models.loading import count_parameters
    from llm_recipes.training.resume import last_logged

    state = trainer.state
    args = trainer.args
    session_tokens = (state.epoch - facts["epoch before"]) * blocks.tokens_per_epoch
    runtime = train_result.metrics.get("train_runtime") or 0.0
    _, parameters = count_parameters(trainer.accelerator.unwrap_model(trainer.model))
    share = non_padding_share(
        row_lengths(blocks.train),
        args.per_device_train_batch_size,
        fixed_width=blocks.block_size if script_args.packing else None,
        pad_to_multiple_of=trainer.data_collator.pad_to_multiple_of,
        seed=args.seed,
    )
    summary = {
        "objective": script_args.objective,
        "model": script_args.model_name_or_path or script_args.preset or script_args.config_name,
        "parameters": parameters,
        "embedding rows added": facts["embedding rows added"],
        "block size": blocks.block_size,
        "packing": PACKING_DESCRIPTIONS[script_args.packing_boundaries] if script_args.packing else "off",
        "curriculum": script_args.curriculum
        if script_args.curriculum == "none"
        else f"{script_args.curriculum} ({script_args.curriculum_schedule})",
        "training documents": blocks.train_documents,
        "eval documents": blocks.eval_documents,
        "training blocks": len(blocks.train),
        "tokens per epoch": blocks.tokens_per_epoch,
        "non-padding share": round(share, 4),
        "optimizer steps": state.global_step,
        "tokens trained on": round(state.epoch * blocks.tokens_per_epoch),
        "final train loss": last_logged(state.log_history, "loss"),
        "mean train loss": train_result.training_loss,
        "eval loss": eval_metrics.get("eval_loss"),
        "eval perplexity": eval_metrics.get("eval_perplexity"),
        "eval perplexity before training": before.get("eval_perplexity"),
        "seconds": round(run.seconds, 1),
        "tokens/s (training)": round(session_tokens / runtime) if runtime else None,
    }
    for source, report in facts["reports"]:
        summary[f"rows kept from {source}"] = report.describe()
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
