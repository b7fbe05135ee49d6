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

from collections.abc import Sequence
from typing import Any

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from transformers import TrainingArguments

from llm_recipes.configs import check_dataset_path, given_values, parse_config, run_recipe
from llm_recipes.data.config import dataset_specs
from llm_recipes.errors import UserError
from llm_recipes.hub import push_trained_output, take_over_trainer_push
from llm_recipes.pretrain.build import parse_overrides
from llm_recipes.pretrain.checks import (
    check_curriculum,
    check_model,
    check_model_source,
    check_stream,
    evaluation_defaults,
    schedule_evaluation,
)
from llm_recipes.pretrain.config import PretrainScriptArguments
from llm_recipes.pretrain.summary import final_evaluation, pretrain_summary, resumed_epoch
from llm_recipes.pretrain.trainer import build_trainer
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main
from llm_recipes.runs.summary import format_summary
from llm_recipes.training.resume import resume_point

# Our defaults where transformers' differ: no tracker unless asked, frequent logs, two checkpoints kept; and
# evaluation when we save (see evaluation_defaults).
PRETRAIN_DEFAULTS = dict(report_to="none", logging_steps=10, save_total_limit=2)


def parse_args(argv: Sequence[str] | None = None) -> tuple[PretrainScriptArguments, TrainingArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""

    given = given_values(argv)
    defaults = {**PRETRAIN_DEFAULTS, **evaluation_defaults(given)}
    script_args, training_args = parse_config((PretrainScriptArguments, TrainingArguments), argv, **defaults)
    for spec in dataset_specs(script_args):
        check_dataset_path(spec.path)
    if script_args.eval_dataset_path:
        check_dataset_path(script_args.eval_dataset_path, "eval dataset")
    check_model_source(script_args)
    check_curriculum(script_args)
    parse_overrides(script_args.config_overrides)
    check_stream(script_args, training_args)  # a shard folder (tokenize's output): fits this run's tokenizer
    schedule_evaluation(script_args, training_args, given)
    check_model(script_args)  # the tokenizer and the architecture's config, no weights
    return script_args, training_args


@stage_main
def main(script_args: PretrainScriptArguments, training_args: TrainingArguments, callbacks: Sequence[Any] = ()) -> dict:
    """Train, evaluate, save and report. `callbacks` are extra `TrainerCallback`s (for users and tests)."""

    configs = {"script": script_args, "training": training_args}
    run = StageRun.begin("pretrain", training_args.output_dir, configs, training=True)
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card
    trainer, blocks, facts = build_trainer(script_args, training_args, callbacks)
    run.inputs = {
        "tokenizer": script_args.tokenizer_name_or_path or script_args.model_name_or_path,
        "model": script_args.model_name_or_path or script_args.preset or script_args.config_name,
        "datasets": [path for path, _ in facts.reports],
    }

    before = trainer.evaluate() if blocks.eval is not None and script_args.eval_before_training else {}
    last_checkpoint = resume_point(trainer, run)
    epoch_before = resumed_epoch(last_checkpoint)  # read now: save_total_limit may rotate it away
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    if trainer.loss_guard.failure:
        raise UserError(trainer.loss_guard.failure)
    eval_metrics = final_evaluation(trainer) if blocks.eval is not None else {}

    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json beside the model: the evaluate stage plots its curves
    summary = pretrain_summary(
        script_args, trainer, blocks, facts, train_result, (before, eval_metrics), epoch_before, run.seconds
    ).as_summary()
    if trainer.accelerator.is_main_process:
        run.write(configs, summary)
        print(format_summary(f"pretraining finished: {training_args.output_dir}", summary))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(training_args, "pretrain")
    trainer.accelerator.wait_for_everyone()
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
