"""Exact match between predictions and references, as a local `evaluate` metric (`evaluate.load(<this folder>)`).

Self-contained on purpose: `evaluate` copies this one file into its module cache, so it may import only libraries.
"""

from __future__ import annotations

import re
import string

import datasets
import evaluate

_DESCRIPTION = """\
The share of predictions that equal their reference (0-1), after optional normalisation: surrounding whitespace
is always stripped; case, punctuation, runs of whitespace and regular expressions can also be ignored. With several
references, a prediction matching any of them counts.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated strings.
    references: list of reference strings, or a list of lists (a match with any reference counts).
    ignore_case: compare lowercased text.
    ignore_punctuation: drop ASCII punctuation before comparing.
    ignore_whitespace: collapse runs of whitespace to one space.
    regexes_to_ignore: regular expressions whose matches are removed before comparing.
Returns:
    exact_match: the share of exact matches, 0-1.
Examples:
    >>> em = evaluate.load("llm_recipes/metrics/exact_match")
    >>> em.compute(predictions=["Paris.", "rome"], references=["paris", "Rome"], ignore_case=True,
    ...            ignore_punctuation=True)["exact_match"]
    1.0
"""

_PUNCTUATION = str.maketrans("", "", string.punctuation)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(
        self,
        predictions,
        references,
        ignore_case: bool = False,
        ignore_punctuation: bool = False,
        ignore_whitespace: bool = False,
        regexes_to_ignore=None,
    ):
        def normalize(text: str) -> str:
            for pattern in regexes_to_ignore or []:
                text = re.sub(pattern, "", text)
            if ignore_case:
                text = text.lower()
            if ignore_punctuation:
                text = text.translate(_PUNCTUATION)
            if ignore_whitespace:
                text = " ".join(text.split())
            return text.strip()

        matches = []
        for prediction, reference in zip(predictions, references, strict=True):
            candidates = [reference] if isinstance(reference, str) else list(reference)
            matches.append(any(normalize(prediction) == normalize(ref) for ref in candidates))
        return {"exact_match": sum(matches) / len(matches) if matches else 0.0}
