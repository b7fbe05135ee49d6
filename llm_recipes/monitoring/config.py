"""The monitor stage's arguments."""

from __future__ import annotations

from dataclasses import dataclass, field

from llm_recipes.corpus.filters.language import DEFAULT_LANGUAGE_CANDIDATES
from llm_recipes.errors import UserError
from llm_recipes.serving.store import database_url, parse_time

BUCKETS = ("hour", "day", "week")


@dataclass
class MonitorArguments:
    """A Markdown + PNG report on a feedback store: thumbs-up rate and latency per version, A/B result, drift."""

    db: str | None = field(
        default=None,
        metadata={"help": "The serve stage's feedback store: sqlite:///FILE or postgresql://USER@HOST/DB (only read)."},
    )
    output_dir: str = field(default="monitor_report", metadata={"help": "Where the report goes (replaced whole)."})
    training_data: str | None = field(
        default=None,
        metadata={
            "help": "The training data to measure prompt drift against (a file, folder or saved dataset with "
            "`messages`, `prompt` or `text`); unset: no drift section."
        },
    )
    training_split: str = field(default="train", metadata={"help": "Split of training_data to read."})
    max_training_prompts: int = field(
        default=20_000, metadata={"help": "Most training prompts read for the drift figures (the first ones)."}
    )
    since: str | None = field(default=None, metadata={"help": "Only answers from this ISO date/time on (UTC)."})
    until: str | None = field(default=None, metadata={"help": "Only answers before this ISO date/time (UTC)."})
    bucket: str = field(default="day", metadata={"help": "Time bucket of the over-time figures.", "choices": BUCKETS})
    baseline: str | None = field(
        default=None,
        metadata={"help": "The version the others are compared with in the A/B result; default: the most answered."},
    )
    ngram: int = field(default=3, metadata={"help": "Word n-gram size of the training-data coverage figure."})
    languages: list[str] = field(
        default_factory=lambda: list(DEFAULT_LANGUAGE_CANDIDATES),
        metadata={"help": "Candidate languages (ISO 639-1) of the language mix."},
    )


def check_monitor_arguments(args: MonitorArguments) -> None:
    if not args.db:
        raise UserError("db is required: the serve stage's feedback store, e.g. --db sqlite:///feedback.db")
    database_url(args.db)  # a malformed URL or an unsupported database fails here
    since, until = parse_time(args.since, "since"), parse_time(args.until, "until")
    if since and until and since >= until:
        raise UserError(f"since ({args.since}) must be before until ({args.until})")
    if args.ngram < 1:
        raise UserError(f"ngram must be at least 1, got {args.ngram}")
    if args.max_training_prompts < 1:
        raise UserError(f"max_training_prompts must be at least 1, got {args.max_training_prompts}")
