"""Evaluation metrics of the fine-tuning tasks, as `Trainer` `compute_metrics` functions.

Classification: accuracy, precision/recall/F1 macro and micro (the evaluation stage's `classification_metrics`,
scikit-learn's conventions) and per class. Token classification: entity-level precision/recall/F1 overall and per
entity type, and word accuracy (our local `seqeval` metric module). Question answering: SQuAD exact match and F1 of
the best answer span per question over all its windows (our local `squad` module). All 0-1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import evaluate
import numpy as np

from llm_recipes.evaluation.classification import classification_metrics
from llm_recipes.metrics import METRICS_DIR
from llm_recipes.metrics.seqeval.seqeval import split_tag
from llm_recipes.tasks.data import CLASSIFICATION, QUESTION_ANSWERING, TOKEN_CLASSIFICATION, answer_spans, column_values
from llm_recipes.tasks.qa import best_answers

IGNORE_INDEX = -100
CLASSIFICATION_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_micro",
    "recall_micro",
    "f1_micro",
)
DEFAULT_METRIC = {CLASSIFICATION: "f1_macro", TOKEN_CLASSIFICATION: "f1", QUESTION_ANSWERING: "f1"}


def load_local_metric(name: str) -> Any:
    """`evaluate.load` of one of our metric modules by its folder (works offline, never touches the Hub)."""

    return evaluate.load(str(METRICS_DIR / name))


def entity_types(labels: Sequence[str]) -> list[str]:
    return sorted({split_tag(label)[1] for label in labels} - {""})


def metric_names(task: str, labels: Sequence[str] | None) -> list[str]:
    """Every metric the task reports (without the Trainer's `eval_` prefix), loss included."""
    if task == CLASSIFICATION:
        per_class = [f"{kind}_{label}" for label in labels or [] for kind in ("precision", "recall", "f1")]
        return ["loss", *CLASSIFICATION_METRICS, *per_class]
    if task == TOKEN_CLASSIFICATION:
        per_type = [f"{kind}_{name}" for name in entity_types(labels or []) for kind in ("precision", "recall", "f1")]
        return ["loss", "precision", "recall", "f1", "accuracy", *per_type]
    return ["loss", "exact_match", "f1"]


# --------------------------------------------------------------------------------------------------------------
# Classification


def classification_scores(predictions: Sequence[int], references: Sequence[int], labels: Sequence[str]) -> dict:
    """Macro and micro averages over the classes seen in predictions or references (scikit-learn's default), and
    precision/recall/F1 of every label (0 for a label neither predicted nor present)."""

    overall = classification_metrics(predictions, references)
    scores = {name: overall[name] for name in CLASSIFICATION_METRICS}
    for index, label in enumerate(labels):
        one = classification_metrics(predictions, references, labels=[index])
        scores[f"precision_{label}"] = one["precision_macro"]
        scores[f"recall_{label}"] = one["recall_macro"]
        scores[f"f1_{label}"] = one["f1_macro"]
    return scores


def _logits(predictions: Any) -> np.ndarray:
    return np.asarray(predictions[0] if isinstance(predictions, (tuple, list)) else predictions)


def classification_metric_fn(labels: Sequence[str]) -> Callable[[Any], dict]:
    def compute(eval_prediction: Any) -> dict:
        predicted = _logits(eval_prediction.predictions).argmax(-1)
        return classification_scores(predicted.tolist(), np.asarray(eval_prediction.label_ids).tolist(), labels)

    return compute


# --------------------------------------------------------------------------------------------------------------
# Token classification


def word_tags(
    predicted_ids: np.ndarray, label_ids: np.ndarray, labels: Sequence[str]
) -> tuple[list[list[str]], list[list[str]]]:
    """Predicted and reference tag names at the labelled positions (each word's first token) of each row."""
    predictions, references = [], []
    for predicted_row, label_row in zip(predicted_ids, label_ids, strict=True):
        kept = label_row != IGNORE_INDEX
        predictions.append([labels[int(i)] for i in predicted_row[kept]])
        references.append([labels[int(i)] for i in label_row[kept]])
    return predictions, references


def entity_metrics(predictions: list[list[str]], references: list[list[str]], metric: Any = None) -> dict:
    """Flat entity-level scores: precision, recall, f1, accuracy and <kind>_<TYPE> per entity type."""
    metric = metric or load_local_metric("seqeval")
    results = metric.compute(predictions=predictions, references=references)
    scores = {
        "precision": results["overall_precision"],
        "recall": results["overall_recall"],
        "f1": results["overall_f1"],
        "accuracy": results["overall_accuracy"],
    }
    for name, values in results.items():
        if isinstance(values, dict):
            for kind in ("precision", "recall", "f1"):
                scores[f"{kind}_{name}"] = values[kind]
    return scores


def token_classification_metric_fn(labels: Sequence[str]) -> Callable[[Any], dict]:
    metric = load_local_metric("seqeval")
    types = entity_types(labels)

    def compute(eval_prediction: Any) -> dict:
        predicted = _logits(eval_prediction.predictions).argmax(-1)
        predictions, references = word_tags(predicted, np.asarray(eval_prediction.label_ids), labels)
        scores = entity_metrics(predictions, references, metric)
        for name in types:  # a type absent from this eval set still reports, so the metric names stay fixed
            for kind in ("precision", "recall", "f1"):
                scores.setdefault(f"{kind}_{name}", 0.0)
        return scores

    return compute


# --------------------------------------------------------------------------------------------------------------
# Question answering


def predicted_answers(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    example_index: Sequence[int],
    offsets: Sequence[list],
    contexts: Sequence[str],
    n_best_size: int,
    max_answer_length: int,
) -> list[str]:
    """The best answer text of every example, from the logits of all its features."""

    features_of: dict[int, list[int]] = {}
    for feature, example in enumerate(example_index):
        features_of.setdefault(example, []).append(feature)
    answers = []
    for example, context in enumerate(contexts):
        features = features_of.get(example, [])
        best = best_answers(
            [start_logits[f] for f in features],
            [end_logits[f] for f in features],
            [offsets[f] for f in features],
            context,
            n_best_size=n_best_size,
            max_answer_length=max_answer_length,
        )
        answers.append(best[0]["answer"])
    return answers


def qa_metric_fn(
    example_index: Sequence[int],
    offsets: Sequence[list],
    contexts: Sequence[str],
    references: Sequence[list[str]],
    n_best_size: int,
    max_answer_length: int,
) -> Callable[[Any], dict]:
    """compute_metrics over the eval features in order: answers per example, scored against `references`."""
    metric = load_local_metric("squad")

    def compute(eval_prediction: Any) -> dict:
        start_logits, end_logits = eval_prediction.predictions[:2]
        answers = predicted_answers(
            np.asarray(start_logits),
            np.asarray(end_logits),
            example_index,
            offsets,
            contexts,
            n_best_size,
            max_answer_length,
        )
        return metric.compute(predictions=answers, references=[list(texts) for texts in references])

    return compute


def compute_metrics_for(args: Any, data: Any, features: Any) -> Callable[[Any], dict] | None:
    """The Trainer's compute_metrics for the task (None without eval data)."""

    if data.eval is None:
        return None
    if args.task == CLASSIFICATION:
        return classification_metric_fn(data.labels)
    if args.task == TOKEN_CLASSIFICATION:
        return token_classification_metric_fn(data.labels)
    contexts = column_values(data.eval, args.context_column)
    references = [
        [text for text, _ in answer_spans(answers, context)]
        for answers, context in zip(column_values(data.eval, args.answers_column), contexts, strict=True)
    ]
    qa = features.qa_eval
    return qa_metric_fn(qa.example_index, qa.offsets, contexts, references, args.n_best_size, args.max_answer_length)
