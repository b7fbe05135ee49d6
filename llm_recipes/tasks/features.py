"""Rows -> model features for each task: text (pairs) with label ids; words with tags aligned to sub-word tokens;
question/context windows with answer token positions.

Word tags are aligned through character offsets of the words joined by spaces, not the tokenizer's
`is_split_into_words` mode: byte-level BPE tokenizers (GPT-2/RoBERTa style, and ours) tokenize a pre-split word
without its leading space, i.e. differently from the running text the token-classification pipeline sees at
inference. Joining the words and mapping tokens back by offsets gives the same tokens in training and use, for
every fast tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from llm_recipes.errors import UserError
from llm_recipes.tasks.data import CLASSIFICATION, TOKEN_CLASSIFICATION, answer_spans, column_values
from llm_recipes.tasks.labels import continuation_ids, label_to_id, to_label_id
from llm_recipes.tasks.qa import answer_token_span, encode_features, no_answer_index

IGNORE_INDEX = -100  # transformers' label for positions the loss skips


def require_fast_tokenizer(tokenizer: Any, task: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"task {task} needs a fast tokenizer (it maps tokens back to characters); this one is not")


# --------------------------------------------------------------------------------------------------------------
# Sequence classification


def classification_features(
    dataset: Dataset, tokenizer: Any, args: Any, labels: Sequence[str], max_length: int
) -> Dataset:
    """input_ids (+ attention mask, token types) of each text or text pair, and its label id as `labels`."""
    lookup = label_to_id(labels)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch[args.text_pair_column] if args.text_pair_column else None
        encoding = tokenizer(batch[args.text_column], pairs, truncation=True, max_length=max_length)
        encoding["labels"] = [to_label_id(value, labels, lookup, "label_column") for value in batch[args.label_column]]
        return dict(encoding)

    _check_texts(dataset, [args.text_column] + ([args.text_pair_column] if args.text_pair_column else []))
    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing")


def _check_texts(dataset: Dataset, columns: list[str]) -> None:
    for column in columns:
        for row, text in enumerate(column_values(dataset, column)):
            if not isinstance(text, str):
                raise UserError(f"text_column: row {row} of '{column}' is {type(text).__name__}, not text")


# --------------------------------------------------------------------------------------------------------------
# Token classification


def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """The words as one space-separated text, and each word's character span in it."""
    spans, position = [], 0
    for word in words:
        spans.append((position, position + len(word)))
        position += len(word) + 1
    return " ".join(words), spans


def token_word_ids(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int | None]:
    """For each token, the index of the word its characters overlap or run into (None for special tokens)."""
    word_ids: list[int | None] = []
    word = 0
    for start, end in offsets:
        if end <= start:
            word_ids.append(None)
            continue
        while word < len(spans) and spans[word][1] <= start:
            word += 1
        # a byte-level BPE token may hold the space before its word, or be that space alone: either way it belongs
        # to the word it reaches (the words are joined by single spaces, so nothing else lies between them)
        word_ids.append(word if word < len(spans) and spans[word][0] <= end else None)
    return word_ids


def align_labels(
    word_ids: Sequence[int | None], word_labels: Sequence[int], label_all_tokens: bool, continuation: Sequence[int]
) -> list[int]:
    """One label per token: a word's first token gets the word's label; its other tokens get -100 (ignored), or
    with `label_all_tokens` the continuation label (B-X -> I-X); special tokens get -100."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE_INDEX)
        elif word != previous:
            labels.append(word_labels[word])
        else:
            labels.append(continuation[word_labels[word]] if label_all_tokens else IGNORE_INDEX)
        previous = word
    return labels


def token_classification_features(
    dataset: Dataset, tokenizer: Any, args: Any, labels: Sequence[str], max_length: int, label_all_tokens: bool
) -> Dataset:
    """Tokens of the joined words with aligned tag ids as `labels`. Evaluation data should use
    `label_all_tokens=False`, so scores count each word once."""
    require_fast_tokenizer(tokenizer, "token-classification")
    lookup = label_to_id(labels)
    continuation = continuation_ids(labels)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts, spans = zip(*(join_words(words) for words in batch[args.tokens_column]), strict=True)
        encoding = tokenizer(list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True)
        aligned = []
        for offsets, word_spans, tags in zip(
            encoding.pop("offset_mapping"), spans, batch[args.tags_column], strict=True
        ):
            tag_ids = [to_label_id(tag, labels, lookup, "tags_column") for tag in tags]
            aligned.append(align_labels(token_word_ids(offsets, word_spans), tag_ids, label_all_tokens, continuation))
        encoding["labels"] = aligned
        return dict(encoding)

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing")


# --------------------------------------------------------------------------------------------------------------
# Extractive question answering


@dataclass
class QAFeatures:
    """Model features (input ids, start/end positions) and, for post-processing, what each feature came from."""

    features: Dataset  # what the model sees
    example_index: list[int]  # feature -> row of the examples
    offsets: list[list]  # feature -> per token (start, end) in the context, or None outside it


def qa_features(dataset: Dataset, tokenizer: Any, args: Any, max_length: int) -> QAFeatures:
    """Question/context windows (`doc_stride` tokens of overlap), with the first answer's token span as
    start/end positions; a window that does not hold the whole answer points both at the no-answer index."""

    require_fast_tokenizer(tokenizer, "question-answering")
    check_window_room(dataset, tokenizer, args, max_length)

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        contexts = batch[args.context_column]
        encoding = encode_features(tokenizer, batch[args.question_column], contexts, max_length, args.doc_stride)
        sample_map = encoding.pop("overflow_to_sample_mapping")
        starts, ends = [], []
        for feature, sample in enumerate(sample_map):
            text, start_char = answer_spans(batch[args.answers_column][sample], contexts[sample])[0]
            fallback = no_answer_index(encoding["input_ids"][feature], tokenizer)
            start, end = answer_token_span(
                encoding["offset_mapping"][feature], start_char, start_char + len(text), fallback
            )
            starts.append(start)
            ends.append(end)
        encoding["start_positions"], encoding["end_positions"] = starts, ends
        encoding["example_index"] = [indices[sample] for sample in sample_map]
        return dict(encoding)

    mapped = dataset.map(
        encode, batched=True, with_indices=True, remove_columns=dataset.column_names, desc="tokenizing"
    )
    return QAFeatures(
        features=mapped.remove_columns(["offset_mapping", "example_index"]),
        example_index=column_values(mapped, "example_index"),
        offsets=column_values(mapped, "offset_mapping"),
    )


def check_window_room(dataset: Dataset, tokenizer: Any, args: Any, max_length: int) -> None:
    """The longest question plus its special tokens must leave more than `doc_stride` tokens of context in a
    window; otherwise the tokenizer cannot slide the window (it fails deep inside with a cryptic message)."""
    questions = [question.lstrip() for question in column_values(dataset, args.question_column)]
    if not questions:
        return
    longest = max(len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"])
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    room = max_length - longest - specials
    if room <= args.doc_stride:
        raise UserError(
            f"doc_stride: {args.doc_stride} leaves no room to slide the context window: max_length {max_length} minus "
            f"the longest question ({longest} tokens) and {specials} special tokens is {room}; "
            "lower doc_stride or raise max_length"
        )


# --------------------------------------------------------------------------------------------------------------
# All of a task's features


@dataclass
class TaskFeatures:
    train: Dataset
    eval: Dataset | None
    qa_eval: QAFeatures | None = None  # question answering: what post-processing needs about the eval features


def task_features(args: Any, data: Any, tokenizer: Any, max_length: int) -> TaskFeatures:
    """Training and evaluation features of `data` (a TaskData) for the configured task."""

    if args.task == CLASSIFICATION:

        def encode(dataset: Dataset) -> Dataset:
            return classification_features(dataset, tokenizer, args, data.labels, max_length)

        return TaskFeatures(encode(data.train), encode(data.eval) if data.eval is not None else None)
    if args.task == TOKEN_CLASSIFICATION:
        train = token_classification_features(
            data.train, tokenizer, args, data.labels, max_length, args.label_all_tokens
        )
        evaluation = None
        if data.eval is not None:  # one label per word, whatever label_all_tokens says: scores count words
            evaluation = token_classification_features(data.eval, tokenizer, args, data.labels, max_length, False)
        return TaskFeatures(train, evaluation)
    train = qa_features(data.train, tokenizer, args, max_length).features
    qa_eval = qa_features(data.eval, tokenizer, args, max_length) if data.eval is not None else None
    return TaskFeatures(train, qa_eval.features if qa_eval is not None else None, qa_eval)


def trained_label_ids(features: Dataset) -> list[int]:
    """Every label id the loss sees in the training features (for class weights)."""
    labels = column_values(features, "labels")
    flat = [label for row in labels for label in row] if labels and isinstance(labels[0], list) else labels
    return [label for label in flat if label != IGNORE_INDEX]
