"""Task data in: any file or Hub dataset the project reads, with the task's columns checked and its labels resolved,
before any model is loaded.

Columns are named in the config (text/label, tokens/tags, question/context/answers); labels may be names or ids
(an id is checked against the label list, a name must be in it); SQuAD-style answers are checked to sit in their
context at `answer_start` (found by search when a row gives only the text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets import ClassLabel, Dataset, LargeList, List, Sequence

from llm_recipes.data.io import load_dataset_source
from llm_recipes.data.mixture import hold_out
from llm_recipes.errors import UserError
from llm_recipes.tasks.labels import check_label_values, infer_label_names

CLASSIFICATION, TOKEN_CLASSIFICATION, QUESTION_ANSWERING = (
    "classification",
    "token-classification",
    "question-answering",
)
TASKS = (CLASSIFICATION, TOKEN_CLASSIFICATION, QUESTION_ANSWERING)


@dataclass
class TaskData:
    """Raw rows to train and evaluate on, and the label names (None for question answering)."""

    train: Dataset
    eval: Dataset | None
    labels: list[str] | None
    sources: list[str]


def column_values(dataset: Dataset, column: str) -> list[Any]:
    """A column as a plain list (`datasets` 5 returns a lazy Column object)."""
    return dataset[column][:]


def task_columns(args: Any) -> dict[str, str]:
    """The config field -> column name of each column the task reads."""
    if args.task == CLASSIFICATION:
        columns = {"text_column": args.text_column, "label_column": args.label_column}
        if args.text_pair_column:
            columns["text_pair_column"] = args.text_pair_column
        return columns
    if args.task == TOKEN_CLASSIFICATION:
        return {"tokens_column": args.tokens_column, "tags_column": args.tags_column}
    return {
        "question_column": args.question_column,
        "context_column": args.context_column,
        "answers_column": args.answers_column,
    }


def check_columns(dataset: Dataset, args: Any, source: str) -> None:
    for field, column in task_columns(args).items():
        if column not in dataset.column_names:
            raise UserError(
                f"{field}: '{source}' has no column '{column}' (it has {', '.join(dataset.column_names)}); "
                f"set {field} to the right column"
            )


def load_task_data(args: Any, seed: int = 42) -> TaskData:
    """Load, check and split the data of a fine-tuning task; every problem is a UserError naming its field."""

    train = load_dataset_source(args.dataset_path, args.dataset_split, args.dataset_config_name)
    if len(train) == 0:
        raise UserError(f"dataset_path: '{args.dataset_path}' has no rows")
    check_columns(train, args, args.dataset_path)
    sources = [args.dataset_path]
    eval_dataset = None
    if args.eval_dataset_path:
        eval_dataset = load_dataset_source(args.eval_dataset_path, args.eval_dataset_split, args.dataset_config_name)
        check_columns(eval_dataset, args, args.eval_dataset_path)
        sources.append(args.eval_dataset_path)
    elif args.eval_split_size:
        if args.eval_split_size >= 1 and args.eval_split_size >= len(train):
            raise UserError(
                f"eval_split_size: {int(args.eval_split_size)} rows would leave no training data ({len(train)} rows)"
            )
        train, eval_dataset = hold_out(train, args.eval_split_size, seed=seed)
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if eval_dataset is not None and args.max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(args.max_eval_samples, len(eval_dataset))))

    labels = None
    if args.task == QUESTION_ANSWERING:
        for dataset in (train, eval_dataset):
            if dataset is not None:
                check_answers(dataset, args)
    else:
        labels = resolve_labels(args, train, eval_dataset)
    return TaskData(train=train, eval=eval_dataset, labels=labels, sources=sources)


# --------------------------------------------------------------------------------------------------------------
# Labels


def _label_values(dataset: Dataset, column: str, tags: bool) -> list[Any]:
    values = column_values(dataset, column)
    if not tags:
        return values
    flat = []
    for row, sequence in enumerate(values):
        if not isinstance(sequence, (list, tuple)):
            raise UserError(f"tags_column: row {row} of '{column}' is {type(sequence).__name__}, not a list of tags")
        flat.extend(sequence)
    return flat


def _class_label_names(dataset: Dataset, column: str) -> list[str] | None:
    feature = dataset.features.get(column)
    if isinstance(feature, (List, LargeList, Sequence)):
        feature = feature.feature
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def resolve_labels(args: Any, train: Dataset, eval_dataset: Dataset | None) -> list[str]:
    """The label names in id order: `labels` from the config, else from the data; every label value checked."""
    tags = args.task == TOKEN_CLASSIFICATION
    column = args.tags_column if tags else args.label_column
    field = "tags_column" if tags else "label_column"
    train_values = _label_values(train, column, tags)
    eval_values = _label_values(eval_dataset, column, tags) if eval_dataset is not None else []
    if tags:
        _check_tag_lengths(train, args)
        if eval_dataset is not None:
            _check_tag_lengths(eval_dataset, args)
    if any(value is None for value in train_values + eval_values):
        raise UserError(f"{field}: some rows of '{column}' have no label")
    if args.labels:
        names = [str(name) for name in args.labels]
        if len(set(names)) != len(names):
            raise UserError("labels: names must be unique")
        field = "labels"
    else:
        names = infer_label_names(train_values + eval_values, _class_label_names(train, column), field, tags)
    if len(names) < 2 and not tags:
        raise UserError(f"{field}: classification needs at least 2 labels, found {names}")
    check_label_values(train_values, names, field)
    check_label_values(eval_values, names, field)
    return names


def _check_tag_lengths(dataset: Dataset, args: Any) -> None:
    for row, (words, tags) in enumerate(
        zip(column_values(dataset, args.tokens_column), column_values(dataset, args.tags_column), strict=True)
    ):
        if not isinstance(words, (list, tuple)) or not all(isinstance(word, str) for word in words):
            raise UserError(f"tokens_column: row {row} of '{args.tokens_column}' is not a list of words")
        if len(words) != len(tags):
            raise UserError(f"tags_column: row {row} has {len(words)} words but {len(tags)} tags")


# --------------------------------------------------------------------------------------------------------------
# Question answering


def answer_spans(answers: Any, context: str) -> list[tuple[str, int]]:
    """SQuAD-style answers as (text, start) pairs. Accepts {"text": [...], "answer_start": [...]}, the same with
    single values, a bare string or a list of strings; a missing answer_start is the first occurrence."""
    if isinstance(answers, dict):
        texts, starts = answers.get("text"), answers.get("answer_start")
    else:
        texts, starts = answers, None
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    if starts is None:
        starts = [context.find(text) for text in texts]
    starts = [starts] if isinstance(starts, int) else list(starts)
    if len(starts) != len(texts):
        raise ValueError(f"{len(texts)} answer texts but {len(starts)} answer_start values")
    return [(text, int(start)) for text, start in zip(texts, starts, strict=True)]


def check_answers(dataset: Dataset, args: Any) -> None:
    """Every row has a question, a context and at least one answer found at its answer_start in the context."""
    questions = column_values(dataset, args.question_column)
    contexts = column_values(dataset, args.context_column)
    answers_column = column_values(dataset, args.answers_column)
    for row, (question, context, answers) in enumerate(zip(questions, contexts, answers_column, strict=True)):
        if not isinstance(question, str) or not question.strip():
            raise UserError(f"question_column: row {row} has no question")
        if not isinstance(context, str) or not context:
            raise UserError(f"context_column: row {row} has no context")
        try:
            spans = answer_spans(answers, context)
        except (TypeError, ValueError) as err:
            raise UserError(f"answers_column: row {row}: {err} (expected SQuAD's {{text, answer_start}})") from None
        if not spans:
            raise UserError(f"answers_column: row {row} has no answer (unanswerable questions are not supported)")
        for text, start in spans:
            if not text or start < 0 or context[start : start + len(text)] != text:
                where = f"at answer_start {start}" if start >= 0 else "anywhere"
                raise UserError(f"answers_column: row {row}: answer {text!r} is not in the context {where}")
