"""Extractive question answering: question + context -> model features (a long context in overlapping windows),
answers as token spans to train on, and the best answer span back from the model's start/end logits -- plus a
`transformers` pipeline that does the same for users.

transformers 5 removed its `question-answering` pipeline (it points to chat models instead), but an extractive
model still needs its windowing and span search at inference. So the same code that post-processes our evaluation
is shipped beside every QA model this project trains: the fine-tuning stage copies this file into the model folder
and records it in `config.custom_pipelines`, and then either of these works:

    pipeline("question-answering", model=folder, trust_remote_code=True)          # anywhere, code from the folder
    pipeline("question-answering", model=folder, pipeline_class=ExtractiveQuestionAnsweringPipeline)  # ours

Self-contained on purpose: as a model folder's custom code it may import only libraries (numpy, torch,
transformers), never the rest of llm_recipes.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.pipelines.base import ChunkPipeline

PIPELINE_TASK = "question-answering"
PIPELINE_CLASS = "ExtractiveQuestionAnsweringPipeline"
Offsets = list  # per token: (start_char, end_char) in the context, or None for question, special and padding tokens


def question_first(tokenizer: Any) -> bool:
    """Question then context, unless the tokenizer pads on the left (XLNet-style models read context first)."""
    return getattr(tokenizer, "padding_side", "right") != "left"


def encode_features(
    tokenizer: Any,
    questions: Sequence[str],
    contexts: Sequence[str],
    max_length: int,
    doc_stride: int,
    padding: bool | str = False,
) -> Any:
    """Tokenize question/context pairs into features of at most `max_length` tokens; a context that does not fit
    is split into windows that overlap by `doc_stride` tokens. Needs a fast tokenizer.

    Returns the tokenizer's encoding, with `overflow_to_sample_mapping` (the pair each feature came from) and
    `offset_mapping` rewritten so that only context tokens keep their character span (others are None).
    """
    questions = [question.lstrip() for question in questions]  # leading spaces only waste the window
    first, second = (questions, contexts) if question_first(tokenizer) else (contexts, questions)
    encoding = tokenizer(
        list(first),
        list(second),
        truncation="only_second" if question_first(tokenizer) else "only_first",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=padding,
    )
    context_sequence = 1 if question_first(tokenizer) else 0
    offsets = []
    for index, feature_offsets in enumerate(encoding["offset_mapping"]):
        sequence_ids = encoding.sequence_ids(index)
        offsets.append(
            [
                (int(span[0]), int(span[1])) if sequence_ids[position] == context_sequence else None
                for position, span in enumerate(feature_offsets)
            ]
        )
    encoding["offset_mapping"] = offsets
    return encoding


def no_answer_index(input_ids: Sequence[int], tokenizer: Any) -> int:
    """Where a feature without the answer points both labels: the CLS token (BERT's convention), else position 0."""
    cls_id = getattr(tokenizer, "cls_token_id", None)
    if cls_id is not None and cls_id in input_ids:
        return list(input_ids).index(cls_id)
    return 0


def answer_token_span(offsets: Offsets, start_char: int, end_char: int, fallback: int = 0) -> tuple[int, int]:
    """The (first, last) token of the answer `[start_char, end_char)` in one feature, or (fallback, fallback) when
    the answer is not wholly inside this feature's window of the context."""
    positions = [i for i, span in enumerate(offsets) if span is not None and span[1] > span[0]]
    if not positions or start_char < offsets[positions[0]][0] or end_char > offsets[positions[-1]][1]:
        return fallback, fallback
    first = next(i for i in positions if offsets[i][1] > start_char)
    last = [i for i in positions if offsets[i][0] < end_char][-1]
    return first, last


def _log_softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - values.max()
    return shifted - np.log(np.exp(shifted).sum())


def best_answers(
    start_logits: Sequence[Sequence[float]],
    end_logits: Sequence[Sequence[float]],
    offsets: Sequence[Offsets],
    context: str,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    top_k: int = 1,
) -> list[dict[str, Any]]:
    """The `top_k` best answer spans of one example over all its features, best first.

    Candidates are the `n_best_size` highest start and end logits among each feature's context tokens; a span must
    end after it starts and be at most `max_answer_length` tokens. Spans rank by start + end logit (as in
    transformers' run_qa); `score` is the span's probability within its window. Logits may be padded past a
    feature's length (Trainer pads with -100): only positions with offsets are read. Each answer is
    {"answer", "start", "end", "score"}, with the answer's surrounding whitespace trimmed; no valid span gives
    [{"answer": "", "start": 0, "end": 0, "score": 0.0}].
    """
    candidates: dict[tuple[int, int], tuple[float, float]] = {}
    for feature_starts, feature_ends, feature_offsets in zip(start_logits, end_logits, offsets, strict=True):
        context_positions = [i for i, span in enumerate(feature_offsets) if span is not None]
        if not context_positions:
            continue
        starts = np.asarray(feature_starts, dtype=np.float64)[: len(feature_offsets)]
        ends = np.asarray(feature_ends, dtype=np.float64)[: len(feature_offsets)]
        start_log_probs = np.full(len(starts), -np.inf)
        end_log_probs = np.full(len(ends), -np.inf)
        start_log_probs[context_positions] = _log_softmax(starts[context_positions])
        end_log_probs[context_positions] = _log_softmax(ends[context_positions])
        # the candidates are the best context positions (a question token can never start or end an answer)
        positions = np.asarray(context_positions)
        best_starts = positions[np.argsort(starts[positions])[::-1][:n_best_size]]
        best_ends = positions[np.argsort(ends[positions])[::-1][:n_best_size]]
        for start in best_starts:
            for end in best_ends:
                start_span, end_span = feature_offsets[start], feature_offsets[end]
                if start_span is None or end_span is None or end < start or end - start + 1 > max_answer_length:
                    continue
                chars = (start_span[0], end_span[1])
                rank = float(starts[start] + ends[end])
                probability = float(np.exp(start_log_probs[start] + end_log_probs[end]))
                if chars not in candidates or candidates[chars][0] < rank:  # overlapping windows see a span twice
                    candidates[chars] = (rank, probability)
    ranked = sorted(candidates.items(), key=lambda item: item[1][0], reverse=True)
    answers = []
    for (start_char, end_char), (_, probability) in ranked:
        text = context[start_char:end_char]
        trimmed_start = start_char + len(text) - len(text.lstrip())
        answer = text.strip()
        if not answer:
            continue
        answers.append(
            {"answer": answer, "start": trimmed_start, "end": trimmed_start + len(answer), "score": probability}
        )
        if len(answers) == top_k:
            break
    return answers or [{"answer": "", "start": 0, "end": 0, "score": 0.0}]


class ExtractiveQuestionAnsweringPipeline(ChunkPipeline):
    """`pipeline("question-answering", ...)` for extractive models (`AutoModelForQuestionAnswering`).

        qa(question="What colour is the cup?", context="The cup is blue.")
        -> {"answer": "blue", "start": 11, "end": 15, "score": 0.93}

    Also takes `{"question": ..., "context": ...}` dicts or lists of them. Options: `top_k` (answers per question;
    above 1 a list), `max_answer_length`, `n_best_size`, `max_length`, `doc_stride` -- defaults from the model's
    `config.task_specific_params["question-answering"]` (written by the fine-tuning stage), else 384/128/30/20.
    """

    DEFAULTS = {"max_length": 384, "doc_stride": 128, "max_answer_length": 30, "n_best_size": 20}

    def _sanitize_parameters(
        self, top_k=None, max_answer_length=None, n_best_size=None, max_length=None, doc_stride=None
    ):
        saved = (getattr(self.model.config, "task_specific_params", None) or {}).get(PIPELINE_TASK, {})
        settings = {**self.DEFAULTS, **{key: saved[key] for key in self.DEFAULTS if key in saved}}
        given = dict(
            max_answer_length=max_answer_length, n_best_size=n_best_size, max_length=max_length, doc_stride=doc_stride
        )
        settings.update({key: value for key, value in given.items() if value is not None})
        preprocess = {"max_length": settings["max_length"], "doc_stride": settings["doc_stride"]}
        postprocess = {
            "top_k": top_k or 1,
            "max_answer_length": settings["max_answer_length"],
            "n_best_size": settings["n_best_size"],
        }
        return preprocess, {}, postprocess

    def __call__(self, *args: Any, question: Any = None, context: Any = None, **kwargs: Any) -> Any:
        if question is not None or context is not None:
            if isinstance(question, str) and isinstance(context, str):
                return super().__call__({"question": question, "context": context}, **kwargs)
            if isinstance(question, (list, tuple)) and isinstance(context, (list, tuple)):
                pairs = [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
                return super().__call__(pairs, **kwargs)
            raise ValueError("give question and context as two strings or two lists of the same length")
        return super().__call__(*args, **kwargs)

    def preprocess(self, example: dict[str, str], max_length: int = 384, doc_stride: int = 128):
        if not isinstance(example, dict) or "question" not in example or "context" not in example:
            raise ValueError("each input needs a 'question' and a 'context'")
        encoding = encode_features(self.tokenizer, [example["question"]], [example["context"]], max_length, doc_stride)
        accepted = set(inspect.signature(self.model.forward).parameters)
        names = [
            name for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoding and name in accepted
        ]
        count = len(encoding["input_ids"])
        for index in range(count):
            features = {name: torch.tensor([encoding[name][index]]) for name in names}
            yield {
                **features,
                "offsets": encoding["offset_mapping"][index],
                "context": example["context"],
                "is_last": index == count - 1,
            }

    def _forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        passed = {key: inputs.pop(key) for key in ("offsets", "context", "is_last")}
        outputs = self.model(**inputs)
        return {"start_logits": outputs.start_logits, "end_logits": outputs.end_logits, **passed}

    def postprocess(
        self, outputs: list[dict[str, Any]], top_k: int = 1, max_answer_length: int = 30, n_best_size: int = 20
    ):
        answers = best_answers(
            [output["start_logits"][0].float().numpy() for output in outputs],
            [output["end_logits"][0].float().numpy() for output in outputs],
            [output["offsets"] for output in outputs],
            outputs[0]["context"],
            n_best_size=n_best_size,
            max_answer_length=max_answer_length,
            top_k=top_k,
        )
        return answers[0] if top_k == 1 else answers
