"""Tool-calling data: function calls, their results and the tool schemas, in the shapes people bring -> TRL's.

TRL's standard shape for tool use (what `SFTTrainer` passes to `apply_chat_template`): assistant messages with
``tool_calls`` in the OpenAI shape ``[{"type": "function", "function": {"name": ..., "arguments": {...}}}]``,
``tool`` messages carrying the results, and a ``tools`` column holding the JSON schemas the model may call.
We accept:

* ShareGPT / glaive (LLaMA-Factory's ``glaive_toolcall``): ``function_call`` turns whose value is the JSON of a call
  ``{"name": ..., "arguments": {...}}`` (or a list of them), ``observation`` turns with the result, and a ``tools``
  column holding a JSON list of bare function schemas ``{"name", "description", "parameters"}``;
* OpenAI-style ``messages`` whose assistant turns carry ``tool_calls`` (arguments as an object or a JSON string,
  as the OpenAI API sends them) and a ``tools`` column (a list, or its JSON).

Schemas come out wrapped as ``{"type": "function", "function": schema}`` and arguments as objects, which is what
chat templates (ours, Qwen's, Llama's) expect. Both are stored with `datasets`' ``Json`` feature: as Arrow structs,
every row would get every key any row has (null-filled), and a template would render those nulls into the schema.
Nulls that Arrow already added while reading the file cannot be told from real ones, so null values are dropped
from schemas and arguments.

A cell that is not what it claims (a call that is not JSON, a ``tools`` that is not a JSON list) raises
:class:`ToolFormatError`, whose message is the reason `formats.py` counts the row as dropped under.
"""

from __future__ import annotations

import json
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "TOOL_MESSAGES_FEATURE",
    "TOOLS_FEATURE",
    "ToolFormatError",
    "carries_tools",
    "function_calls",
    "tool_calls",
    "tool_schemas",
    "with_tool_columns",
]

# ShareGPT speakers whose turns are a call (the assistant's) and a call's result
FUNCTION_CALL_SPEAKERS = frozenset({"function_call"})

TOOL_CALLS_FEATURE = datasets.List(
    {"type": datasets.Value("string"), "function": {"name": datasets.Value("string"), "arguments": datasets.Json()}}
)
TOOL_MESSAGES_FEATURE = datasets.List(
    {"role": datasets.Value("string"), "content": datasets.Value("string"), "tool_calls": TOOL_CALLS_FEATURE}
)
TOOLS_FEATURE = datasets.Json()


class ToolFormatError(ValueError):
    """A tool cell that cannot be read; the message is the drop reason (short, the same for every such row)."""


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _loads(value: Any, reason: str) -> Any:
    """A JSON cell's value: strings are parsed, anything else is taken as already parsed."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise ToolFormatError(reason) from None


def tool_schemas(value: Any) -> list[dict] | None:
    """A row's ``tools`` cell -> ``[{"type": "function", "function": schema}, ...]``, or None when it has none.

    An empty list becomes None: some templates (Llama's) render their tool preamble for ``tools=[]``.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    tools = _loads(value, "tools not JSON")
    if not isinstance(tools, list):
        raise ToolFormatError("tools not a JSON list")
    schemas = []
    for tool in tools:
        if not isinstance(tool, dict):
            raise ToolFormatError("tool schema not an object")
        tool = _without_nulls(tool)
        if isinstance(tool.get("function"), dict):
            tool = {"type": tool.get("type", "function"), "function": tool["function"]}
        elif isinstance(tool.get("name"), str):
            tool = {"type": "function", "function": tool}
        else:
            raise ToolFormatError("tool schema without a name")
        schemas.append(tool)
    return schemas or None


def _call(value: Any, reason: str) -> dict:
    """One call, ``{"name", "arguments"}`` or OpenAI's ``{"type", "function": {...}}``, in the OpenAI shape."""
    if not isinstance(value, dict):
        raise ToolFormatError(reason)
    function = value["function"] if isinstance(value.get("function"), dict) else value
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ToolFormatError("tool call without a name")
    arguments = _loads(function.get("arguments"), "tool call arguments not JSON")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ToolFormatError("tool call arguments not a JSON object")
    return {"type": "function", "function": {"name": name, "arguments": _without_nulls(arguments)}}


def function_calls(value: Any) -> list[dict]:
    """A ShareGPT ``function_call`` turn's value (the JSON of one call or of a list of calls) -> ``tool_calls``."""
    calls = _loads(value, "function call not JSON")
    calls = calls if isinstance(calls, list) else [calls]
    if not calls:
        raise ToolFormatError("function call not JSON")
    return [_call(call, "function call not JSON") for call in calls]


def tool_calls(value: Any) -> list[dict] | None:
    """An OpenAI-style message's ``tool_calls`` -> the same in the standard shape (None when there are none)."""
    calls = _loads(value, "tool calls not JSON")
    if calls is None or calls == []:
        return None
    if not isinstance(calls, list):
        raise ToolFormatError("tool calls not a JSON list")
    return [_call(call, "tool call not an object") for call in calls]


def carries_tools(dataset: datasets.Dataset, turns_column: str | None) -> bool:
    """Whether the rows hold tool data: a ``tools`` column, turns with a ``tool_calls`` field, or ShareGPT
    ``function_call`` turns. Read from the schema and, for speakers, as Arrow batches of that one column."""
    if "tools" in dataset.column_names:
        return True
    if turns_column is None or turns_column not in dataset.column_names:
        return False
    turn = getattr(dataset.features[turns_column], "feature", None)
    if isinstance(turn, dict):
        if "tool_calls" in turn:
            return True
        if "from" not in turn:
            return False
        speakers = pa.array(sorted(FUNCTION_CALL_SPEAKERS))
        for table in dataset.select_columns([turns_column]).with_format("arrow").iter(batch_size=10_000):
            names = pc.utf8_lower(pc.struct_field(pc.list_flatten(table[turns_column]), "from"))
            if pc.any(pc.is_in(names, value_set=speakers)).as_py():
                return True
        return False
    if isinstance(turn, datasets.Json):  # turns of mixed shapes are stored as JSON text: look for the keys
        for table in dataset.select_columns([turns_column]).with_format("arrow").iter(batch_size=10_000):
            turns = pc.list_flatten(table[turns_column]).combine_chunks()
            text = turns.storage if isinstance(turns, pa.ExtensionArray) else turns
            for needle in ('"tool_calls"', '"function_call"'):
                if pc.any(pc.match_substring(text, needle)).as_py():
                    return True
    return False


def with_tool_columns(dataset: datasets.Dataset) -> datasets.Dataset:
    """A plain ``messages`` dataset in the tool shape (no calls, no tools), so it can be mixed with tool data."""
    if "tools" in dataset.column_names:
        return dataset
    features = datasets.Features({**dataset.features, "messages": TOOL_MESSAGES_FEATURE, "tools": TOOLS_FEATURE})
    return dataset.map(_add_tool_fields, batched=True, features=features, desc="Adding tool columns to plain chats")


def _add_tool_fields(batch: dict[str, list]) -> dict[str, list]:
    messages = [
        None if turns is None else [{**turn, "tool_calls": turn.get("tool_calls")} for turn in turns]
        for turns in batch["messages"]
    ]
    return {**batch, "messages": messages, "tools": [None] * len(messages)}
