"""Corpus BLEU computed by sacrebleu, as a local `evaluate` metric (load it with `evaluate.load(<this folder>)`).

Self-contained on purpose: `evaluate` copies this one file into its module cache, so it may import only libraries.
"""

from __future__ import annotations

import datasets
import evaluate
import sacrebleu

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    pages = "186--191",
}
"""

_DESCRIPTION = """\
BLEU (Papineni et al., 2002) of a set of predictions against one or more references each, computed by sacrebleu's
`corpus_bleu`, so the score equals sacrebleu's own (0-100 scale).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated strings.
    references: list of reference strings, or a list of lists (several references per prediction; every
        prediction must have the same number).
    tokenize: sacrebleu tokenizer ("13a" default, "none", "zh", "intl", "char", "flores200", ...).
    lowercase: compare lowercased text.
    smooth_method: "exp" (default), "floor", "add-k" or "none".
    smooth_value: the value for "floor" and "add-k".
    use_effective_order: only count n-gram orders that have matches (sensible for sentence-level scores).
Returns:
    bleu: the BLEU score, 0-100.
    precisions: the 1- to 4-gram precisions (0-100).
    brevity_penalty, length_ratio, translation_length, reference_length.
Examples:
    >>> bleu = evaluate.load("llm_recipes/metrics/bleu")
    >>> bleu.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])["bleu"]
    100.00000000000004
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
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
            reference_urls=["https://aclanthology.org/W18-6319"],
        )

    def _compute(
        self,
        predictions,
        references,
        tokenize: str = "13a",
        lowercase: bool = False,
        smooth_method: str = "exp",
        smooth_value: float | None = None,
        use_effective_order: bool = False,
    ):
        streams = reference_streams(references)
        result = sacrebleu.corpus_bleu(
            predictions,
            streams,
            tokenize=tokenize,
            lowercase=lowercase,
            smooth_method=smooth_method,
            smooth_value=smooth_value,
            use_effective_order=use_effective_order,
        )
        return {
            "bleu": result.score,
            "precisions": list(result.precisions),
            "brevity_penalty": result.bp,
            "length_ratio": result.ratio,
            "translation_length": result.sys_len,
            "reference_length": result.ref_len,
        }


def reference_streams(references) -> list[list[str]]:
    """evaluate's per-prediction reference lists -> sacrebleu's per-position streams (one list per reference)."""
    per_prediction = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
    counts = {len(refs) for refs in per_prediction}
    if len(counts) > 1:
        raise ValueError("every prediction needs the same number of references")
    return [list(stream) for stream in zip(*per_prediction, strict=True)]
