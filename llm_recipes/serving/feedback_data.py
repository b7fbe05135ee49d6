"""Feedback -> training data: the serve stage's feedback store read back as KTO, DPO and SFT rows.

    rating (up/down)              -> KTO   {prompt, completion: the answer, label: up}
    choice (A preferred over B)   -> DPO   {prompt, chosen: A's answer, rejected: B's answer}  (same prompt only)
    edit                          -> DPO   {prompt, chosen: the edit, rejected: the original answer}
                                     SFT   {messages: prompt + the edit}
    comment                       -> counted in the report, no row

Rows are conversational (message lists), the shapes `data/unpaired.py`, `data/preferences.py` and `data/formats.py`
read as they are. The prompt is the request's messages (`developer` read as `system`, text parts joined); a
conversation with tool calls, tool results or non-text parts is dropped and counted: the tool shape is its own.

Decisions, each counted in the report:

* conflicting ratings: with no user id in the store, an answer rated both up and down cannot be told apart as a
  correction or a disagreement, so all its ratings are dropped (an unclear label hurts KTO more than a missing one);
  agreeing ratings become one row (the repeats are exact duplicates);
* feedback on an answer whose text was not stored (another replica answered it, or it was forgotten before the
  feedback came) cannot become a row: dropped, by reason;
* PII: every prompt turn, answer and edit goes through the corpus stage's `redact_pii` (one implementation) before
  anything is compared or written;
* exact duplicates: rows equal after redaction are written once per file.

Filters: `versions` (the version of the answer the feedback is about: the chosen one for a choice), `since` and
`until` (the time the feedback was given, in UTC; since inclusive, until exclusive). The store is read, never
written: a URL naming no store is an error, not a new empty database.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from llm_recipes.corpus.pii import PII_KINDS, redact_pii
from llm_recipes.errors import UserError
from llm_recipes.serving.store import FeedbackRow, ResponseRow, as_utc, database_url, parse_time

FORMATS = ("kto", "dpo", "sft")
Message = dict[str, str]


@dataclass
class FeedbackToDataArguments:
    """The feedback store read back as KTO, DPO and SFT training files."""

    db: str = field(
        default="sqlite:///feedback.db",
        metadata={"help": "The feedback store the serve stage wrote: sqlite:///FILE or postgresql://USER@HOST/DB."},
    )
    output_dir: str = field(
        default="outputs/feedback_data",
        metadata={"help": "Where kto.jsonl, dpo.jsonl, sft.jsonl, report.json and report.md are written."},
    )
    versions: list[str] | None = field(
        default=None, metadata={"help": "Only feedback on answers of these versions; unset: all."}
    )
    since: str | None = field(
        default=None, metadata={"help": "Only feedback given at or after this time (ISO 8601, UTC unless it says)."}
    )
    until: str | None = field(
        default=None, metadata={"help": "Only feedback given before this time (ISO 8601, UTC unless it says)."}
    )
    formats: list[str] = field(
        default_factory=lambda: list(FORMATS),
        metadata={"help": "Which files to write, of kto, dpo and sft (a file with no rows is not written)."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace an output_dir that holds files no stage wrote."}
    )


def check_feedback_to_data_arguments(args: FeedbackToDataArguments) -> None:
    unknown = sorted(set(args.formats) - set(FORMATS))
    if unknown or not args.formats:
        raise UserError(f"formats: {unknown[0] if unknown else 'none given'}; choose from {', '.join(FORMATS)}")
    since, until = parse_time(args.since, "since"), parse_time(args.until, "until")
    if since and until and since >= until:
        raise UserError(f"since ({args.since}) must be before until ({args.until})")
    database_url(args.db)  # a malformed URL or an unsupported database fails here


@dataclass
class StoredFeedback:
    kind: str
    value: str
    response_id: str
    other_response_id: str | None
    created_at: datetime


@dataclass
class StoredResponse:
    version: str
    messages: list[Any] | None
    answer: str | None


def read_store(engine: Engine) -> tuple[list[StoredFeedback], dict[str, StoredResponse]]:
    """All feedback, oldest first, and the responses it names (with their text where it was stored)."""
    named = or_(
        ResponseRow.id.in_(select(FeedbackRow.response_id)), ResponseRow.id.in_(select(FeedbackRow.other_response_id))
    )
    with Session(engine) as session:
        feedback = [
            StoredFeedback(row.kind, row.value, row.response_id, row.other_response_id, as_utc(row.created_at))
            for row in session.scalars(select(FeedbackRow).order_by(FeedbackRow.created_at, FeedbackRow.id))
        ]
        responses = {
            row.id: StoredResponse(row.version, json.loads(row.messages) if row.messages else None, row.answer)
            for row in session.scalars(select(ResponseRow).where(named))
        }
    return feedback, responses


class _Skip(Exception):
    """This feedback cannot become a row; the message is the reason counted in the report."""


def prompt_turns(messages: list[Any]) -> list[Message]:
    """The request's messages as plain {role, content} turns ending with the user's, or _Skip."""
    turns = []
    for message in messages:
        if message.get("role") == "tool" or message.get("tool_calls"):
            raise _Skip("tool calls in the conversation")
        content = message.get("content")
        if isinstance(content, list):
            if any(part.get("type") != "text" for part in content):
                raise _Skip("non-text content in the conversation")
            content = "\n".join(str(part.get("text", "")) for part in content)
        role = "system" if message.get("role") == "developer" else message.get("role")
        turns.append({"role": role, "content": content or ""})
    if not turns or turns[-1]["role"] != "user":
        raise _Skip("the conversation does not end with a user turn")
    return turns


@dataclass
class FeedbackData:
    """The rows for each format, and the counts the report shows."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {name: [] for name in FORMATS})
    feedback_read: int = 0
    filtered_out: int = 0
    by_kind: Counter = field(default_factory=Counter)
    by_version: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    rows_by_source: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    rows_by_version: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    dropped: Counter = field(default_factory=Counter)
    duplicates: Counter = field(default_factory=Counter)
    redactions: Counter = field(default_factory=Counter)
    comments: int = 0

    def report(self, formats: list[str], filters: dict[str, Any]) -> dict[str, Any]:
        kto = self.rows["kto"]
        return {
            "filters": filters,
            "feedback": {
                "read": self.feedback_read,
                "outside_filters": self.filtered_out,
                "selected": self.feedback_read - self.filtered_out,
                "by_kind": dict(sorted(self.by_kind.items())),
                "by_version": {v: dict(sorted(c.items())) for v, c in sorted(self.by_version.items())},
                "comments": self.comments,
            },
            "rows": {name: len(self.rows[name]) for name in formats},
            "rows_by_source": _written(self.rows_by_source, formats),
            "rows_by_version": _written(self.rows_by_version, formats),
            "kto_labels": {"true": sum(r["label"] for r in kto), "false": sum(not r["label"] for r in kto)},
            "dropped": dict(sorted(self.dropped.items(), key=lambda item: (-item[1], item[0]))),
            "duplicates": {name: self.duplicates[name] for name in formats},
            "pii_redactions": {kind: self.redactions[kind] for kind in PII_KINDS},
        }


def _written(table: dict[str, Counter], formats: list[str]) -> dict[str, dict[str, int]]:
    """{source or version: {format: rows}} for the formats written, without the empty entries."""
    kept = {key: {name: n for name, n in sorted(counts.items()) if name in formats} for key, counts in table.items()}
    return {key: counts for key, counts in sorted(kept.items()) if counts}


class _Redactor:
    """Each stored text redacted once (an answer rated and edited is not counted twice)."""

    def __init__(self, responses: dict[str, StoredResponse], counts: Counter):
        self.responses = responses
        self.counts = counts
        self.cache: dict[str, tuple[list[Message], str]] = {}

    def text(self, text: str) -> str:
        redacted, found = redact_pii(text)
        self.counts.update(found)
        return redacted

    def conversation(self, response_id: str) -> tuple[list[Message], str]:
        """(prompt turns, answer) of a response, redacted; _Skip when it has no usable text."""
        if response_id not in self.cache:
            stored = self.responses[response_id]
            if stored.messages is None or stored.answer is None:
                raise _Skip("the answer's text was not stored")
            turns = prompt_turns(stored.messages)
            if not stored.answer.strip():
                raise _Skip("empty answer")
            prompt = [{"role": t["role"], "content": self.text(t["content"])} for t in turns]
            self.cache[response_id] = (prompt, self.text(stored.answer))
        return self.cache[response_id]


def _assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def build_rows(
    feedback: list[StoredFeedback],
    responses: dict[str, StoredResponse],
    *,
    versions: list[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> FeedbackData:
    """Feedback -> KTO, DPO and SFT rows (see the module docstring), redacted and without exact duplicates."""
    data = FeedbackData(feedback_read=len(feedback))
    # the store's foreign keys keep every named answer; a database edited by hand may not (then: no text to use)
    named = {i.response_id for i in feedback} | {i.other_response_id for i in feedback if i.other_response_id}
    responses = {**{key: StoredResponse("unknown", None, None) for key in named - responses.keys()}, **responses}
    selected = []
    for item in feedback:
        version = responses[item.response_id].version
        inside = (not versions or version in versions) and (not since or item.created_at >= since)
        if inside and (not until or item.created_at < until):
            selected.append(item)
            data.by_kind[item.kind] += 1
            data.by_version[version][item.kind] += 1
        else:
            data.filtered_out += 1
    ratings: dict[str, set[str]] = defaultdict(set)
    for item in selected:
        if item.kind == "rating":
            ratings[item.response_id].add(item.value)

    redactor = _Redactor(responses, data.redactions)
    seen: dict[str, set[str]] = {name: set() for name in FORMATS}

    def add(name: str, row: dict[str, Any], source: str, version: str) -> None:
        key = json.dumps(row, sort_keys=True, ensure_ascii=False)
        if key in seen[name]:
            data.duplicates[name] += 1
            return
        seen[name].add(key)
        data.rows[name].append(row)
        data.rows_by_source[source][name] += 1
        data.rows_by_version[version][name] += 1

    for item in selected:
        version = responses[item.response_id].version
        try:
            if item.kind == "comment":
                data.comments += 1
            elif item.kind == "rating":
                if len(ratings[item.response_id]) > 1:
                    raise _Skip("conflicting ratings (up and down on one answer)")
                prompt, answer = redactor.conversation(item.response_id)
                row = {"prompt": prompt, "completion": _assistant(answer), "label": item.value == "up"}
                add("kto", row, "rating", version)
            elif item.kind == "choice":
                prompt, chosen = redactor.conversation(item.response_id)
                other_prompt, rejected = redactor.conversation(item.other_response_id)
                if other_prompt != prompt:
                    raise _Skip("a choice between answers to different prompts")
                if chosen == rejected:
                    raise _Skip("the same answer on both sides")
                add(
                    "dpo",
                    {"prompt": prompt, "chosen": _assistant(chosen), "rejected": _assistant(rejected)},
                    "choice",
                    version,
                )
            elif item.kind == "edit":
                prompt, answer = redactor.conversation(item.response_id)
                edited = redactor.text(item.value)
                if edited.strip() == answer.strip():
                    raise _Skip("the edit equals the answer")
                add(
                    "dpo",
                    {"prompt": prompt, "chosen": _assistant(edited), "rejected": _assistant(answer)},
                    "edit",
                    version,
                )
                add("sft", {"messages": [*prompt, *_assistant(edited)]}, "edit", version)
            else:
                raise _Skip(f"unknown feedback kind {item.kind!r}")
        except _Skip as skip:
            data.dropped[str(skip)] += 1
    return data


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def report_markdown(report: dict[str, Any]) -> str:
    """report.json as a page a person reads."""
    feedback = report["feedback"]
    lines = ["# Feedback to training data", ""]
    shown = {k: ", ".join(v) if isinstance(v, list) else v for k, v in report["filters"].items() if v}
    filters = "; ".join(f"{k}: {v}" for k, v in shown.items()) or "none"
    lines += [f"Filters: {filters}.", ""]
    lines += [
        f"Feedback read: {feedback['read']}, outside the filters: {feedback['outside_filters']}, "
        f"selected: {feedback['selected']} (comments: {feedback['comments']}, reported only).",
        "",
        "| version | " + " | ".join(("rating", "choice", "edit", "comment")) + " |",
        "|---|---:|---:|---:|---:|",
    ]
    for version, kinds in feedback["by_version"].items():
        lines.append(
            f"| {version} | " + " | ".join(str(kinds.get(k, 0)) for k in ("rating", "choice", "edit", "comment")) + " |"
        )
    formats = list(report["rows"])
    lines += ["", "Rows written:", "", "| | " + " | ".join(formats) + " |", "|---|" + "---:|" * len(formats)]
    lines.append("| total | " + " | ".join(str(report["rows"][f]) for f in formats) + " |")
    for label, table in (("source", report["rows_by_source"]), ("version", report["rows_by_version"])):
        for name, counts in table.items():
            lines.append(f"| {label} {name} | " + " | ".join(str(counts.get(f, 0)) for f in formats) + " |")
    lines.append("| duplicates removed | " + " | ".join(str(report["duplicates"][f]) for f in formats) + " |")
    labels = report["kto_labels"]
    lines += ["", f"KTO labels: {labels['true']} true, {labels['false']} false."]
    redactions = ", ".join(f"{kind} {n}" for kind, n in report["pii_redactions"].items())
    lines += [f"PII redacted: {redactions}.", ""]
    if report["dropped"]:
        lines += ["Feedback dropped:", ""] + [f"- {reason}: {n}" for reason, n in report["dropped"].items()]
    else:
        lines.append("Feedback dropped: none.")
    return "\n".join(lines) + "\n"
