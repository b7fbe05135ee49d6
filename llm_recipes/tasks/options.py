"""The fine-tuning stage's config checks and derived defaults: everything a user can get wrong in the config fails
here, before data or a model is loaded (data-dependent checks follow right after the data is read)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from transformers.trainer_utils import IntervalStrategy

from llm_recipes.configs import check_dataset_path, check_model_path, looks_local
from llm_recipes.configs.paths import check_eval_split_size
from llm_recipes.errors import UserError
from llm_recipes.models.loading import DECODER_PRESETS, ENCODER_PRESETS
from llm_recipes.tasks.data import CLASSIFICATION, QUESTION_ANSWERING, TASKS, TOKEN_CLASSIFICATION
from llm_recipes.tasks.metrics import DEFAULT_METRIC, metric_names
from llm_recipes.tasks.models import PEFT_TASK_TYPES

# Our defaults where transformers' differ: no tracker unless asked, frequent logs, evaluate and save every epoch,
# keep the best checkpoint (and the last, to resume) and load the best at the end.
FINETUNE_DEFAULTS = dict(
    report_to="none",
    logging_steps=10,
    save_strategy="epoch",
    save_total_limit=2,
    load_best_model_at_end=True,
)
SCHEDULES = ("no", "steps", "epoch")


def evaluation_defaults(given: dict[str, Any]) -> dict[str, Any]:
    """Evaluate when we save (load_best_model_at_end needs the two schedules to agree): eval_strategy and
    eval_steps default to save_strategy and save_steps."""
    save_strategy = str(given.get("save_strategy", FINETUNE_DEFAULTS["save_strategy"]))
    defaults = {"eval_strategy": save_strategy if save_strategy in SCHEDULES else "epoch"}
    if "save_steps" in given:
        defaults["eval_steps"] = given["save_steps"]
    return defaults


def check_arguments(args: Any, training_args: Any, model_args: Any) -> None:
    """Config-level checks: task, paths, model source, option combinations."""

    if args.task not in TASKS:
        raise UserError(f"task is required: one of {', '.join(TASKS)}")
    if not args.dataset_path:
        raise UserError("dataset_path is required: the training data of the task")
    check_dataset_path(args.dataset_path)
    if args.eval_dataset_path:
        check_dataset_path(args.eval_dataset_path, "eval dataset")

    given_sources = (("model_name_or_path", model_args.model_name_or_path), ("preset", args.preset))
    sources = [name for name, value in given_sources if value]
    if len(sources) != 1:
        raise UserError(
            "set exactly one of model_name_or_path (a saved model, e.g. our pretrain stage's) or preset (from scratch)"
            + (f"; got {', '.join(sources)}" if sources else "")
        )
    if model_args.model_name_or_path:
        check_model_path(model_args.model_name_or_path)
        folder = os.path.expanduser(model_args.model_name_or_path)
        if os.path.isfile(os.path.join(folder, "adapter_config.json")) and not os.path.isfile(
            os.path.join(folder, "config.json")
        ):
            raise UserError(
                f"model_name_or_path: {model_args.model_name_or_path} is a LoRA adapter; merge it into its base first "
                "(the export stage) and fine-tune the merged model"
            )
    task_presets = [*ENCODER_PRESETS, *DECODER_PRESETS]
    if args.preset and args.preset not in task_presets:
        raise UserError(f"preset: unknown '{args.preset}'; choose from {', '.join(task_presets)}")
    tokenizer_path = args.tokenizer_name_or_path or model_args.model_name_or_path
    if not tokenizer_path:
        raise UserError("tokenizer_name_or_path is required with preset (e.g. outputs/demo/tokenizer)")
    if looks_local(tokenizer_path) and not os.path.isdir(os.path.expanduser(tokenizer_path)):
        raise UserError(f"tokenizer_name_or_path: tokenizer folder not found: {tokenizer_path}")

    _check_model_options(args, model_args)
    _check_task_options(args)


def _check_model_options(args: Any, model_args: Any) -> None:
    if model_args.load_in_4bit or model_args.load_in_8bit:
        raise UserError("load_in_4bit/load_in_8bit: quantized training is not supported by finetune-task")
    if model_args.use_peft and args.freeze_layers is not None:
        raise UserError("freeze_layers and use_peft exclude each other: LoRA already freezes the base model")
    expected = PEFT_TASK_TYPES[args.task]
    if model_args.use_peft and model_args.lora_task_type not in ("CAUSAL_LM", expected):
        raise UserError(
            f"lora_task_type: task {args.task} uses {expected} (set by the stage), not {model_args.lora_task_type}"
        )


def _check_task_options(args: Any) -> None:
    if args.class_weights is not None and args.task == QUESTION_ANSWERING:
        raise UserError("class_weights: only for classification and token-classification")
    if args.task == QUESTION_ANSWERING:
        max_length = args.max_length or 384
        if args.doc_stride >= max_length:
            raise UserError(f"doc_stride: {args.doc_stride} must be smaller than max_length ({max_length})")
    if args.text_pair_column and args.text_pair_column == args.text_column:
        raise UserError("text_pair_column: must differ from text_column")


def schedule_evaluation(args: Any, training_args: Any, given: dict[str, Any]) -> None:
    """No eval data: no evaluation, no best checkpoint (an error when asked for); else the task's metric picks
    the best checkpoint unless the user chose one."""

    check_eval_split_size(args.eval_split_size)
    has_eval = bool(args.eval_dataset_path or args.eval_split_size)
    if not has_eval:
        needs = [name for name in ("early_stopping_patience", "search") if getattr(args, name)]
        if needs or ("eval_strategy" in given and str(given["eval_strategy"]) != "no"):
            raise UserError(
                f"{(needs or ['eval_strategy'])[0]} needs eval data: set eval_split_size or eval_dataset_path"
            )
        training_args.eval_strategy = IntervalStrategy.NO
        training_args.load_best_model_at_end = False
        return
    if training_args.eval_strategy == IntervalStrategy.NO and (args.early_stopping_patience or args.search):
        raise UserError("early_stopping_patience and search need evaluation during training: set eval_strategy")
    if "metric_for_best_model" not in given:
        training_args.metric_for_best_model = DEFAULT_METRIC[args.task]
        if "greater_is_better" not in given:
            training_args.greater_is_better = True
    check_metric_name(training_args.metric_for_best_model, args.task, None)


def check_metric_name(metric: str | None, task: str, labels: Sequence[str] | None) -> None:
    """metric_for_best_model must be one the task reports; per-label names are checked once labels are known."""

    if metric is None:
        return
    name = metric.removeprefix("eval_")
    known = metric_names(task, labels)
    if name in known:
        return
    per_label = task in (CLASSIFICATION, TOKEN_CLASSIFICATION) and name.startswith(("precision_", "recall_", "f1_"))
    if labels is None and per_label:
        return
    if task == CLASSIFICATION:
        known = [*known[:8], "precision_<label>", "recall_<label>", "f1_<label>"] if labels is None else known
    raise UserError(f"metric_for_best_model: '{metric}' is not a {task} metric; choose from {', '.join(known)}")
