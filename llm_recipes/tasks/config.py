"""Task fine-tuning's arguments: classification, token classification (NER), extractive QA."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_recipes.configs.options import ResumeOptions
from llm_recipes.configs.parsing import RANGE_CHECKS

FINETUNE_TASKS = ("classification", "token-classification", "question-answering")


@dataclass
class FinetuneTaskArguments(ResumeOptions):
    """What the task fine-tuning recipe needs beyond `TrainingArguments` and TRL's `ModelConfig` (model path, LoRA)."""

    task: str | None = field(
        default=None,
        metadata={
            "help": "classification (text or text pair -> label), token-classification (words -> tags, e.g. NER) or "
            "question-answering (extractive: question + context -> answer span).",
            "choices": FINETUNE_TASKS,
        },
    )
    # data
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "Training data: a csv, json, jsonl or parquet file, a `save_to_disk` folder or a Hub id."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Config name of a Hub dataset."})
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path` to train on."})
    eval_dataset_path: str | None = field(
        default=None, metadata={"help": "Evaluation data (may be the same Hub id as dataset_path, another split)."}
    )
    eval_dataset_split: str = field(
        default="validation", metadata={"help": "Split of `eval_dataset_path` (data files have one split: ignored)."}
    )
    eval_split_size: float = field(
        default=0.1,
        metadata={"help": "Without eval_dataset_path: rows held out for eval, a share (< 1) or a count (0: none)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many eval rows."})
    text_column: str = field(default="text", metadata={"help": "classification: the text column."})
    text_pair_column: str | None = field(
        default=None, metadata={"help": "classification: a second text column (sentence pairs, e.g. NLI)."}
    )
    label_column: str = field(default="label", metadata={"help": "classification: the label column (names or ids)."})
    tokens_column: str = field(default="tokens", metadata={"help": "token-classification: the list-of-words column."})
    tags_column: str = field(
        default="ner_tags", metadata={"help": "token-classification: the list-of-tags column (names or ids)."}
    )
    question_column: str = field(default="question", metadata={"help": "question-answering: the question column."})
    context_column: str = field(default="context", metadata={"help": "question-answering: the context column."})
    answers_column: str = field(
        default="answers",
        metadata={"help": "question-answering: SQuAD-style answers {text: [...], answer_start: [...]}."},
    )
    labels: list[str] | None = field(
        default=None,
        metadata={
            "help": "The label (tag) names in id order; integer labels in the data are ids into it. Default: the "
            "dataset's ClassLabel names, else the names found in the data (sorted; tags: O first)."
        },
    )
    label_all_tokens: bool = field(
        default=False,
        metadata={
            "help": "token-classification: label every sub-word token of a word (B-X continues as I-X), not just "
            "the first. Evaluation always scores each word once."
        },
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Tokens per example or window (default 128; question-answering 384)."}
    )
    doc_stride: int = field(
        default=128, metadata={"help": "question-answering: tokens of overlap between windows of a long context."}
    )
    max_answer_length: int = field(default=30, metadata={"help": "question-answering: longest answer, in tokens."})
    n_best_size: int = field(
        default=20, metadata={"help": "question-answering: start and end candidates per window in the span search."}
    )
    # model
    preset: str | None = field(
        default=None,
        metadata={"help": "From scratch (no model_name_or_path): a named size, e.g. bert-tiny or llama-tiny."},
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "The tokenizer (needed with preset; default: model_name_or_path's)."}
    )
    config_overrides: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Config fields to change, e.g. {hidden_dropout_prob: 0.2} (YAML or JSON)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})
    freeze_layers: int | None = field(
        default=None,
        metadata={
            "help": "Freeze the embeddings and the lowest N transformer blocks; the blocks above and the head "
            "train (0: only the embeddings frozen). Excludes use_peft."
        },
    )
    layerwise_lr_decay: float | None = field(
        default=None,
        metadata={
            "help": "Layer-wise learning-rate decay: the head trains at learning_rate, each block below at this "
            "factor times the one above (0.8-0.95 is usual); null: one learning rate."
        },
    )
    class_weights: list[str] | None = field(
        default=None,
        metadata={
            "help": "Loss weights per label for imbalanced data: balanced (inverse frequency), a list in label "
            "order, or (YAML) a mapping label: weight."
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop when metric_for_best_model has not improved for this many evaluations."},
    )
    # hyperparameter search
    search: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Run an Optuna hyperparameter search instead of one training (pip install 'llm-recipes[search]'): "
            "{trials, metric, direction, space: {field: [choices] or {low, high, log}}}; writes best_config.yaml."
        },
    )


RANGE_CHECKS["doc_stride"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["max_answer_length"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["n_best_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["freeze_layers"] = (lambda v: v is None or v >= 0, "must be >= 0")
RANGE_CHECKS["layerwise_lr_decay"] = (lambda v: v is None or 0 < v <= 1, "must be in (0, 1]")

# fields these arguments share with another stage's, checked the same way whichever is imported
RANGE_CHECKS["early_stopping_patience"] = (lambda v: v is None or v >= 1, "must be >= 1")
