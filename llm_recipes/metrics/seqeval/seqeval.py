"""Entity-level precision, recall and F1 of tag sequences, as a local `evaluate` metric
(`evaluate.load(<this folder>)`), for named-entity recognition and other span tagging.

Written here rather than wrapping the `seqeval` package: span extraction is a few dozen lines, owning it spares the
project a dependency, and it makes the decoding rules explicit. They are conlleval's (and seqeval's default mode):

- an entity is a (type, first word, last word) span; a predicted entity counts only when a reference entity has
  the same type and exactly the same boundaries (a partial overlap is one false positive and one false negative);
- BIO/IOB2: B-X starts an entity; I-X continues an entity of type X and otherwise starts one; O ends it;
- IOBES (BILOU is the same with L for E and U for S): B-X starts; I-X continues (or starts); E-X ends an entity of
  type X (or is a one-word entity of its own); S-X is a one-word entity;
- a tag without a prefix ("PER") is read as I-PER, so plain IO tagging works too.

Self-contained on purpose: `evaluate` copies this one file into its module cache, so it may import only libraries.
"""

from __future__ import annotations

from collections import Counter

import datasets
import evaluate
from evaluate.utils.file_utils import add_start_docstrings

_DESCRIPTION = """\
Entity-level scores of predicted tag sequences against reference ones: precision (share of predicted entities that
are right), recall (share of reference entities found) and F1, overall (micro-averaged over entities) and per
entity type, plus the word-level accuracy of the tags. An entity is right only with the same type and exactly the
same boundaries. Scores are 0-1.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of tag sequences, e.g. [["B-PER", "I-PER", "O"]].
    references: list of reference tag sequences, each as long as its prediction.
    scheme: "IOB2" (also "BIO"), "IOBES", "BILOU", or "auto" (IOBES when an E-/S-/L-/U- tag occurs, else IOB2).
Returns:
    overall_precision, overall_recall, overall_f1, overall_accuracy: floats, 0-1.
    <TYPE>: for each entity type, {"precision", "recall", "f1", "number" (reference entities of that type)}.
Examples:
    >>> seqeval = evaluate.load("llm_recipes/metrics/seqeval")
    >>> seqeval.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])["overall_f1"]
    1.0
"""

SCHEMES = ("auto", "IOB2", "BIO", "IOBES", "BILOU")
OUTSIDE = "O"


def split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") from "B-PER"; ("O", "") from "O"; a bare type ("PER") reads as inside ("I", "PER")."""
    if tag == OUTSIDE or not tag:
        return OUTSIDE, ""
    prefix, dash, entity_type = tag.partition("-")
    if dash and prefix in ("B", "I", "E", "S", "L", "U"):
        return {"L": "E", "U": "S"}.get(prefix, prefix), entity_type
    return "I", tag


def detect_scheme(sequences: list[list[str]]) -> str:
    for sequence in sequences:
        for tag in sequence:
            if split_tag(tag)[0] in ("E", "S"):
                return "IOBES"
    return "IOB2"


def extract_entities(tags: list[str], scheme: str = "IOB2") -> list[tuple[str, int, int]]:
    """The entities of one tag sequence as (type, first index, last index), in order."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    if scheme == "auto":
        scheme = detect_scheme([tags])
    ends_explicitly = scheme in ("IOBES", "BILOU")
    entities: list[tuple[str, int, int]] = []
    current: list | None = None  # [type, start, end] of the entity being read

    def close() -> None:
        nonlocal current
        if current is not None:
            entities.append((current[0], current[1], current[2]))
            current = None

    for index, tag in enumerate(tags):
        prefix, entity_type = split_tag(tag)
        if not ends_explicitly and prefix in ("E", "S"):
            prefix = "I" if prefix == "E" else "B"  # an IOB2 reading of stray IOBES tags
        continues = current is not None and current[0] == entity_type
        if prefix == OUTSIDE:
            close()
        elif prefix == "B" or (prefix == "I" and not continues):
            close()
            current = [entity_type, index, index]
        elif prefix == "I":
            current[2] = index
        elif prefix == "E":
            if continues:
                current[2] = index
            else:
                close()
                current = [entity_type, index, index]
            close()
        else:  # S
            close()
            entities.append((entity_type, index, index))
    close()
    return entities


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _scores(correct: int, predicted: int, actual: int) -> tuple[float, float, float]:
    precision, recall = _ratio(correct, predicted), _ratio(correct, actual)
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def entity_scores(predictions: list[list[str]], references: list[list[str]], scheme: str = "auto") -> dict[str, object]:
    """The metric's arithmetic, usable without `evaluate`."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predicted sequences but {len(references)} references")
    if scheme == "auto":
        scheme = detect_scheme(list(references) + list(predictions))
    correct: Counter = Counter()
    predicted: Counter = Counter()
    actual: Counter = Counter()
    right_tags = total_tags = 0
    for prediction, reference in zip(predictions, references, strict=True):
        if len(prediction) != len(reference):
            raise ValueError(f"a sequence has {len(prediction)} predicted tags but {len(reference)} reference tags")
        predicted_entities = set(extract_entities(list(prediction), scheme))
        reference_entities = set(extract_entities(list(reference), scheme))
        predicted.update(entity[0] for entity in predicted_entities)
        actual.update(entity[0] for entity in reference_entities)
        correct.update(entity[0] for entity in predicted_entities & reference_entities)
        right_tags += sum(p == r for p, r in zip(prediction, reference, strict=True))
        total_tags += len(reference)
    precision, recall, f1 = _scores(sum(correct.values()), sum(predicted.values()), sum(actual.values()))
    results: dict[str, object] = {}
    for entity_type in sorted(set(predicted) | set(actual)):
        type_precision, type_recall, type_f1 = _scores(
            correct[entity_type], predicted[entity_type], actual[entity_type]
        )
        results[entity_type] = {
            "precision": type_precision,
            "recall": type_recall,
            "f1": type_f1,
            "number": actual[entity_type],
        }
    results.update(
        overall_precision=precision,
        overall_recall=recall,
        overall_f1=f1,
        overall_accuracy=_ratio(right_tags, total_tags),
    )
    return results


@add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Seqeval(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=["https://www.clips.uantwerpen.be/conll2000/chunking/output.html"],
        )

    def _compute(self, predictions, references, scheme: str = "auto"):
        return entity_scores(predictions, references, scheme)
