"""ROUGE-1/2/L/Lsum computed by Google's rouge-score, as a local `evaluate` metric (`evaluate.load(<this folder>)`).

The score of each type is the mean F-measure over the examples (with several references, an example takes its best
reference), exactly what calling `rouge_scorer.RougeScorer.score` per example and averaging gives. Hugging Face's
Hub metric reports a bootstrap-resampled mid value instead, which varies slightly from run to run.

Self-contained on purpose: `evaluate` copies this one file into its module cache, so it may import only libraries.
"""

from __future__ import annotations

import datasets
import evaluate
from rouge_score import rouge_scorer

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    pages = "74--81",
}
"""

_DESCRIPTION = """\
ROUGE (Lin, 2004): n-gram (ROUGE-1, ROUGE-2) and longest-common-subsequence (ROUGE-L; ROUGE-Lsum splits on
newlines first) overlap between predictions and references, as F-measures on a 0-1 scale. rouge-score's default
tokenizer lowercases and keeps only ASCII letters and digits: use it for English.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated strings.
    references: list of reference strings, or a list of lists (the best-scoring reference counts).
    rouge_types: which of rouge1, rouge2, rougeL, rougeLsum (default all four).
    use_stemmer: Porter-stem words before matching.
    use_aggregator: true: the mean over examples; false: one score per example.
Returns:
    rouge1, rouge2, rougeL, rougeLsum: mean F-measures, 0-1 (or lists of per-example values).
Examples:
    >>> rouge = evaluate.load("llm_recipes/metrics/rouge")
    >>> rouge.compute(predictions=["the cat sat"], references=["the cat sat"])["rougeL"]
    1.0
"""

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://github.com/google-research/google-research/tree/master/rouge",
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://aclanthology.org/W04-1013"],
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer: bool = False, use_aggregator=True):
        rouge_types = list(rouge_types or ROUGE_TYPES)
        unknown = [name for name in rouge_types if name not in ROUGE_TYPES]
        if unknown:
            raise ValueError(f"unknown rouge_types {unknown}; choose from {list(ROUGE_TYPES)}")
        scorer = rouge_scorer.RougeScorer(rouge_types, use_stemmer=use_stemmer)
        per_example = {name: [] for name in rouge_types}
        for prediction, reference in zip(predictions, references, strict=True):
            if isinstance(reference, str):
                scores = scorer.score(reference, prediction)
            else:
                scores = scorer.score_multi(list(reference), prediction)
            for name in rouge_types:
                per_example[name].append(scores[name].fmeasure)
        if not use_aggregator:
            return per_example
        return {name: sum(values) / len(values) if values else 0.0 for name, values in per_example.items()}
