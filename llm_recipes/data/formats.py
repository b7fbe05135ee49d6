"""Convert the dataset formats people actually bring into TRL's standard columns.

Users arrive with Alpaca, ShareGPT, OpenAI-style ``messages``, prompt/completion pairs or raw text.
TRL's trainers understand only a few standard shapes, so the conversion happens once, at the edge,
and everything downstream can assume one of:

* ``messages``: a list of ``{"role": str, "content": str}`` (conversational SFT),
* ``prompt`` + ``completion`` (prompt-completion SFT, strings or message lists),
* ``text`` (language modelling).

Tool-calling chats (ShareGPT ``function_call``/``observation`` turns, OpenAI ``tool_calls``, a ``tools`` column of
JSON schemas) become ``messages`` whose assistant turns carry ``tool_calls``, plus a ``tools`` column: TRL's shape for
tool use, converted by `data/tools.py`.

The per-row converters are pure batched functions (``dict[str, list] -> dict[str, list]``) defined at
module level, so ``datasets.Dataset.map(batched=True, num_proc=N)`` can pickle them and the cache
fingerprint is stable. Rows that cannot be used are not fatal: they are dropped and counted by reason
in a :class:`FormatReport`, because one broken row in a 100k-row scrape should not kill a run.

A file may hold rows of several formats (half Alpaca, half ShareGPT): `datasets` gives every row every column,
null where a row has none, so each row is converted by the format whose columns it fills, and the report counts
rows per format. Formats that would make different shapes (chats and plain text) cannot share a dataset: refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_recipes.data.tools import (
    TOOL_MESSAGES_FEATURE,
    TOOLS_FEATURE,
    ToolFormatError,
    carries_tools,
    function_calls,
    tool_calls,
    tool_schemas,
)
from llm_recipes.errors import UserError

__all__ = ["FORMATS", "DatasetFormatError", "FormatReport", "detect_format", "naming_dataset", "to_standard_columns"]

FORMATS: tuple[str, ...] = ("alpaca", "sharegpt", "messages", "prompt_completion", "text")

# Columns each format needs, in detection order: alpaca comes first because Alpaca files often carry
# extra columns (e.g. "text") that would otherwise win.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "output"),
    "sharegpt": ("conversations",),
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
# the standard shape each format becomes
_SHAPES: dict[str, str] = {
    "alpaca": "messages",
    "sharegpt": "messages",
    "messages": "messages",
    "prompt_completion": "prompt_completion",
    "text": "text",
}

# ShareGPT speaker names seen in the wild (LLaMA-Factory, FastChat, Vicuna/Bard/Bing scrapes).
_ROLE_MAP: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "model": "assistant",
    "system": "system",
    # A function call is something the assistant says; its result comes back as a tool message.
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}

# the column holding a chat format's turns
_TURNS: dict[str, str] = {"sharegpt": "conversations", "messages": "messages"}

# Private column carrying why a row is dropped (None = kept); counted, filtered, then removed.
_DROP = "__drop_reason__"

_MESSAGES_FEATURE = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})

Message = dict[str, Any]  # role and content (str); tool_calls on tool data


class DatasetFormatError(UserError):
    """The dataset's columns do not fit the requested (or any known) format.

    The message is a single user-facing line: it is what a CLI user sees, so it names what the dataset
    has and what would have worked instead of a traceback into ``datasets``.
    """


@contextmanager
def naming_dataset(path: str) -> Iterator[None]:
    """Format errors raised inside this block name the dataset they are about."""
    try:
        yield
    except DatasetFormatError as err:
        raise DatasetFormatError(f"dataset '{path}': {err}") from None


@dataclass
class FormatReport:
    """What a conversion did, so silently dropped rows are visible in logs and run cards."""

    source_format: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)  # rows read per format, when the rows mix formats

    def describe(self) -> str:
        """ "kept/read (format or rows per format; dropped: reason count, ...)", for a stage's summary."""
        kinds = ", ".join(f"{name} {rows}" for name, rows in self.formats.items()) or self.source_format
        dropped = "; dropped: " + ", ".join(f"{reason} {rows}" for reason, rows in self.dropped.items())
        return f"{self.rows_out}/{self.rows_in} ({kinds}{dropped if self.dropped else ''})"


class _Drop(Exception):
    """Internal signal: this row is unusable, for the given reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _expected_formats() -> str:
    return ", ".join(f"{name} ({', '.join(cols)})" for name, cols in _REQUIRED.items())


def detect_format(column_names: Iterable[str]) -> str:
    """Guess the format from column names alone.

    Column names are all we can look at without reading data, and they are unambiguous for the formats
    we support. When nothing fits, the error says which formats were *almost* matched and what they lack,
    because the usual cause is a typo or a renamed column rather than a truly foreign format.
    """
    columns = list(column_names)
    present = set(columns)
    for name, required in _REQUIRED.items():
        if present.issuperset(required):
            return name
    near_misses = [
        f"{name} needs {', '.join(repr(c) for c in required if c not in present)}"
        for name, required in _REQUIRED.items()
        if present.intersection(required)
    ]
    hint = f" ({'; '.join(near_misses)})" if near_misses else ""
    raise DatasetFormatError(
        f"dataset has columns {columns}, which match no known format{hint}; "
        f"expected one of: {_expected_formats()} -- or set data_format and text_field"
    )


def to_standard_columns(
    dataset: datasets.Dataset,
    data_format: str = "auto",
    *,
    text_field: str = "text",
    num_proc: int | None = None,
) -> tuple[datasets.Dataset, FormatReport]:
    """Convert ``dataset`` to exactly one of TRL's standard shapes and drop every other column.

    Extra columns are removed rather than carried along because TRL's trainers and collators treat
    unknown columns inconsistently (some are silently dropped, some break collation), and a
    predictable schema makes the output cacheable and comparable across runs.

    ``text_field`` names the raw-text column; with ``data_format="auto"`` it is treated as ``text``
    during detection, so a corpus with a ``content`` column works with just ``text_field="content"``.
    """
    columns = list(dataset.column_names)
    formats: dict[str, int] = {}
    if data_format == "auto":
        source_format = detect_format("text" if c == text_field else c for c in columns)
        formats = _mixed_formats(dataset, text_field, source_format)
    elif data_format in _REQUIRED:
        source_format = data_format
    else:
        raise DatasetFormatError(
            f"unknown data_format {data_format!r}; expected 'auto' or one of: {', '.join(FORMATS)}"
        )

    required = (text_field,) if source_format == "text" else _REQUIRED[source_format]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DatasetFormatError(
            f"data_format {source_format!r} needs column(s) {missing}, but the dataset has {columns}"
            + (" -- set text_field to the column holding the text" if source_format == "text" else "")
        )

    function: Callable[..., dict[str, list]]
    fn_kwargs: dict[str, Any] = {}
    if formats:
        function, features = _mixed_batch, datasets.Features({"messages": _MESSAGES_FEATURE})
        candidates = [name for name in _REQUIRED if name in formats]  # in detection order, as they were counted
        fn_kwargs = {"candidates": candidates, "text_field": text_field, "fallback": source_format}
        source_format = "+".join(formats)
    elif source_format == "alpaca":
        function, features = _alpaca_batch, datasets.Features({"messages": _MESSAGES_FEATURE})
    elif source_format == "sharegpt":
        function, features = _sharegpt_batch, datasets.Features({"messages": _MESSAGES_FEATURE})
    elif source_format == "messages":
        function, features = _messages_batch, datasets.Features({"messages": _MESSAGES_FEATURE})
    elif source_format == "prompt_completion":
        # Kept as is (strings or message lists), so the output types are the input types.
        function = _prompt_completion_batch
        features = datasets.Features(
            {"prompt": dataset.features["prompt"], "completion": dataset.features["completion"]}
        )
    else:
        function, fn_kwargs = _text_batch, {"text_field": text_field}
        features = datasets.Features({"text": datasets.Value("string")})
    chat_formats = [name for name in (formats or [source_format]) if name in _TURNS]
    if chat_formats and any(carries_tools(dataset, _TURNS[name]) for name in chat_formats):
        # tool calls need their own columns (tool_calls, tools); each row is converted by its own format as above
        function = _tool_chat_batch
        features = datasets.Features({"messages": TOOL_MESSAGES_FEATURE, "tools": TOOLS_FEATURE})
        candidates = [name for name in _REQUIRED if name in formats] or [source_format]
        fn_kwargs = {"candidates": candidates, "text_field": text_field, "fallback": candidates[0]}
    # Explicit features: Arrow would otherwise infer the schema per batch, and a batch of dropped
    # (None) rows followed by real ones gives mismatched shard schemas under num_proc.
    features[_DROP] = datasets.Value("string")

    converted = dataset.map(
        function,
        batched=True,
        fn_kwargs=fn_kwargs,
        remove_columns=columns,
        features=features,
        num_proc=num_proc,
        desc=f"Converting {source_format} to standard columns",
    )
    dropped = {reason: n for reason, n in Counter(converted[_DROP]).items() if reason is not None}
    if dropped:
        converted = converted.filter(
            _keep_batch, batched=True, input_columns=[_DROP], num_proc=num_proc, desc="Dropping unusable rows"
        )
    converted = converted.remove_columns(_DROP)
    report = FormatReport(
        source_format=source_format,
        rows_in=dataset.num_rows,
        rows_out=converted.num_rows,
        dropped=dict(sorted(dropped.items(), key=lambda item: (-item[1], item[0]))),
        formats=formats,
    )
    return converted, report


# --- rows of several formats in one dataset ----------------------------------------------------------------------


def _format_columns(name: str, text_field: str) -> tuple[str, ...]:
    return (text_field,) if name == "text" else _REQUIRED[name]


def filled(table: pa.Table, column: str) -> np.ndarray:
    """Which rows of an Arrow batch have a value in `column`."""
    return pc.is_valid(table[column]).to_numpy(zero_copy_only=False)


def count_row_formats(
    dataset: datasets.Dataset,
    columns: Sequence[str],
    row_masks: Callable[[pa.Table], dict[str, np.ndarray]],
    fallback: str,
) -> dict[str, int]:
    """Rows per format: each row under the first format whose mask (from `row_masks`, in order) holds for it, else
    under `fallback`. Read as Arrow batches of `columns` only, so a large dataset is counted in seconds."""
    counts: Counter[str] = Counter()
    for table in dataset.select_columns(list(columns)).with_format("arrow").iter(batch_size=10_000):
        left = np.ones(table.num_rows, dtype=bool)
        for name, mask in row_masks(table).items():
            counts[name] += int((mask & left).sum())
            left &= ~mask
        counts[fallback] += int(left.sum())
    return {name: rows for name, rows in counts.most_common() if rows}


def _mixed_formats(dataset: datasets.Dataset, text_field: str, detected: str) -> dict[str, int]:
    """Rows per format when the rows are in more than one (a row is in the first format, in detection order, whose
    columns it fills at all); {} when every row is in one. Refuses formats that make different shapes."""
    present = {"text" if c == text_field else c for c in dataset.column_names}
    candidates = [name for name, required in _REQUIRED.items() if present.issuperset(required)]
    if len(candidates) < 2:
        return {}

    def masks(table: pa.Table) -> dict[str, np.ndarray]:
        return {
            name: np.logical_or.reduce([filled(table, c) for c in _format_columns(name, text_field)])
            for name in candidates
        }

    needed = sorted({c for name in candidates for c in _format_columns(name, text_field)})
    formats = count_row_formats(dataset, needed, masks, detected)
    if len(formats) < 2:
        return {}
    shapes = {_SHAPES[name] for name in formats}
    if len(shapes) > 1:
        found = ", ".join(
            f"{name} ({rows} row{'s' if rows != 1 else ''}, becomes {_SHAPES[name]})" for name, rows in formats.items()
        )
        raise DatasetFormatError(
            f"the rows mix formats that make different kinds of data: {found}; keep one kind per file, or set "
            "data_format to read only one"
        )
    return formats


def _row_format(row: dict[str, Any], candidates: list[str], text_field: str, fallback: str) -> str:
    for name in candidates:
        if any(row.get(c) is not None for c in _format_columns(name, text_field)):
            return name
    return fallback


def _mixed_batch(batch: dict[str, list], candidates: list[str], text_field: str, fallback: str) -> dict[str, list]:
    """Rows of several chat formats -> ``messages``, each row converted by its own format."""
    converters = {"alpaca": _alpaca_row, "sharegpt": _sharegpt_row, "messages": _messages_row}
    return _convert_rows(
        batch, "messages", lambda row: converters[_row_format(row, candidates, text_field, fallback)](row)
    )


def _tool_chat_batch(batch: dict[str, list], candidates: list[str], text_field: str, fallback: str) -> dict[str, list]:
    """Chats with tool calls (rows of one or several chat formats) -> ``messages`` with ``tool_calls``, ``tools``."""

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        row_format = _row_format(row, candidates, text_field, fallback)
        try:
            if row_format == "alpaca":
                messages = _alpaca_row(row)
            else:
                messages = (_sharegpt_row if row_format == "sharegpt" else _messages_row)(row, with_tools=True)
            tools = tool_schemas(row.get("tools"))
        except ToolFormatError as err:
            raise _Drop(str(err)) from None
        return {"messages": [{"tool_calls": None, **message} for message in messages], "tools": tools}

    converted = _convert_rows(batch, "row", convert)
    rows = converted.pop("row")
    return {
        "messages": [row and row["messages"] for row in rows],
        "tools": [row and row["tools"] for row in rows],
        **converted,
    }


# --- batched converters -------------------------------------------------------------------------
# Each returns the new columns plus the drop-reason column, one entry per input row, so that
# to_standard_columns can count reasons before filtering. They never raise on a bad row.


def _convert_rows(
    batch: dict[str, list], out_column: str, convert_row: Callable[[dict[str, Any]], Any]
) -> dict[str, list]:
    values: list[Any] = []
    reasons: list[str | None] = []
    names = list(batch)
    for row_values in zip(*(batch[name] for name in names), strict=True):
        row = dict(zip(names, row_values, strict=True))
        if row.get("label") is False:
            # unpaired preference data (KTO style): supervised fine-tuning should imitate only the desirable rows
            values.append(None)
            reasons.append("undesirable (label false)")
            continue
        try:
            values.append(convert_row(row))
            reasons.append(None)
        except _Drop as drop:
            values.append(None)
            reasons.append(drop.reason)
    return {out_column: values, _DROP: reasons}


def _as_text(value: Any) -> str | None:
    """A string for string-like cells (numbers appear in scraped data), None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def _alpaca_row(row: dict[str, Any]) -> list[Message]:
    instruction = _as_text(row.get("instruction")) or ""
    extra_input = _as_text(row.get("input")) or ""
    output = (_as_text(row.get("output")) or "").strip()
    if not output:
        raise _Drop("empty response")
    prompt = (f"{instruction}\n\n{extra_input}" if extra_input.strip() else instruction).strip()
    if not prompt:
        raise _Drop("empty instruction")

    messages: list[Message] = []
    system = (_as_text(row.get("system")) or "").strip()
    if system:
        messages.append({"role": "system", "content": system})
    for pair in row.get("history") or []:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise _Drop("malformed history")
        user, assistant = (_as_text(turn) for turn in pair)
        if user is None or assistant is None:
            raise _Drop("malformed history")
        messages.append({"role": "user", "content": user.strip()})
        messages.append({"role": "assistant", "content": assistant.strip()})
    messages.append({"role": "user", "content": prompt})
    messages.append({"role": "assistant", "content": output})
    return messages


def _normalize_turn(turn: Any, with_tools: bool = False) -> Message:
    """One turn in either ShareGPT (``from``/``value``) or OpenAI (``role``/``content``) shape.

    ShareGPT speaker names must be known: an unmapped speaker would reach the chat template as a role
    it cannot render. ``role``/``content`` turns are already in the target vocabulary, so only the
    ShareGPT aliases are mapped and any other role (e.g. ``developer``) is left to the chat template.
    `with_tools`: a ShareGPT ``function_call`` turn and an OpenAI turn's ``tool_calls`` become the turn's
    ``tool_calls`` (without it a call stays the assistant's text, as for data that declares no tools).
    """
    if not isinstance(turn, dict):
        raise _Drop("malformed turn")
    # Arrow unifies struct fields across rows, so a ShareGPT turn may also carry role=None/content=None.
    if turn.get("from") is not None:
        speaker, content = turn.get("from"), turn.get("value")
        if not isinstance(speaker, str) or content is None:
            raise _Drop("malformed turn")
        role = _ROLE_MAP.get(speaker.strip().lower())
        if role is None:
            raise _Drop("unknown role")
        if with_tools and speaker.strip().lower() == "function_call":
            return {"role": role, "content": "", "tool_calls": function_calls(content)}
    elif turn.get("role") is not None:
        speaker, content = turn.get("role"), turn.get("content")
        if not isinstance(speaker, str) or not speaker.strip():
            raise _Drop("malformed turn")
        role = _ROLE_MAP.get(speaker.strip().lower(), speaker)
        # OpenAI uses content=None for assistant turns that only carry tool calls.
        content = "" if content is None else content
        calls = tool_calls(turn.get("tool_calls")) if with_tools else None
        if calls:
            text = _as_text(content)
            if text is None:
                raise _Drop("malformed turn")
            return {"role": role, "content": text, "tool_calls": calls}
    else:
        raise _Drop("malformed turn")
    text = _as_text(content)
    if text is None:
        raise _Drop("malformed turn")
    return {"role": role, "content": text}


def _require_assistant(messages: list[Message]) -> list[Message]:
    if not any(m["role"] == "assistant" and (m["content"].strip() or m.get("tool_calls")) for m in messages):
        raise _Drop("no assistant turn")
    return messages


def _turns(value: Any, with_tools: bool = False) -> list[Message]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise _Drop("malformed turn")
    return [_normalize_turn(turn, with_tools) for turn in value]


def _chosen_text(chosen: Any) -> str:
    if isinstance(chosen, dict):
        value = chosen.get("value") if chosen.get("value") is not None else chosen.get("content")
    else:
        value = chosen
    return (_as_text(value) or "").strip()


def _sharegpt_row(row: dict[str, Any], with_tools: bool = False) -> list[Message]:
    messages = _turns(row.get("conversations"), with_tools)
    system = (_as_text(row.get("system")) or "").strip()
    # A system turn inside the conversation wins: it is more specific than a dataset-wide column.
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
    if "chosen" in row:
        # Preference data: SFT on the preferred response; `rejected` is deliberately ignored.
        chosen = _chosen_text(row["chosen"])
        if not chosen:
            raise _Drop("empty response")
        messages.append({"role": "assistant", "content": chosen})
    return _require_assistant(messages)


def _messages_row(row: dict[str, Any], with_tools: bool = False) -> list[Message]:
    return _require_assistant(_turns(row.get("messages"), with_tools))


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple)):
        return not any(isinstance(m, dict) and (_as_text(m.get("content")) or "").strip() for m in value)
    return False


def _alpaca_batch(batch: dict[str, list]) -> dict[str, list]:
    """Alpaca / LLaMA-Factory rows (instruction, input, output, system?, history?) -> ``messages``."""
    return _convert_rows(batch, "messages", _alpaca_row)


def _sharegpt_batch(batch: dict[str, list]) -> dict[str, list]:
    """ShareGPT rows (conversations, system?, chosen?) -> ``messages``."""
    return _convert_rows(batch, "messages", _sharegpt_row)


def _messages_batch(batch: dict[str, list]) -> dict[str, list]:
    """OpenAI-style ``messages`` rows -> uniform ``messages`` (role and content only, both str)."""
    return _convert_rows(batch, "messages", _messages_row)


def _prompt_completion_batch(batch: dict[str, list]) -> dict[str, list]:
    """Prompt-completion rows, kept as they are; rows with nothing to learn from are marked for dropping."""
    reasons: list[str | None] = []
    for prompt, completion in zip(batch["prompt"], batch["completion"], strict=True):
        if prompt is None:
            reasons.append("missing prompt")
        elif _is_empty(completion):
            reasons.append("empty response")
        else:
            reasons.append(None)
    return {"prompt": list(batch["prompt"]), "completion": list(batch["completion"]), _DROP: reasons}


def _text_batch(batch: dict[str, list], text_field: str = "text") -> dict[str, list]:
    """Raw-text rows -> ``text``; empty or non-string cells are marked for dropping."""
    texts: list[str | None] = []
    reasons: list[str | None] = []
    for value in batch[text_field]:
        text = value if isinstance(value, str) else None
        if text is None or not text.strip():
            texts.append(None)
            reasons.append("empty text")
        else:
            texts.append(text)
            reasons.append(None)
    return {"text": texts, _DROP: reasons}


def _keep_batch(reasons: list[str | None]) -> list[bool]:
    return [reason is None for reason in reasons]
