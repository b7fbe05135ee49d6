"""Task fine-tuning: text classification, token classification (NER) or extractive question answering.

    llm-recipes finetune-task --config configs/demo/finetune_classification.yaml [field overrides] [accelerate flags]
    accelerate launch recipes/finetune_task.py --config configs/demo/finetune_ner.yaml
    python recipes/finetune_task.py --config configs/demo/finetune_qa.yaml

Reads csv/json/jsonl/parquet files, `save_to_disk` folders or Hub datasets with the columns the config names
(labels as names or ids; NER tags aligned to sub-word tokens; SQuAD-style answers, long contexts in windows with
`doc_stride`), trains an encoder (e.g. our pretrain stage's) or a decoder with the task's head -- fully, with
LoRA, or with the lower layers frozen, optionally with layer-wise learning-rate decay and class weights -- over
`transformers.Trainer`, evaluating every epoch (accuracy and macro/per-class P/R/F1; entity-level P/R/F1; SQuAD
EM/F1), stopping early if asked and keeping the best checkpoint. Writes a model that loads with the matching
`AutoModelFor...` class and `transformers.pipeline` (a LoRA adapter is merged in), its tokenizer and a manifest.
With a `search:` section it runs an Optuna hyperparameter search instead and writes the best config as YAML.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from transformers import TrainingArguments
from trl import ModelConfig

from llm_recipes.configs import given_values, parse_config, run_recipe
from llm_recipes.hub import push_trained_output, take_over_trainer_push
from llm_recipes.runs.manifest import StageRun, write_json_atomically
from llm_recipes.runs.outputs import stage_main
from llm_recipes.runs.summary import format_summary
from llm_recipes.tasks import CLASSIFICATION
from llm_recipes.tasks.build import build_trainer
from llm_recipes.tasks.config import FinetuneTaskArguments
from llm_recipes.tasks.features import require_fast_tokenizer
from llm_recipes.tasks.models import load_task_tokenizer, save_task_output, task_config
from llm_recipes.tasks.options import FINETUNE_DEFAULTS, check_arguments, evaluation_defaults, schedule_evaluation
from llm_recipes.tasks.search import (
    BEST_CONFIG_NAME,
    SEARCH_DIR_NAME,
    TRIALS_NAME,
    BestObjective,
    best_config,
    run_trials,
    search_spec,
    write_best_config,
)
from llm_recipes.tasks.summary import SearchSummary, TaskSummary
from llm_recipes.training.resume import resume_point

STAGE = "finetune-task"


def parse_args(argv: Sequence[str] | None = None) -> tuple[FinetuneTaskArguments, TrainingArguments, ModelConfig]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    given = given_values(argv)
    defaults = {**FINETUNE_DEFAULTS, **evaluation_defaults(given)}
    args, training_args, model_args = parse_config(
        (FinetuneTaskArguments, TrainingArguments, ModelConfig), argv, **defaults
    )
    check_arguments(args, training_args, model_args)
    schedule_evaluation(args, training_args, given)
    search_spec(args, training_args, model_args)

    # cheap model-level checks: the tokenizer and the architecture's config, no weights
    tokenizer = load_task_tokenizer(args, model_args)
    if args.task != CLASSIFICATION:
        require_fast_tokenizer(tokenizer, args.task)
    task_config(args, model_args, tokenizer, labels=None)
    return args, training_args, model_args


@stage_main
def main(args: FinetuneTaskArguments, training_args: TrainingArguments, model_args: ModelConfig) -> dict:
    """Train, evaluate, save and report (or search, with a `search:` section)."""
    if args.search:
        return run_search(args, training_args, model_args)
    configs = {"script": args, "training": training_args, "model": model_args}
    run = StageRun.begin(STAGE, training_args.output_dir, configs, training=True)
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card
    trainer, built = build_trainer(args, training_args, model_args)
    run.inputs = {
        "model": model_args.model_name_or_path or args.preset,
        "tokenizer": args.tokenizer_name_or_path or model_args.model_name_or_path,
        "datasets": built.data.sources,
    }

    last_checkpoint = resume_point(trainer, run)
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    eval_metrics = trainer.evaluate() if built.features.eval is not None else {}

    save_task_output(trainer, args, training_args.output_dir, built.max_length)
    trainer.save_state()  # trainer_state.json beside the model: the evaluate stage plots its curves
    summary = TaskSummary.of(args, model_args, trainer, built, train_result, eval_metrics, run.seconds).as_summary()
    if trainer.accelerator.is_main_process:
        run.write(configs, summary)
        print(format_summary(f"{args.task} fine-tuning finished: {training_args.output_dir}", summary))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(training_args, STAGE)
    trainer.accelerator.wait_for_everyone()
    return summary


def run_search(args: FinetuneTaskArguments, training_args: TrainingArguments, model_args: ModelConfig) -> dict:
    """An Optuna search over the `search:` space; each trial trains into <output_dir>/search/trial-N, and the best
    configuration is written to <output_dir>/search/best_config.yaml (its output_dir is the final one)."""
    spec = search_spec(args, training_args, model_args)
    push = take_over_trainer_push(training_args)  # no trial pushes; the run from the best config does, once
    final_output_dir = training_args.output_dir
    search_dir = Path(final_output_dir) / SEARCH_DIR_NAME
    configs = {"script": args, "training": training_args, "model": model_args}
    run = StageRun.begin(STAGE, final_output_dir, configs)
    run.output_dir, training_args.output_dir = search_dir, str(search_dir)  # the trials and the search's manifest
    objective = BestObjective(spec.metric, maximize=spec.direction == "maximize")
    trainer, built = build_trainer(args, training_args, model_args, search=spec, objective=objective)
    run.inputs = {"model": model_args.model_name_or_path or args.preset, "datasets": built.data.sources}

    best, trials = run_trials(trainer, spec, objective, seed=training_args.seed, study_name=STAGE)
    if not trainer.accelerator.is_main_process:
        return {}
    training_args.push_to_hub = push
    config = best_config([args, training_args, model_args], best.hyperparameters, final_output_dir)
    best_path = write_best_config(search_dir / BEST_CONFIG_NAME, config, spec, best.objective, len(trials))
    write_json_atomically(search_dir / TRIALS_NAME, trials)
    summary = SearchSummary(
        task=args.task,
        trials=len(trials),
        metric=spec.metric,
        direction=spec.direction,
        best_trial=best.run_id,
        best_value=best.objective,
        best_hyperparameters=best.hyperparameters,
        best_config=str(best_path),
        seconds=run.seconds,
    ).as_summary()
    run.write(configs, summary)
    print(format_summary(f"{args.task} hyperparameter search finished: {search_dir}", summary))
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
