"""Classification metrics -- accuracy, and precision, recall and F1 averaged macro and micro -- for sequence and
token classification, plus the predictions of a classifier model to feed them.

Written here rather than taken from scikit-learn, which the project does not otherwise need: the arithmetic is a
few lines, and it must also flatten token-level label lists and skip the positions labelled `ignore_index`
(-100, transformers' convention for sub-word pieces and padding). The conventions are scikit-learn's: macro F1 is
the mean of the per-class F1 scores, a class with no predictions has precision 0, and the classes are those seen
in either the predictions or the references unless `labels` names them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from llm_recipes.errors import UserError
from llm_recipes.evaluation.loading import model_device

IGNORE_INDEX = -100


def _flatten(predictions: Sequence[Any], references: Sequence[Any], ignore_index: Any) -> tuple[list, list]:
    if len(predictions) != len(references):
        raise UserError(f"{len(predictions)} predictions but {len(references)} references")
    flat_predictions, flat_references = [], []
    for prediction, reference in zip(predictions, references, strict=True):
        if isinstance(reference, (list, tuple)):  # token classification: one label per token
            if len(prediction) != len(reference):
                raise UserError(f"a sequence has {len(prediction)} predicted labels but {len(reference)} references")
            pairs = zip(prediction, reference, strict=True)
        else:
            pairs = [(prediction, reference)]
        for pred, ref in pairs:
            if ref == ignore_index or ref is None:
                continue
            flat_predictions.append(pred)
            flat_references.append(ref)
    return flat_predictions, flat_references


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2 * precision * recall, precision + recall)


def classification_metrics(
    predictions: Sequence[Any],
    references: Sequence[Any],
    *,
    labels: Sequence[Hashable] | None = None,
    ignore_index: Any = IGNORE_INDEX,
) -> dict[str, float]:
    """accuracy, precision/recall/f1 _macro and _micro, and support (positions scored).

    `predictions` and `references` are one label per example (sequence classification) or one list of labels per
    example (token classification; positions whose reference is `ignore_index` are skipped). Labels may be ints or
    strings.
    """
    flat_predictions, flat_references = _flatten(predictions, references, ignore_index)
    if not flat_references:
        raise UserError("no labelled positions to score")
    classes = list(labels) if labels is not None else sorted(set(flat_references) | set(flat_predictions), key=str)
    true_positives: Counter = Counter()
    predicted: Counter = Counter(flat_predictions)
    actual: Counter = Counter(flat_references)
    for pred, ref in zip(flat_predictions, flat_references, strict=True):
        if pred == ref:
            true_positives[ref] += 1
    precisions = [_ratio(true_positives[c], predicted[c]) for c in classes]
    recalls = [_ratio(true_positives[c], actual[c]) for c in classes]
    f1s = [_f1(p, r) for p, r in zip(precisions, recalls, strict=True)]
    tp = sum(true_positives[c] for c in classes)
    precision_micro = _ratio(tp, sum(predicted[c] for c in classes))
    recall_micro = _ratio(tp, sum(actual[c] for c in classes))
    return {
        "accuracy": sum(true_positives.values()) / len(flat_references),
        "precision_macro": sum(precisions) / len(classes),
        "recall_macro": sum(recalls) / len(classes),
        "f1_macro": sum(f1s) / len(classes),
        "precision_micro": precision_micro,
        "recall_micro": recall_micro,
        "f1_micro": _f1(precision_micro, recall_micro),
        "support": len(flat_references),
    }


def label_ids(model: Any, labels: Sequence[Any]) -> list[Any]:
    """Dataset labels as the model's label ids: ints pass through, names go through config.label2id."""
    label2id = {str(name): int(index) for name, index in (model.config.label2id or {}).items()}

    def convert(label: Any) -> Any:
        if isinstance(label, (list, tuple)):
            return [convert(item) for item in label]
        if label is None or isinstance(label, int):
            return label
        if str(label) not in label2id:
            raise UserError(f"label '{label}' is not one of the model's labels ({', '.join(label2id)})")
        return label2id[str(label)]

    return [convert(label) for label in labels]


@torch.no_grad()
def predict_sequence_labels(
    model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 8, max_length: int | None = None
) -> list[int]:
    """The arg-max label id of each text under a sequence classifier."""
    device = model_device(model)
    max_length = max_length or getattr(model.config, "max_position_embeddings", None) or 512
    predictions: list[int] = []
    for begin in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[begin : begin + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        predictions += model(**batch).logits.argmax(-1).tolist()
    return predictions


@torch.no_grad()
def predict_token_labels(
    model: Any, tokenizer: Any, words: Sequence[Sequence[str]], *, batch_size: int = 8
) -> list[list[int]]:
    """One label id per word under a token classifier: the prediction at each word's first sub-word token
    (transformers' token-classification convention). Words cut off by the context length get -100."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("token classification needs a fast tokenizer (it maps sub-word tokens back to words)")
    device = model_device(model)
    max_length = getattr(model.config, "max_position_embeddings", None) or 512
    predictions: list[list[int]] = []
    for begin in range(0, len(words), batch_size):
        batch_words = [list(w) for w in words[begin : begin + batch_size]]
        encoding = tokenizer(
            batch_words,
            is_split_into_words=True,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        logits = model(**{k: v.to(device) for k, v in encoding.items()}).logits.argmax(-1).tolist()
        for row, sentence in enumerate(batch_words):
            per_word = [IGNORE_INDEX] * len(sentence)
            seen: set[int] = set()
            for position, word_index in enumerate(encoding.word_ids(row)):
                if word_index is not None and word_index not in seen:
                    seen.add(word_index)
                    per_word[word_index] = logits[row][position]
            predictions.append(per_word)
    return predictions
