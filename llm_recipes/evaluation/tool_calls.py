"""Tool calls measured: does a model answer a request with a call in its template's form, to the right tool, with
the right arguments?

Each request is a row with ``messages`` (the conversation so far), ``tools`` (the schemas, bare or wrapped as
``{"type": "function", "function": ...}``) and ``expected`` (``{"name", "arguments"}``), as
``configs/demo/data/heldout/tool_requests.jsonl`` holds them (written by `llm_recipes.data.tool_demo`). The
prompt is rendered by the tokenizer's chat template with the tools, the reply generated greedily, and the calls
read back with `llm_recipes.models.chat.parse_tool_calls` (our ChatML's ``<tool_call>`` JSON). Four rates, each
counting only the replies that passed the one before:

- ``call parsed``: the reply holds exactly one call, JSON with a name and an arguments object;
- ``right tool``: it names the expected function;
- ``argument names``: its arguments have exactly the expected names (the structure the schema asks for);
- ``exact arguments``: and the expected values (numbers compare as numbers: 50 equals 50.0).

Prompts are never truncated (a cut prompt loses its tools); generation is greedy, so two models compare on their
most likely calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_recipes.data.tools import tool_schemas
from llm_recipes.errors import UserError
from llm_recipes.evaluation.loading import model_device
from llm_recipes.models.chat import parse_tool_calls

__all__ = ["ToolCallScores", "evaluate_tool_calls", "generate_tool_replies", "read_tool_requests", "score_tool_calls"]

RATES = ("call parsed", "right tool", "argument names", "exact arguments")


@dataclass
class ToolCallScores:
    """How many replies reached each level (`RATES`), out of `total`, and the replies that missed, for reading."""

    total: int
    counts: dict[str, int]
    misses: list[tuple[str, str]] = field(default_factory=list)  # (the level it missed, the reply)

    def rates(self) -> dict[str, float]:
        return {name: self.counts[name] / self.total if self.total else 0.0 for name in RATES}

    def describe(self) -> str:
        return ", ".join(f"{name} {self.counts[name]}/{self.total} ({rate:.3f})" for name, rate in self.rates().items())


def read_tool_requests(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file with ``messages``, ``tools`` and ``expected`` (see the module docstring)."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [key for key in ("messages", "tools", "expected") if key not in row]
        if missing:
            raise UserError(f"{path}, line {number}: a tool request needs {', '.join(missing)}")
        rows.append(row)
    return rows


def _same(value: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected
    if isinstance(expected, (int, float)) and isinstance(value, (int, float)):
        return float(value) == float(expected)
    if isinstance(expected, dict) and isinstance(value, dict):
        return value.keys() == expected.keys() and all(_same(value[key], expected[key]) for key in expected)
    if isinstance(expected, list) and isinstance(value, list):
        return len(value) == len(expected) and all(_same(a, b) for a, b in zip(value, expected, strict=True))
    return value == expected


def score_tool_calls(replies: Sequence[str], expected: Sequence[dict[str, Any]]) -> ToolCallScores:
    """Each reply against its expected call ``{"name", "arguments"}``."""
    counts = dict.fromkeys(RATES, 0)
    misses = []
    for reply, want in zip(replies, expected, strict=True):
        calls = parse_tool_calls(reply)
        call = calls[0]["function"] if len(calls) == 1 else None
        reached = [
            call is not None,
            call is not None and call["name"] == want["name"],
            call is not None and call["arguments"].keys() == want["arguments"].keys(),
            call is not None and _same(call["arguments"], want["arguments"]),
        ]
        for name, ok in zip(RATES, reached, strict=True):
            if not ok:
                misses.append((name, reply))
                break
            counts[name] += 1
    return ToolCallScores(total=len(replies), counts=counts, misses=misses)


def generate_tool_replies(
    model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], *, max_new_tokens: int = 160, batch_size: int = 16
) -> list[str]:
    """Greedy replies to each row's messages, the tools rendered by the chat template; special tokens dropped."""
    if not tokenizer.chat_template:
        raise UserError("the tokenizer has no chat template: tool calls need one that renders tools")
    device = model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    replies: list[str] = []
    for begin in range(0, len(rows), batch_size):
        encoded = [
            tokenizer.apply_chat_template(
                row["messages"],
                tools=tool_schemas(row["tools"]),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
            )["input_ids"]
            for row in rows[begin : begin + batch_size]
        ]
        width = max(len(ids) for ids in encoded)
        # left padding: every prompt ends where its reply begins
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded], device=device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad_id,
            )
        replies += tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return replies


def evaluate_tool_calls(
    model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], *, max_new_tokens: int = 160, batch_size: int = 16
) -> tuple[ToolCallScores, list[str]]:
    """(the scores, the replies) of `model` on tool requests."""
    replies = generate_tool_replies(model, tokenizer, rows, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return score_tool_calls(replies, [row["expected"] for row in rows]), replies
