"""Evaluation data: the texts to score for perplexity, prompts with reference answers for generation, and prompts
without answers (`conversations`: MT-bench `turns`, `prompt` alone, user-only `messages`) for the judges.

Any format the training stages read works (plain text, Alpaca, ShareGPT, messages, prompt/completion), converted to
TRL's standard columns by `llm_recipes.data`: a conversation's last assistant turn is the reference and the turns
before it the prompt, and every row's flattened text is what perplexity scores. Classification data (a text or a
list of words, and a label column) is read as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_recipes.configs import looks_local
from llm_recipes.data.formats import FormatReport, naming_dataset, to_standard_columns
from llm_recipes.data.io import load_dataset_source
from llm_recipes.data.loading import standard_shape
from llm_recipes.data.text import row_text
from llm_recipes.errors import UserError
from llm_recipes.evaluation.conversations import (
    Conversation,
    conversation_text,
    prompt_only_shape,
    read_conversations,
)
from llm_recipes.evaluation.generation import Prompt


@dataclass
class EvalData:
    path: str
    split: str
    texts: list[str]  # scored for perplexity
    prompts: list[Prompt] = field(default_factory=list)  # empty for plain text
    references: list[str] = field(default_factory=list)
    report: FormatReport | None = None  # what reading it in standard columns kept and dropped
    conversations: list[Conversation] = field(default_factory=list)  # prompt-only rows (no references)

    @property
    def name(self) -> str:
        return dataset_display_name(self.path)

    @property
    def has_references(self) -> bool:
        return bool(self.prompts)

    @property
    def prompt_only(self) -> bool:
        return bool(self.conversations)


@dataclass
class ClassificationData:
    path: str
    split: str
    inputs: list[Any]  # texts (sequence classification) or lists of words (token classification)
    labels: list[Any]  # one label per text, or one list of labels per list of words

    @property
    def name(self) -> str:
        return dataset_display_name(self.path)

    @property
    def is_token_level(self) -> bool:
        return bool(self.inputs) and isinstance(self.inputs[0], list)


def dataset_display_name(path: str) -> str:
    """A file's or folder's name without suffixes; a Hub id as it is."""
    if not looks_local(path):
        return path
    name = Path(os.path.expanduser(path.rstrip("/"))).name
    while Path(name).suffix:
        name = Path(name).stem
    return name or path


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "\n".join(turn["content"] for turn in value)


def _prompt_and_reference(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    last = max(i for i, turn in enumerate(messages) if turn["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def load_eval_data(
    path: str,
    *,
    data_format: str = "auto",
    split: str = "train",
    text_field: str = "text",
    max_samples: int | None = None,
) -> EvalData:
    """The first `max_samples` rows of a dataset as texts, and prompts with references where it has answers;
    prompts without answers (MT-bench `turns`, `prompt` alone, user-only `messages`) as `conversations`."""
    raw = load_dataset_source(path, split=split)
    if len(raw) == 0:
        raise UserError(f"dataset '{path}' is empty")
    if data_format in ("auto", "messages"):
        rows = raw.select_columns(["messages"]) if "messages" in raw.column_names else []
        shape = prompt_only_shape(raw.column_names, rows)
        if shape is not None:
            conversations, report = read_conversations(list(raw), shape, path)
            conversations = conversations[:max_samples] if max_samples is not None else conversations
            texts = [conversation_text(conversation) for conversation in conversations]
            return EvalData(path=path, split=split, texts=texts, report=report, conversations=conversations)
    with naming_dataset(path):
        dataset, report = to_standard_columns(raw, data_format, text_field=text_field)
    if len(dataset) == 0:
        raise UserError(f"dataset '{path}': no usable rows after conversion ({report.dropped})")
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    rows = list(dataset)
    data = EvalData(path=path, split=split, texts=[row_text(row) for row in rows], report=report)
    shape = standard_shape(dataset.column_names)
    if shape == "messages":
        for row in rows:
            prompt, reference = _prompt_and_reference(row["messages"])
            data.prompts.append(prompt)
            data.references.append(reference)
    elif shape == "prompt_completion":
        data.prompts = [row["prompt"] for row in rows]
        data.references = [_text(row["completion"]) for row in rows]
    if not any(data.texts):
        raise UserError(f"dataset '{path}': every row's text is empty")
    return data


def load_classification_data(
    path: str,
    *,
    input_field: str = "text",
    label_field: str = "label",
    split: str = "train",
    max_samples: int | None = None,
) -> ClassificationData:
    """Inputs and labels of a classification dataset: a text column (or a column of word lists, for token
    classification) and a label column (ints or label names; lists of them for token classification)."""
    dataset = load_dataset_source(path, split=split)
    if len(dataset) == 0:
        raise UserError(f"dataset '{path}' is empty")
    for what, column in (("input_field", input_field), ("label_field", label_field)):
        if column not in dataset.column_names:
            raise UserError(f"{what}: dataset '{path}' has no column '{column}' (columns: {dataset.column_names})")
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    return ClassificationData(path=path, split=split, inputs=dataset[input_field], labels=dataset[label_field])
