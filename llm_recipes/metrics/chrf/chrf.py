"""chrF and chrF++ computed by sacrebleu, as a local `evaluate` metric (load it with `evaluate.load(<this folder>)`).

Self-contained on purpose: `evaluate` copies this one file into its module cache, so it may import only libraries.
"""

from __future__ import annotations

import datasets
import evaluate
import sacrebleu

_CITATION = """\
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovi{\'c}, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
    pages = "392--395",
}
"""

_DESCRIPTION = """\
chrF (Popovic, 2015): an F-score over character n-grams (and word n-grams for chrF++, `word_order=2`), computed by
sacrebleu's `corpus_chrf`, so the score equals sacrebleu's own (0-100 scale). Kinder than BLEU to short outputs
and to languages with rich morphology.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated strings.
    references: list of reference strings, or a list of lists (the same number of references per prediction).
    char_order: character n-gram order (6).
    word_order: word n-gram order (0 = chrF, 2 = chrF++).
    beta: weight of recall over precision (2).
    lowercase: compare lowercased text.
    whitespace: include whitespace in character n-grams.
Returns:
    chrf: the score, 0-100.
Examples:
    >>> chrf = evaluate.load("llm_recipes/metrics/chrf")
    >>> chrf.compute(predictions=["the cat"], references=["the cat"])["chrf"]
    100.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Chrf(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://github.com/mjpost/sacrebleu",
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://aclanthology.org/W15-3049"],
        )

    def _compute(
        self,
        predictions,
        references,
        char_order: int = 6,
        word_order: int = 0,
        beta: int = 2,
        lowercase: bool = False,
        whitespace: bool = False,
    ):
        per_prediction = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
        if len({len(refs) for refs in per_prediction}) > 1:
            raise ValueError("every prediction needs the same number of references")
        streams = [list(stream) for stream in zip(*per_prediction, strict=True)]
        scorer = sacrebleu.metrics.CHRF(
            char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase, whitespace=whitespace
        )
        result = scorer.corpus_score(predictions, streams)
        return {"chrf": result.score, "char_order": char_order, "word_order": word_order, "beta": beta}
