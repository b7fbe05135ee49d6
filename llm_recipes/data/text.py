"""Flattening standard-column datasets to plain text (for tokenizer training and byte counts)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from datasets import Dataset


def row_text(row: dict) -> str:
    if "messages" in row:
        return "\n".join(turn["content"] for turn in row["messages"])
    if "prompt" in row:
        return "\n".join(_flat(row[column]) for column in ("prompt", "completion"))
    return row["text"]


def _flat(value) -> str:
    return value if isinstance(value, str) else "\n".join(turn["content"] for turn in value)


def iter_texts(datasets: Iterable[Dataset]) -> Iterator[str]:
    for dataset in datasets:
        for row in dataset:
            yield row_text(row)
