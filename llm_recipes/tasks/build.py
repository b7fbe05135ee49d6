"""The fine-tuning stage's trainer, built from its config: data, tokenizer, features, model and `TaskTrainer`, ready
to train -- or to search with, given a search spec and its objective -- and what was built on the way (`TaskBuild`,
which the summary reads). The model is saved by `tasks.models.save_task_output`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import (
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    set_seed,
)

from llm_recipes.models.loading import count_parameters
from llm_recipes.tasks.data import TOKEN_CLASSIFICATION, load_task_data
from llm_recipes.tasks.features import task_features, trained_label_ids
from llm_recipes.tasks.labels import class_weights
from llm_recipes.tasks.metrics import compute_metrics_for
from llm_recipes.tasks.models import capped_max_length, load_task_tokenizer, model_builder, task_config
from llm_recipes.tasks.options import check_metric_name
from llm_recipes.tasks.search import lora_overrides
from llm_recipes.tasks.training import TaskTrainer


@dataclass
class TaskBuild:
    """What building the trainer found and made, beside the trainer: the rows (with their labels and sources), the
    model features, the max length used, the class weights of the loss, and (trainable, total) parameters counted
    before a LoRA adapter is merged."""

    data: Any
    features: Any
    max_length: int
    class_weights: list[float] | None
    parameters: tuple[int, int]


def build_trainer(
    args: Any,
    training_args: Any,
    model_args: Any,
    search: Any = None,
    objective: Any = None,
) -> tuple[Any, TaskBuild]:
    """Data, tokenizer, features, model and trainer, ready to train (or to search with, given a search spec and
    its objective). Returns (trainer, what was built for the summary)."""
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
    return trainer, TaskBuild(data, features, max_length, weights, count_parameters(trainer.model))
