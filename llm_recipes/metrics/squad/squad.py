"""SQuAD's exact match and token F1 of extracted answers, as a local `evaluate` metric
(`evaluate.load(<this folder>)`).

The normalisation and the per-answer scores are those of the official SQuAD v1.1 evaluation script: lowercase,
drop punctuation and the articles a/an/the, collapse whitespace; F1 is over the bag of normalised words; with
several reference answers an example takes its best score. Unlike the Hub's `squad` metric, scores are 0-1 (like
every metric of this project) and inputs are plain strings rather than SQuAD's id/answers records.

Self-contained on purpose: `evaluate` copies this one file into its module cache, so it may import only libraries.
"""

from __future__ import annotations

import re
import string
from collections import Counter

import datasets
import evaluate
from evaluate.utils.file_utils import add_start_docstrings

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of EMNLP",
    year = "2016",
    pages = "2383--2392",
}
"""

_DESCRIPTION = """\
Exact match (the share of answers equal to a reference after normalisation) and F1 (word overlap with the best
reference, averaged over examples) of extracted answers, as the SQuAD v1.1 evaluation script computes them, 0-1.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted answer strings.
    references: list of reference answers: a string, or a list of strings (the best-scoring one counts).
Returns:
    exact_match: share of exact matches after normalisation, 0-1.
    f1: mean word-overlap F1, 0-1.
Examples:
    >>> squad = evaluate.load("llm_recipes/metrics/squad")
    >>> squad.compute(predictions=["the Eiffel Tower"], references=[["Eiffel Tower"]])
    {'exact_match': 1.0, 'f1': 1.0}
"""

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop articles, collapse whitespace (in the official script's order)."""
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1_score(prediction: str, reference: str) -> float:
    predicted_words = normalize_answer(prediction).split()
    reference_words = normalize_answer(reference).split()
    if not predicted_words or not reference_words:
        return float(predicted_words == reference_words)  # both empty: a match; one empty: none
    common = sum((Counter(predicted_words) & Counter(reference_words)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted_words), common / len(reference_words)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: list[str], references: list) -> dict[str, float]:
    """The metric's arithmetic, usable without `evaluate`."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    exact = f1 = 0.0
    for prediction, reference in zip(predictions, references, strict=True):
        candidates = [reference] if isinstance(reference, str) else list(reference)
        if not candidates:
            raise ValueError("an example has no reference answer")
        exact += max(exact_match_score(prediction, candidate) for candidate in candidates)
        f1 += max(f1_score(prediction, candidate) for candidate in candidates)
    count = len(predictions)
    return {"exact_match": exact / count if count else 0.0, "f1": f1 / count if count else 0.0}


@add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Squad(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://rajpurkar.github.io/SQuAD-explorer/",
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://arxiv.org/abs/1606.05250"],
        )

    def _compute(self, predictions, references):
        return squad_scores(predictions, references)
