"""Prompt-only evaluation data: questions without reference answers, which the models answer and a judge grades.

Three shapes are read (the first that fits the columns):

* MT-bench's ``turns``: a list of user messages (strings) the model answers in order -- turn 2 is asked with the
  model's own first answer in the history, as MT-bench does; ``question_id`` and ``category`` are kept, a
  ``system`` column becomes the system turn;
* ``prompt`` without ``completion``: a string (continued as it is, like a prompt/completion prompt), or a message
  list (a conversation whose last turn the model answers);
* ``messages`` where no row has an assistant turn: the user turns are answered in order, each with the earlier
  answers in the history (leading system turns stay in front).

A conversation's judged units are its turns: (the history before the turn, the question, the model's answer), so
a 2-turn MT-bench question is two units, the second judged with the whole conversation in view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llm_recipes.data.formats import FormatReport
from llm_recipes.errors import UserError
from llm_recipes.evaluation.generation import Prompt, generate_responses, prompt_text

Message = dict[str, str]
# the columns that make a dataset prompt-only (in this order), when it has no answers
PROMPT_ONLY_SHAPES = ("turns", "prompt", "messages")


@dataclass
class Conversation:
    """One prompt-only row: fixed context (system turns, or a given history), then the user turns to answer."""

    turns: list[str]
    context: list[Message] = field(default_factory=list)
    chat: bool = True  # False: a plain-text prompt, continued as it is (one turn)
    id: str | None = None  # MT-bench's question_id
    category: str | None = None

    def prompt_at(self, turn: int, answers: Sequence[str]) -> Prompt:
        """What the model reads for `turn`: the context, the earlier turns with its own `answers`, the question."""
        if not self.chat:
            return self.turns[0]
        messages = list(self.context)
        for question, answer in zip(self.turns[:turn], answers[:turn], strict=True):
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return [*messages, {"role": "user", "content": self.turns[turn]}]

    def label(self, index: int) -> str:
        """How errors and reports name the row: its number in the data (1-based) and its id, when it has one."""
        return f"prompt {index + 1}" + (f" (id {self.id})" if self.id is not None else "")


@dataclass
class Unit:
    """One judged answer: a conversation's turn."""

    conversation: int  # index into the data's conversations
    turn: int  # 0-based
    prompt: Prompt  # what the model read: a plain-text prompt, or messages ending with the question
    answer: str

    @property
    def question(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[-1]["content"]

    @property
    def history(self) -> list[Message]:
        """Everything before the question: system turns, earlier turns with this model's own answers."""
        return [] if isinstance(self.prompt, str) else list(self.prompt[:-1])

    @property
    def multi_turn(self) -> bool:
        return any(message["role"] in ("user", "assistant") for message in self.history)


class _Drop(Exception):
    pass


def prompt_only_shape(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str | None:
    """`turns`, `prompt` or `messages` when the data are prompts without answers, else None."""
    present = set(columns)
    if "turns" in present:
        return "turns"
    if "prompt" in present and "completion" not in present:
        return "prompt"
    if "messages" in present and not any(_has_assistant(row.get("messages")) for row in rows):
        return "messages"
    return None


def _has_assistant(messages: Any) -> bool:
    return isinstance(messages, list) and any(
        isinstance(m, dict) and (m.get("role") or m.get("from")) in ("assistant", "gpt") for m in messages
    )


def _text(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("content", value.get("value"))
    if not isinstance(value, str) or not value.strip():
        raise _Drop("empty turn")
    return value


def _message(turn: Any) -> Message:
    if not isinstance(turn, dict):
        raise _Drop("malformed turn")
    role = turn.get("role") or {"human": "user", "gpt": "assistant"}.get(turn.get("from"), turn.get("from"))
    if not isinstance(role, str):
        raise _Drop("malformed turn")
    return {"role": role, "content": _text(turn)}


def _from_messages(messages: Any) -> tuple[list[Message], list[str]]:
    """(context, user turns) of a message list: with assistant turns it is a given history whose last (user) turn
    is answered; without, every user turn is answered in order behind the leading system turns."""
    if not isinstance(messages, list) or not messages:
        raise _Drop("no user turn")
    turns = [_message(turn) for turn in messages]
    if turns[-1]["role"] != "user":
        raise _Drop("ends with an answer")
    if any(message["role"] == "assistant" for message in turns):
        return turns[:-1], [turns[-1]["content"]]
    lead = 0
    while turns[lead]["role"] == "system":
        lead += 1
    if any(message["role"] != "user" for message in turns[lead:]):
        raise _Drop("malformed turn")
    return turns[:lead], [message["content"] for message in turns[lead:]]


def _conversation(row: dict[str, Any], shape: str) -> Conversation:
    ident = row.get("question_id", row.get("id"))
    category = row.get("category")
    meta = {"id": None if ident is None else str(ident), "category": category if isinstance(category, str) else None}
    if shape == "turns":
        turns = row.get("turns")
        if not isinstance(turns, list) or not turns:
            raise _Drop("no turns")
        system = row.get("system")
        context = [{"role": "system", "content": system}] if isinstance(system, str) and system.strip() else []
        return Conversation(turns=[_text(turn) for turn in turns], context=context, **meta)
    value = row.get(shape)
    if shape == "prompt" and isinstance(value, str):
        return Conversation(turns=[_text(value)], chat=False, **meta)
    context, turns = _from_messages(value)
    return Conversation(turns=turns, context=context, **meta)


def read_conversations(
    rows: Sequence[dict[str, Any]], shape: str, path: str
) -> tuple[list[Conversation], FormatReport]:
    """Every usable row as a Conversation, and what was dropped (by reason)."""
    conversations, dropped = [], {}
    for row in rows:
        try:
            conversations.append(_conversation(row, shape))
        except _Drop as reason:
            dropped[str(reason)] = dropped.get(str(reason), 0) + 1
    report = FormatReport(f"prompts ({shape})", len(rows), len(conversations), dropped)
    if not conversations:
        raise UserError(f"dataset '{path}': no usable prompts ({report.describe()})")
    return conversations, report


def conversation_text(conversation: Conversation) -> str:
    """The row as plain text (its context and questions), for tables."""
    return prompt_text([*conversation.context, *({"content": turn} for turn in conversation.turns)])


def answer_conversations(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Conversation],
    *,
    generation_config: Any | None = None,
    batch_size: int = 8,
) -> list[list[str]]:
    """The model's answer to every turn of every conversation: all first turns in batches, then all second turns
    (each with the model's own first answer in its history), and so on."""
    answers: list[list[str]] = [[] for _ in conversations]
    for turn in range(max(len(c.turns) for c in conversations)):
        asked = [i for i, c in enumerate(conversations) if len(c.turns) > turn]
        prompts = [conversations[i].prompt_at(turn, answers[i]) for i in asked]
        replies = generate_responses(
            model, tokenizer, prompts, generation_config=generation_config, batch_size=batch_size
        )
        for i, reply in zip(asked, replies, strict=True):
            answers[i].append(reply)
    return answers


def units_of(conversations: Sequence[Conversation], answers: Sequence[Sequence[str]]) -> list[Unit]:
    """Every answered turn, in order (conversation by conversation, turn by turn)."""
    units = []
    for index, (conversation, replies) in enumerate(zip(conversations, answers, strict=True)):
        for turn, answer in enumerate(replies):
            units.append(Unit(index, turn, conversation.prompt_at(turn, replies), answer))
    return units


def conversations_from_prompts(prompts: Sequence[Prompt]) -> list[Conversation]:
    """Prompts of data with reference answers as one-turn conversations, so a judge can grade their answers too."""
    conversations = []
    for prompt in prompts:
        if isinstance(prompt, str):
            conversations.append(Conversation(turns=[prompt], chat=False))
        else:
            conversations.append(Conversation(turns=[prompt[-1]["content"]], context=list(prompt[:-1])))
    return conversations
