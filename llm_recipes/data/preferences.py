"""Pairwise preference data in the shapes people bring, converted to TRL's standard preference columns.

Reward modelling, DPO and the RL stages all read ``prompt`` / ``chosen`` / ``rejected``: message lists when the
source is a conversation (ShareGPT, HH-RLHF transcripts, message lists), plain strings otherwise, plus ``margin``
when the source has one. The shapes accepted:

* ``prompt_chosen_rejected``: explicit prompt; strings or message lists (a string beside message lists becomes a
  user or assistant turn, so one row never mixes the two kinds);
* ``implicit_prompt``: only ``chosen`` / ``rejected``, each a full text or conversation; the shared beginning is
  the prompt (whole turns for conversations, whole words for text);
* ``sharegpt``: ``conversations`` (``from``/``value`` turns, optional ``system``) with ``chosen`` / ``rejected``
  turns, as LLaMA-Factory's ``dpo_en_demo.json``;
* ``hh_rlhf``: Anthropic HH-RLHF transcripts, ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` in ``chosen`` / ``rejected``.

A file may mix shapes (half HH-RLHF transcripts, half prompt/chosen/rejected): each row is read by its own (a
``conversations`` row is ShareGPT, a row with a ``prompt`` is explicit, a transcript is HH-RLHF, any other row has
the shape detected for the file) and the report counts rows per shape; one conversational shape makes every pair a
conversation (a string prompt becomes a user turn).

TRL can extract an implicit prompt itself, but not from transcripts or ShareGPT rows, and its trainers differ in
what they accept; converting once here gives every stage the same explicit shape. The turn parsing is shared with
the SFT converters in ``formats.py``. Like there, rows that cannot be used are dropped and counted by reason.

Tool data (a ``tools`` column, OpenAI ``tool_calls`` in the turns, ShareGPT ``function_call``/``observation`` turns)
keeps its tools, as SFT data does (`data/tools.py`): the turns carry ``tool_calls`` -- so a chosen or rejected
answer may be a call -- and a ``tools`` column holds the schemas. TRL's DPO, reward and KTO trainers pass that
column to ``apply_chat_template(tools=...)``, so the prompt they train on lists the tools. Tools need
conversations: text pairs with a ``tools`` column are refused, since no text prompt could show them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from llm_recipes.data.formats import (
    _DROP,
    _MESSAGES_FEATURE,
    DatasetFormatError,
    FormatReport,
    Message,
    _as_text,
    _chosen_text,
    _Drop,
    _keep_batch,
    _turns,
    count_row_formats,
    filled,
    naming_dataset,
    to_standard_columns,
)
from llm_recipes.data.io import load_dataset_source
from llm_recipes.data.mixture import hold_out
from llm_recipes.data.tools import (
    TOOL_MESSAGES_FEATURE,
    TOOLS_FEATURE,
    ToolFormatError,
    carries_tools,
    tool_schemas,
)
from llm_recipes.errors import UserError
from llm_recipes.rl.config import PREFERENCE_FORMATS

__all__ = [
    "PREFERENCE_FORMATS",
    "PairData",
    "detect_preference_format",
    "load_preference_data",
    "load_prompt_data",
    "parse_hh_transcript",
    "to_preference_columns",
    "to_prompt_column",
]

# Columns each format needs, in detection order (sharegpt first: its rows also have chosen/rejected).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "sharegpt": ("conversations", "chosen", "rejected"),
    "prompt_chosen_rejected": ("prompt", "chosen", "rejected"),
    "implicit_prompt": ("chosen", "rejected"),
    "hh_rlhf": ("chosen", "rejected"),
}
_CONVERSATIONAL_SOURCES = ("sharegpt", "hh_rlhf")

# HH-RLHF speaker markers: each turn starts on a blank line with its speaker ("H:"/"A:" in some early dumps).
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant|H|A):[ \t]?")
_HH_ROLES = {"Human": "user", "H": "user", "Assistant": "assistant", "A": "assistant"}


_HH_START = re.compile(r"(?:^|\n\n)(Human|H):")


def _is_hh_transcript(value: Any) -> bool:
    return isinstance(value, str) and bool(_HH_START.search(value)) and "Assistant:" in value


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def detect_preference_format(columns: Sequence[str], first_row: dict) -> str:
    """Which preference shape a dataset has, from its columns and first row (HH-RLHF and implicit-prompt data
    have the same columns; only the text tells them apart). Raises DatasetFormatError naming what is missing."""
    present = set(columns)
    if present.issuperset(_REQUIRED["sharegpt"]):
        return "sharegpt"
    if present.issuperset(_REQUIRED["prompt_chosen_rejected"]):
        return "prompt_chosen_rejected"
    if present.issuperset(_REQUIRED["implicit_prompt"]):
        return "hh_rlhf" if _is_hh_transcript(first_row.get("chosen")) else "implicit_prompt"
    missing = [column for column in ("chosen", "rejected") if column not in present]
    hint = ""
    if {"completion", "label"} <= present:
        hint = " (this looks like unpaired KTO data: one completion with a true/false label, not a pair)"
    elif "messages" in present or "conversations" in present:
        hint = " (this looks like SFT data: conversations without a chosen and a rejected answer)"
    raise DatasetFormatError(
        f"dataset has columns {list(columns)}, but preference data needs {' and '.join(repr(c) for c in missing)}"
        f"{hint}; expected prompt/chosen/rejected, chosen/rejected (implicit prompt or HH-RLHF transcripts), "
        "or ShareGPT conversations with chosen/rejected turns"
    )


def to_preference_columns(
    ds: Dataset, data_format: str = "auto", num_proc: int | None = None
) -> tuple[Dataset, FormatReport]:
    """Convert ``ds`` to ``prompt`` / ``chosen`` / ``rejected`` (and ``margin`` when present); every other column
    is dropped. Returns the dataset and a report of the rows dropped, by reason."""
    columns = list(ds.column_names)
    if data_format not in PREFERENCE_FORMATS:
        raise DatasetFormatError(
            f"unknown preference data_format {data_format!r}; expected one of: {', '.join(PREFERENCE_FORMATS)}"
        )
    if len(ds) == 0:
        raise DatasetFormatError("the preference dataset has no rows")
    first_row = ds[0]
    formats: dict[str, int] = {}
    if data_format == "auto":
        source_format = detect_preference_format(columns, first_row)
        formats = _mixed_preference_formats(ds, source_format)
    else:
        source_format = data_format
        missing = [c for c in _REQUIRED[source_format] if c not in columns]
        if missing:
            raise DatasetFormatError(
                f"data_format {source_format!r} needs column(s) {missing}, but the dataset has {columns}"
            )

    conversational = any(name in _CONVERSATIONAL_SOURCES for name in formats or [source_format]) or any(
        _is_messages(first_row.get(column)) for column in ("prompt", "chosen", "rejected")
    )
    with_tools = any(carries_tools(ds, column) for column in ("conversations", "prompt", "chosen", "rejected"))
    if with_tools and not conversational:
        raise DatasetFormatError(
            "the pairs have tools but are text: tool data needs conversations (message lists in prompt/chosen/"
            "rejected, or ShareGPT turns), which the chat template renders with the tools"
        )
    text_feature = (
        (TOOL_MESSAGES_FEATURE if with_tools else _MESSAGES_FEATURE) if conversational else datasets.Value("string")
    )
    features = datasets.Features({"prompt": text_feature, "chosen": text_feature, "rejected": text_feature})
    if with_tools:
        features["tools"] = TOOLS_FEATURE
    if "margin" in columns:
        features["margin"] = datasets.Value("float32")
    features[_DROP] = datasets.Value("string")

    converted = ds.map(
        _convert_batch,
        batched=True,
        fn_kwargs={
            "source_format": source_format,
            "conversational": conversational,
            "mixed": bool(formats),
            "with_tools": with_tools,
        },
        remove_columns=columns,
        features=features,
        num_proc=num_proc,
        desc=f"Converting {'+'.join(formats) or source_format} preferences to prompt/chosen/rejected",
    )
    dropped = {reason: n for reason, n in Counter(converted[_DROP]).items() if reason is not None}
    if dropped:
        converted = converted.filter(
            _keep_batch, batched=True, input_columns=[_DROP], num_proc=num_proc, desc="Dropping unusable pairs"
        )
    converted = converted.remove_columns(_DROP)
    report = FormatReport(
        source_format="+".join(formats) or source_format,
        rows_in=ds.num_rows,
        rows_out=converted.num_rows,
        dropped=dict(sorted(dropped.items(), key=lambda item: (-item[1], item[0]))),
        formats=formats,
    )
    return converted, report


def _row_masks(table: pa.Table) -> dict[str, np.ndarray]:
    """Which rows of an Arrow batch show their own shape: a ShareGPT conversation, a prompt, an HH transcript."""
    masks = {}
    if "conversations" in table.column_names:
        masks["sharegpt"] = filled(table, "conversations")
    if "prompt" in table.column_names:
        masks["prompt_chosen_rejected"] = filled(table, "prompt")
    chosen = table["chosen"]
    if pa.types.is_string(chosen.type) or pa.types.is_large_string(chosen.type):
        starts = pc.match_substring_regex(chosen, _HH_START.pattern)  # RE2 reads `^` as Python's re does
        transcript = pc.and_(starts, pc.match_substring(chosen, "Assistant:"))
        masks["hh_rlhf"] = pc.fill_null(transcript, False).to_numpy(zero_copy_only=False)
    return masks


def _mixed_preference_formats(ds: Dataset, detected: str) -> dict[str, int]:
    """Pairs per shape when the rows are in more than one; {} when every row has the shape detected."""
    columns = [c for c in ("conversations", "prompt", "chosen") if c in ds.column_names]
    formats = count_row_formats(ds, columns, _row_masks, detected)
    return formats if len(formats) > 1 else {}


def _row_format(row: dict[str, Any], fallback: str) -> str:
    """A row's own shape, as `_row_masks` sees it."""
    if row.get("conversations") is not None:
        return "sharegpt"
    if row.get("prompt") is not None:
        return "prompt_chosen_rejected"
    if _is_hh_transcript(row.get("chosen")):
        return "hh_rlhf"
    return fallback


# --- one row -----------------------------------------------------------------------------------------------------

Pair = tuple[Any, Any, Any]  # (prompt, chosen, rejected)


def _as_messages(value: Any, role: str, with_tools: bool = False) -> list[Message]:
    """A cell as a message list: message lists are normalized (ShareGPT or OpenAI turns), a string becomes one
    turn of `role`, a single turn dict (ShareGPT's chosen) becomes that turn. `with_tools`: calls are kept as the
    turns' ``tool_calls`` (`formats._normalize_turn`)."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, dict):
        return _turns([value], with_tools)
    return _turns(value, with_tools)


def _explicit_row(row: dict[str, Any], conversational: bool, with_tools: bool = False) -> Pair:
    prompt, chosen, rejected = row.get("prompt"), row.get("chosen"), row.get("rejected")
    if prompt is None:
        raise _Drop("missing prompt")
    if not conversational:
        texts = [_as_text(value) for value in (prompt, chosen, rejected)]
        if any(text is None for text in texts):
            raise _Drop("malformed pair")
        return texts[0], texts[1], texts[2]
    return (
        _as_messages(prompt, "user", with_tools),
        _as_messages(chosen, "assistant", with_tools),
        _as_messages(rejected, "assistant", with_tools),
    )


def _split_common_prefix(chosen: Any, rejected: Any) -> Pair:
    """(shared beginning, rest of chosen, rest of rejected): whole turns for conversations; for text, cut at the
    last whitespace so no word is split between prompt and answer (the answers keep their leading space)."""
    limit = min(len(chosen), len(rejected))
    shared = next((i for i in range(limit) if chosen[i] != rejected[i]), limit)
    if isinstance(chosen, str):
        while shared > 0 and not chosen[shared - 1].isspace():
            shared -= 1
        while shared > 0 and chosen[shared - 1].isspace():
            shared -= 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _implicit_row(row: dict[str, Any], conversational: bool, with_tools: bool = False) -> Pair:
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if conversational:
        chosen, rejected = (
            _as_messages(chosen, "assistant", with_tools),
            _as_messages(rejected, "assistant", with_tools),
        )
    else:
        chosen, rejected = _as_text(chosen), _as_text(rejected)
        if chosen is None or rejected is None:
            raise _Drop("malformed pair")
    prompt, chosen, rejected = _split_common_prefix(chosen, rejected)
    if conversational and not prompt:
        raise _Drop("no shared prompt")
    return prompt, chosen, rejected


def parse_hh_transcript(text: str) -> list[Message]:
    """An HH-RLHF transcript (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) as messages. Text before the first
    speaker is ignored; an unterminated last turn (``"Assistant:"`` with nothing after) becomes an empty one."""
    parts = _HH_TURN.split(text)
    # split gives [before, speaker, content, speaker, content, ...]
    return [
        {"role": _HH_ROLES[speaker], "content": content.strip()}
        for speaker, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def _hh_row(row: dict[str, Any], conversational: bool, with_tools: bool = False) -> Pair:
    chosen, rejected = _as_text(row.get("chosen")), _as_text(row.get("rejected"))
    if chosen is None or rejected is None:
        raise _Drop("malformed pair")
    if not (_is_hh_transcript(chosen) and _is_hh_transcript(rejected)):
        raise _Drop("not an HH-RLHF transcript")
    prompt, chosen_turns, rejected_turns = _split_common_prefix(
        parse_hh_transcript(chosen), parse_hh_transcript(rejected)
    )
    if not prompt or prompt[-1]["role"] != "user":
        # the two transcripts part before the last human turn: no single question both answer
        raise _Drop("no shared prompt")
    return prompt, chosen_turns, rejected_turns


def _sharegpt_row(row: dict[str, Any], conversational: bool, with_tools: bool = False) -> Pair:
    prompt = _turns(row.get("conversations"), with_tools)
    system = (_as_text(row.get("system")) or "").strip()
    if system and not (prompt and prompt[0]["role"] == "system"):
        prompt.insert(0, {"role": "system", "content": system})
    if not prompt:
        raise _Drop("missing prompt")
    if with_tools:
        # an answer may be a call: a `function_call` turn (or a list of turns) becomes the assistant's tool_calls
        return prompt, _sharegpt_answer(row.get("chosen")), _sharegpt_answer(row.get("rejected"))
    return (
        prompt,
        [{"role": "assistant", "content": _chosen_text(row.get("chosen"))}],
        [{"role": "assistant", "content": _chosen_text(row.get("rejected"))}],
    )


def _sharegpt_answer(answer: Any) -> list[Message]:
    if isinstance(answer, (dict, list)):
        return [{**turn, "content": turn["content"].strip()} for turn in _as_messages(answer, "assistant", True)]
    return [{"role": "assistant", "content": _chosen_text(answer)}]


_ROW_CONVERTERS: dict[str, Callable[[dict[str, Any], bool, bool], Pair]] = {
    "prompt_chosen_rejected": _explicit_row,
    "implicit_prompt": _implicit_row,
    "hh_rlhf": _hh_row,
    "sharegpt": _sharegpt_row,
}


def _is_blank(answer: Any) -> bool:
    if isinstance(answer, str):
        return not answer.strip()
    return not any(
        message["content"].strip() or message.get("tool_calls") for message in answer if message["role"] == "assistant"
    )


def _check_pair(prompt: Any, chosen: Any, rejected: Any) -> None:
    if _is_blank(chosen) or _is_blank(rejected):
        raise _Drop("empty response")
    if chosen == rejected:
        raise _Drop("chosen equals rejected")


def _with_call_fields(messages: list[Message]) -> list[Message]:
    return [{"tool_calls": None, **message} for message in messages]


def _convert_batch(
    batch: dict[str, list], source_format: str, conversational: bool, mixed: bool = False, with_tools: bool = False
) -> dict[str, list]:
    """Preference rows of `source_format` (or, `mixed`, each of its own shape) -> prompt/chosen/rejected(/margin)
    (and `with_tools`, tools), plus the drop-reason column."""
    out: dict[str, list] = {"prompt": [], "chosen": [], "rejected": [], _DROP: []}
    if "margin" in batch:
        out["margin"] = []
    if with_tools:
        out["tools"] = []
    names = list(batch)
    for values in zip(*(batch[name] for name in names), strict=True):
        row = dict(zip(names, values, strict=True))
        convert_row = _ROW_CONVERTERS[_row_format(row, source_format) if mixed else source_format]
        tools = None
        try:
            try:
                prompt, chosen, rejected = convert_row(row, conversational, with_tools)
                if with_tools:
                    tools = tool_schemas(row.get("tools"))
                    prompt, chosen, rejected = map(_with_call_fields, (prompt, chosen, rejected))
            except ToolFormatError as err:
                raise _Drop(str(err)) from None
            _check_pair(prompt, chosen, rejected)
            margin = row.get("margin")
            if "margin" in out and not (isinstance(margin, (int, float)) and not isinstance(margin, bool)):
                raise _Drop("missing margin")
            reason = None
        except _Drop as drop:
            prompt = chosen = rejected = tools = None
            reason = drop.reason
        out["prompt"].append(prompt)
        out["chosen"].append(chosen)
        out["rejected"].append(rejected)
        out[_DROP].append(reason)
        if with_tools:
            out["tools"].append(tools)
        if "margin" in out:
            out["margin"].append(float(row["margin"]) if reason is None else None)
    return out


# --- loading for the stages ---------------------------------------------------------------------------------------


@dataclass
class PairData:
    """A stage's train/eval data in standard columns, with what each source's conversion dropped."""

    train: Dataset
    eval: Dataset | None
    reports: list[tuple[str, FormatReport]] = field(default_factory=list)

    @property
    def conversational(self) -> bool:
        return bool(len(self.train)) and isinstance(self.train[0]["prompt"], list)


def _load_split(
    convert: Callable[[Dataset], tuple[Dataset, FormatReport]],
    path: str,
    eval_path: str | None,
    *,
    split: str,
    eval_size: float,
    max_train_samples: int | None,
    max_eval_samples: int | None,
    seed: int,
) -> PairData:
    dataset = load_dataset_source(path, split=split)
    if len(dataset) == 0:
        raise UserError(f"dataset '{path}' is empty")
    with naming_dataset(path):
        train, report = convert(dataset)
    if len(train) == 0:
        raise UserError(f"dataset '{path}': no usable rows after conversion ({report.dropped})")
    reports = [(path, report)]
    eval_dataset = None
    if eval_path:
        with naming_dataset(eval_path):
            eval_dataset, eval_report = convert(load_dataset_source(eval_path, split=split))
        reports.append((eval_path, eval_report))
    elif eval_size:
        train, eval_dataset = hold_out(train, eval_size, seed=seed)
    if max_train_samples is not None:
        train = train.select(range(min(max_train_samples, len(train))))
    if eval_dataset is not None and max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(max_eval_samples, len(eval_dataset))))
    return PairData(train=train, eval=eval_dataset, reports=reports)


def load_preference_data(
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
    """Preference pairs as prompt/chosen/rejected(/margin), with an eval split held out or read from `eval_path`."""

    def convert(dataset: Dataset) -> tuple[Dataset, FormatReport]:
        return to_preference_columns(dataset, data_format, num_proc=num_proc)

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
    if data.eval is not None and data.eval.features != data.train.features:
        raise UserError(f"eval dataset '{eval_path}' has a different shape from the training pairs (text vs chat)")
    return data


def _prompt_batch(batch: dict[str, list]) -> dict[str, list]:
    """SFT ``messages`` -> the conversation before its last assistant turn, the prompt an RL policy answers."""
    prompts: list[Any] = []
    reasons: list[str | None] = []
    for messages in batch["messages"]:
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        prompt = messages[:last] if last is not None else messages
        prompts.append(prompt if prompt else None)
        reasons.append(None if prompt else "no prompt before the answer")
    return {"prompt": prompts, _DROP: reasons}


def to_prompt_column(
    ds: Dataset, data_format: str = "auto", num_proc: int | None = None
) -> tuple[Dataset, FormatReport]:
    """Prompts for RL as one ``prompt`` column (strings or message lists): the prompt side of preference pairs (any
    shape above), a ``prompt`` column as it is, or the prompt side of any SFT format (Alpaca, ShareGPT, messages) --
    a conversation cut before its last assistant turn. Other columns are dropped."""
    if data_format == "auto" and {"chosen", "rejected"} <= set(ds.column_names):
        pairs, report = to_preference_columns(ds, num_proc=num_proc)  # HH-RLHF, ShareGPT or explicit pairs
        return pairs.select_columns(["prompt"]), report
    if "prompt" in ds.column_names and data_format in ("auto", "prompt_completion"):
        prompts = ds.select_columns(["prompt"])
        kept = prompts.filter(lambda row: not _is_blank_prompt(row["prompt"]), num_proc=num_proc)
        dropped = {"empty prompt": len(prompts) - len(kept)} if len(kept) < len(prompts) else {}
        return kept, FormatReport("prompt", len(ds), len(kept), dropped)
    standard, report = to_standard_columns(ds, data_format, num_proc=num_proc)
    if "messages" not in standard.column_names:
        raise DatasetFormatError(
            f"RL needs prompts, but '{report.source_format}' data has none: give a `prompt` column or "
            "conversations (Alpaca, ShareGPT, messages)"
        )
    features = datasets.Features({"prompt": _MESSAGES_FEATURE, _DROP: datasets.Value("string")})
    converted = standard.map(
        _prompt_batch, batched=True, remove_columns=["messages"], features=features, num_proc=num_proc
    )
    dropped = {reason: n for reason, n in Counter(converted[_DROP]).items() if reason is not None}
    if dropped:
        converted = converted.filter(_keep_batch, batched=True, input_columns=[_DROP], num_proc=num_proc)
    converted = converted.remove_columns(_DROP)
    report.rows_out = len(converted)
    report.dropped = {**report.dropped, **dropped}
    return converted, report


def _is_blank_prompt(prompt: Any) -> bool:
    if prompt is None:
        return True
    if isinstance(prompt, str):
        return not prompt.strip()
    return not any((message.get("content") or "").strip() for message in prompt)


def load_prompt_data(
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
    """RL prompts (one ``prompt`` column), with an eval split held out or read from `eval_path`."""

    def convert(dataset: Dataset) -> tuple[Dataset, FormatReport]:
        return to_prompt_column(dataset, data_format, num_proc=num_proc)

    return _load_split(
        convert,
        path,
        eval_path,
        split=split,
        eval_size=eval_size,
        max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples,
        seed=seed,
    )
