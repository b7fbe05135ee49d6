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
from typing import Any

import llm_recipes  # noqa: F401  (first: it quiets bitsandbytes' import-time warning, which the next import triggers)

# isort: split
from transformers import TrainingArguments
from trl import ModelConfig

from llm_recipes.configs import given_values, parse_config, run_recipe
from llm_recipes.runs.outputs import stage_main
from llm_recipes.tasks import CLASSIFICATION, TOKEN_CLASSIFICATION
from llm_recipes.tasks.config import FinetuneTaskArguments

STAGE = "finetune-task"


def parse_args(argv: Sequence[str] | None = None) -> tuple[FinetuneTaskArguments, TrainingArguments, ModelConfig]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    from llm_recipes.tasks.features import require_fast_tokenizer
    from llm_recipes.tasks.models import load_task_tokenizer, task_config
    from llm_recipes.tasks.options import (
        FINETUNE_DEFAULTS,
        check_arguments,
        evaluation_defaults,
        schedule_evaluation,
    )

    given = given_values(argv)
    defaults = {**FINETUNE_DEFAULTS, **evaluation_defaults(given)}
    args, training_args, model_args = parse_config(
        (FinetuneTaskArguments, TrainingArguments, ModelConfig), argv, **defaults
    )
    check_arguments(args, training_args, model_args)
    schedule_evaluation(args, training_args, given)
    _search_spec(args, training_args, model_args)

    # cheap model-level checks: the tokenizer and the architecture's config, no weights
    tokenizer = load_task_tokenizer(args, model_args)
    if args.task != CLASSIFICATION:
        require_fast_tokenizer(tokenizer, args.task)
    task_config(args, model_args, tokenizer, labels=None)
    return args, training_args, model_args


def _search_spec(args: FinetuneTaskArguments, training_args: TrainingArguments, model_args: ModelConfig):
    import dataclasses

    from llm_recipes.tasks.search import parse_search

    return parse_search(
        args.search,
        {item.name for item in dataclasses.fields(TrainingArguments)},
        model_args.use_peft,
        training_args.metric_for_best_model or "loss",
        training_args.greater_is_better,
    )


def build_trainer(
    args: FinetuneTaskArguments,
    training_args: TrainingArguments,
    model_args: ModelConfig,
    search: Any = None,
    objective: Any = None,
):
    """Data, tokenizer, features, model and trainer, ready to train (or to search with, given a search spec and
    its objective). Returns (trainer, facts for the summary)."""
    from transformers import (
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        set_seed,
    )

    from llm_recipes.models.loading import count_parameters
    from llm_recipes.tasks.data import load_task_data
    from llm_recipes.tasks.features import task_features, trained_label_ids
    from llm_recipes.tasks.labels import class_weights
    from llm_recipes.tasks.metrics import compute_metrics_for
    from llm_recipes.tasks.models import capped_max_length, load_task_tokenizer, model_builder, task_config
    from llm_recipes.tasks.options import check_metric_name
    from llm_recipes.tasks.search import lora_overrides
    from llm_recipes.tasks.training import TaskTrainer

    # Data: columns, labels and answers checked before any model is built
    with training_args.main_process_first(desc="loading task data"):
        data = load_task_data(args, seed=training_args.seed)
    if data.eval is not None:
        check_metric_name(training_args.metric_for_best_model, args.task, data.labels)

    # Tokenizer, architecture (with the label maps) and features
    tokenizer = load_task_tokenizer(args, model_args)
    config = task_config(args, model_args, tokenizer, data.labels)
    max_length, note = capped_max_length(args.max_length, args.task, config)
    with training_args.main_process_first(desc="tokenizing"):
        features = task_features(args, data, tokenizer, max_length)
    weights = (
        class_weights(args.class_weights, data.labels or [], trained_label_ids(features.train)) if data.labels else None
    )

    # Model: built by model_init, so a search can build one per trial (with that trial's LoRA rank)
    model_init = model_builder(args, model_args, config, lora_overrides(search) if search is not None else None)
    if objective is not None:
        build = model_init

        def model_init(trial=None):
            objective.reset()  # the Trainer builds the model first thing in every trial
            return build(trial)

    callbacks = []
    if args.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    collator_class = (
        DataCollatorForTokenClassification if args.task == TOKEN_CLASSIFICATION else DataCollatorWithPadding
    )
    set_seed(training_args.seed)  # the same initial head (and preset weights) on every run, as a search trial gets
    trainer = TaskTrainer(
        model=None if search is not None else model_init(),
        model_init=model_init if search is not None else None,
        args=training_args,
        train_dataset=features.train,
        eval_dataset=features.eval,
        processing_class=tokenizer,
        data_collator=collator_class(tokenizer),
        compute_metrics=compute_metrics_for(args, data, features),
        callbacks=callbacks,
        class_weights=weights,
        layerwise_lr_decay=args.layerwise_lr_decay,
    )
    if note:
        trainer.accelerator.print(f"note: {note}")
    facts = {
        "data": data,
        "features": features,
        "max_length": max_length,
        "class_weights": weights,
        "parameters": count_parameters(trainer.model),  # (trainable, total), before a LoRA adapter is merged
    }
    return trainer, facts


@stage_main
def main(args: FinetuneTaskArguments, training_args: TrainingArguments, model_args: ModelConfig) -> dict:
    """Train, evaluate, save and report (or search, with a `search:` section)."""
    from llm_recipes.hub import push_trained_output, take_over_trainer_push
    from llm_recipes.runs.manifest import StageRun
    from llm_recipes.runs.summary import format_summary
    from llm_recipes.tasks.summary import training_summary
    from llm_recipes.training.resume import resume_point

    if args.search:
        return run_search(args, training_args, model_args)
    configs = {"script": args, "training": training_args, "model": model_args}
    run = StageRun.begin(STAGE, training_args.output_dir, configs, training=True)
    push = take_over_trainer_push(training_args)  # pushed once at the end, with our model card
    trainer, facts = build_trainer(args, training_args, model_args)
    run.inputs = {
        "model": model_args.model_name_or_path or args.preset,
        "tokenizer": args.tokenizer_name_or_path or model_args.model_name_or_path,
        "datasets": facts["data"].sources,
    }

    last_checkpoint = resume_point(trainer, run)
    train_result = trainer.train(resume_from_checkpoint=last_checkpoint)
    eval_metrics = trainer.evaluate() if facts["features"].eval is not None else {}

    save_task_output(trainer, args, training_args, facts["max_length"])
    trainer.save_state()  # trainer_state.json beside the model: the evaluate stage plots its curves
    summary = training_summary(args, model_args, trainer, facts, train_result, eval_metrics, run.seconds)
    if trainer.accelerator.is_main_process:
        run.write(configs, summary)
        print(format_summary(f"{args.task} fine-tuning finished: {training_args.output_dir}", summary))
    if push and trainer.accelerator.is_main_process:
        push_trained_output(training_args, STAGE)
    trainer.accelerator.wait_for_everyone()
    return summary


def save_task_output(trainer, args: FinetuneTaskArguments, training_args: TrainingArguments, max_length: int) -> None:
    """The model a pipeline loads (a LoRA adapter merged into its base), its tokenizer, and for QA our pipeline."""
    from peft import PeftModel

    from llm_recipes.tasks.models import merged, pipeline_settings, prepare_for_pipeline, save_pipeline_code

    model = trainer.accelerator.unwrap_model(trainer.model)
    prepare_for_pipeline(model, args.task, pipeline_settings(args, max_length))
    if isinstance(model, PeftModel):
        if trainer.accelerator.is_main_process:
            merged(model).save_pretrained(training_args.output_dir)
    else:
        trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(training_args.output_dir)
        save_pipeline_code(training_args.output_dir, args.task)


def run_search(args: FinetuneTaskArguments, training_args: TrainingArguments, model_args: ModelConfig) -> dict:
    """An Optuna search over the `search:` space; each trial trains into <output_dir>/search/trial-N, and the best
    configuration is written to <output_dir>/search/best_config.yaml (its output_dir is the final one)."""
    import optuna

    from llm_recipes.hub import take_over_trainer_push
    from llm_recipes.runs.manifest import StageRun, write_json_atomically
    from llm_recipes.runs.summary import format_summary
    from llm_recipes.tasks.search import (
        BEST_CONFIG_NAME,
        SEARCH_DIR_NAME,
        TRIALS_NAME,
        BestObjective,
        best_config,
        hp_space,
        trial_records,
        write_best_config,
    )

    spec = _search_spec(args, training_args, model_args)
    push = take_over_trainer_push(training_args)  # no trial pushes; the run from the best config does, once
    final_output_dir = training_args.output_dir
    search_dir = Path(final_output_dir) / SEARCH_DIR_NAME
    run = StageRun.begin(STAGE, final_output_dir, {"script": args, "training": training_args, "model": model_args})
    run.output_dir, training_args.output_dir = search_dir, str(search_dir)  # the trials and the search's manifest
    objective = BestObjective(spec.metric, maximize=spec.direction == "maximize")
    trainer, facts = build_trainer(args, training_args, model_args, search=spec, objective=objective)
    run.inputs = {"model": model_args.model_name_or_path or args.preset, "datasets": facts["data"].sources}

    storage = optuna.storages.InMemoryStorage()
    best = trainer.hyperparameter_search(
        hp_space=hp_space(spec),
        compute_objective=objective,
        n_trials=spec.trials,
        direction=spec.direction,
        backend="optuna",
        hp_name=lambda trial: f"trial-{trial.number}",
        sampler=optuna.samplers.TPESampler(seed=training_args.seed),
        storage=storage,
        study_name=STAGE,
    )
    if not trainer.accelerator.is_main_process:
        return {}
    trials = trial_records(optuna.load_study(study_name=STAGE, storage=storage))
    training_args.push_to_hub = push
    config = best_config([args, training_args, model_args], best.hyperparameters, final_output_dir)
    best_path = write_best_config(search_dir / BEST_CONFIG_NAME, config, spec, best.objective, len(trials))
    write_json_atomically(search_dir / TRIALS_NAME, trials)
    summary: dict[str, Any] = {
        "task": args.task,
        "trials": len(trials),
        "metric": f"eval {spec.metric} ({spec.direction})",
        "best trial": best.run_id,
        f"best eval {spec.metric}": best.objective,
        **{f"best {name}": value for name, value in best.hyperparameters.items()},
        "best config": str(best_path),
        "seconds": round(run.seconds, 1),
    }
    run.write({"script": args, "training": training_args, "model": model_args}, summary)
    print(format_summary(f"{args.task} hyperparameter search finished: {search_dir}", summary))
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
