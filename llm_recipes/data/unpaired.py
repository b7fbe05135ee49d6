"""Unpaired preference data (thumbs up / thumbs down, what KTO learns from) in TRL's ``prompt`` / ``completion`` /
``label`` columns.

One answer per row, with ``label`` true for a good answer and false for a bad one. The shapes accepted:

* ``prompt`` / ``completion`` / ``label``: TRL's own unpaired shape; strings or message lists (a string beside a
  message list becomes a user or assistant turn);
* ``messages`` / ``label`` (OpenAI turns, as LLaMA-Factory's ``kto_en_demo.json``) or ``conversations`` / ``label``
  (ShareGPT turns, optional ``system``): the last turn is the rated answer and must be the assistant's; the turns
  before it are the prompt;
* preference pairs in any shape ``preferences.py`` reads (prompt/chosen/rejected, implicit prompt, ShareGPT,
  HH-RLHF): each pair becomes two rows, its chosen answer labelled true and its rejected one false.

The columns tell the two kinds apart (a ``label`` column means unpaired rows, ``chosen``/``rejected`` means pairs),
so ``auto`` needs no switch for pairs. TRL's KTOTrainer could unpair pairs itself, but not ShareGPT or HH-RLHF ones,
and its sampler reads rows in order (the KL term pairs each prompt with its batch neighbour's answer), so the rows
are shuffled here, once and seeded: a file sorted by label, or pairs split next to each other, would otherwise give
batches of one label and KL estimates from an answer to the same prompt. Rows that cannot be used are dropped and
counted by reason, as in ``formats.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import datasets
from datasets import Dataset

from llm_recipes.data.formats import (
    _DROP,
    _MESSAGES_FEATURE,
    DatasetFormatError,
    FormatReport,
    _as_text,
    _Drop,
    _keep_batch,
    _turns,
)
from llm_recipes.data.preferences import PairData, _as_messages, _is_messages, _load_split, to_preference_columns
from llm_recipes.errors import UserError
from llm_recipes.rl.config import KTO_FORMATS

__all__ = [
    "KTO_FORMATS",
    "check_both_labels",
    "detect_unpaired_shape",
    "load_unpaired_data",
    "to_unpaired_columns",
    "unpair",
]

# Unpaired shapes, in detection order: the columns each needs beside `label`
_UNPAIRED_SHAPES: dict[str, tuple[str, ...]] = {
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
    "conversations": ("conversations",),
}


def detect_unpaired_shape(columns: Sequence[str]) -> str:
    """`pairs`, or which unpaired shape a dataset has, from its columns. Raises DatasetFormatError saying what is
    missing (a `label` column, above all)."""
    present = set(columns)
    if "label" in present:
        for shape, required in _UNPAIRED_SHAPES.items():
            if present.issuperset(required):
                return shape
        raise DatasetFormatError(
            f"dataset has columns {list(columns)}: a 'label' but no answer to go with it; expected "
            "prompt/completion/label or messages/label (conversations/label for ShareGPT turns)"
        )
    if {"chosen", "rejected"} <= present:
        return "pairs"
    raise DatasetFormatError(
        f"dataset has columns {list(columns)}, but KTO data needs a 'label' column (true: a good answer, false: a bad "
        "one) beside prompt/completion or messages -- or preference pairs (chosen/rejected), split into labelled rows"
    )


def to_unpaired_columns(
    ds: Dataset, data_format: str = "auto", num_proc: int | None = None
) -> tuple[Dataset, FormatReport]:
    """Convert ``ds`` to ``prompt`` / ``completion`` / ``label``; every other column is dropped. For pairs, the
    report counts pairs (each kept pair is two rows); otherwise rows."""
    if data_format not in KTO_FORMATS:
        raise DatasetFormatError(f"unknown KTO data_format {data_format!r}; expected one of: {', '.join(KTO_FORMATS)}")
    if len(ds) == 0:
        raise DatasetFormatError("the dataset has no rows")
    shape = _source_shape(ds.column_names, data_format)
    if shape == "pairs":
        pairs, report = _to_pairs(ds, data_format, num_proc)
        return unpair(pairs, num_proc), report

    first = ds[0]
    conversational = shape != "prompt_completion" or any(_is_messages(first.get(c)) for c in ("prompt", "completion"))
    text_feature = _MESSAGES_FEATURE if conversational else datasets.Value("string")
    features = datasets.Features(
        {
            "prompt": text_feature,
            "completion": text_feature,
            "label": datasets.Value("bool"),
            _DROP: datasets.Value("string"),
        }
    )
    converted = ds.map(
        _convert_batch,
        batched=True,
        fn_kwargs={"shape": shape, "conversational": conversational},
        remove_columns=ds.column_names,
        features=features,
        num_proc=num_proc,
        desc=f"Converting {shape}/label rows to prompt/completion/label",
    )
    dropped = {reason: n for reason, n in Counter(converted[_DROP]).items() if reason is not None}
    if dropped:
        converted = converted.filter(
            _keep_batch, batched=True, input_columns=[_DROP], num_proc=num_proc, desc="Dropping unusable rows"
        )
    converted = converted.remove_columns(_DROP)
    report = FormatReport(
        source_format=f"{shape}/label",
        rows_in=ds.num_rows,
        rows_out=converted.num_rows,
        dropped=dict(sorted(dropped.items(), key=lambda item: (-item[1], item[0]))),
    )
    return converted, report


def _source_shape(columns: Sequence[str], data_format: str) -> str:
    if data_format not in ("auto", "unpaired"):
        return "pairs"
    shape = detect_unpaired_shape(columns)
    if shape == "pairs" and data_format == "unpaired":
        raise DatasetFormatError(
            f"data_format 'unpaired' needs a 'label' column, but the dataset has {list(columns)} (pairs: set "
            "data_format to auto to split them into labelled rows)"
        )
    return shape


def _to_pairs(ds: Dataset, data_format: str, num_proc: int | None) -> tuple[Dataset, FormatReport]:
    pairs, report = to_preference_columns(ds, data_format, num_proc)
    report.source_format = f"{report.source_format} pairs"
    return pairs, report


def unpair(pairs: Dataset, num_proc: int | None = None) -> Dataset:
    """prompt/chosen/rejected pairs -> two prompt/completion/label rows each: chosen true, rejected false (tool
    pairs' ``tools`` go with both)."""
    features = datasets.Features(
        {"prompt": pairs.features["prompt"], "completion": pairs.features["chosen"], "label": datasets.Value("bool")}
    )
    if "tools" in pairs.column_names:
        features["tools"] = pairs.features["tools"]
    return pairs.map(
        _unpair_batch,
        batched=True,
        remove_columns=pairs.column_names,
        features=features,
        num_proc=num_proc,
        desc="Splitting pairs into labelled rows",
    )


def _unpair_batch(batch: dict[str, list]) -> dict[str, list]:
    out: dict[str, list] = {"prompt": [], "completion": [], "label": []}
    for prompt, chosen, rejected in zip(batch["prompt"], batch["chosen"], batch["rejected"], strict=True):
        out["prompt"] += [prompt, prompt]
        out["completion"] += [chosen, rejected]
        out["label"] += [True, False]
    if "tools" in batch:
        out["tools"] = [tools for tools in batch["tools"] for _ in range(2)]
    return out


# --- one row -----------------------------------------------------------------------------------------------------


def _label(value: Any) -> bool:
    """True/false, or 1/0 (a csv's column); anything else is not a verdict."""
    if value is None:
        raise _Drop("missing label")
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _Drop("malformed label")


def _prompt_completion_row(row: dict[str, Any], conversational: bool) -> tuple[Any, Any]:
    prompt, completion = row.get("prompt"), row.get("completion")
    if prompt is None:
        raise _Drop("missing prompt")
    if not conversational:
        prompt, completion = _as_text(prompt), _as_text(completion)
        if prompt is None or completion is None:
            raise _Drop("malformed row")
        if not completion.strip():
            raise _Drop("empty response")
        return prompt, completion
    prompt, completion = _as_messages(prompt, "user"), _as_messages(completion or [], "assistant")
    if not any(m["role"] == "assistant" and m["content"].strip() for m in completion):
        raise _Drop("empty response")
    return prompt, completion


def _conversation_row(row: dict[str, Any], column: str) -> tuple[Any, Any]:
    turns = _turns(row.get(column))
    system = (_as_text(row.get("system")) or "").strip()
    if system and not (turns and turns[0]["role"] == "system"):
        turns.insert(0, {"role": "system", "content": system})
    if not turns or turns[-1]["role"] != "assistant":
        raise _Drop("last turn is not the assistant's answer")
    if not turns[-1]["content"].strip():
        raise _Drop("empty response")
    if not any(turn["role"] == "user" for turn in turns[:-1]):
        raise _Drop("no prompt before the answer")
    return turns[:-1], turns[-1:]


def _convert_batch(batch: dict[str, list], shape: str, conversational: bool) -> dict[str, list]:
    """Unpaired rows of `shape` -> prompt/completion/label, plus the drop-reason column."""
    out: dict[str, list] = {"prompt": [], "completion": [], "label": [], _DROP: []}
    names = list(batch)
    for values in zip(*(batch[name] for name in names), strict=True):
        row = dict(zip(names, values, strict=True))
        try:
            label = _label(row.get("label"))
            if shape == "prompt_completion":
                prompt, completion = _prompt_completion_row(row, conversational)
            else:
                prompt, completion = _conversation_row(row, shape)
            reason = None
        except _Drop as drop:
            prompt = completion = label = None
            reason = drop.reason
        out["prompt"].append(prompt)
        out["completion"].append(completion)
        out["label"].append(label)
        out[_DROP].append(reason)
    return out


# --- loading for the stage ----------------------------------------------------------------------------------------


def check_both_labels(rows: Dataset, where: str) -> tuple[int, int]:
    """(desirable, undesirable) row counts; a UserError when one kind is missing. TRL would train anyway, on half
    of its loss (and warn only about the weights): KTO's signal is good answers pulled up *and* bad ones pushed
    down against the same KL baseline, so one kind alone is a mistake in the data, or a job for SFT."""
    desirable = sum(rows["label"])
    undesirable = len(rows) - desirable
    if not desirable or not undesirable:
        kind = "true (good answers)" if desirable else "false (bad answers)"
        raise UserError(
            f"{where}: all {len(rows)} rows are labelled {kind}; KTO needs both true and false labels (TRL would "
            "train on one side of its loss only) -- add the other kind, or train on good answers alone with sft"
        )
    return desirable, undesirable


def load_unpaired_data(
    path: str,
    data_format: str = "auto",
    *,
    split: str = "train",
    eval_path: str | None = None,
    eval_size: float = 0.0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 42,
    num_proc: int | None = None,
) -> PairData:
    """Labelled rows as prompt/completion/label, shuffled with `seed` (KTO's sampler keeps their order), with an
    eval split held out or read from `eval_path`. Pairs are held out and counted (`max_*_samples`) whole, then
    split, so no prompt is in both the training and the eval rows. Refuses training rows with only one label."""

    def convert(dataset: Dataset) -> tuple[Dataset, FormatReport]:
        if len(dataset) and _source_shape(dataset.column_names, data_format) == "pairs":
            return _to_pairs(dataset, data_format, num_proc)
        return to_unpaired_columns(dataset, data_format, num_proc=num_proc)

    def as_rows(rows: Dataset) -> Dataset:
        rows = unpair(rows, num_proc) if "chosen" in rows.column_names else rows
        return rows.shuffle(seed=seed).flatten_indices()

    data = _load_split(
        convert,
        path,
        eval_path,
        split=split,
        eval_size=eval_size,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        seed=seed,
    )
    data.train = as_rows(data.train)
    data.eval = as_rows(data.eval) if data.eval is not None else None
    check_both_labels(data.train, f"dataset '{path}'")
    if data.eval is not None and data.eval.features != data.train.features:
        raise UserError(f"eval dataset '{eval_path}' has a different shape from the training rows (text vs chat)")
    return data
