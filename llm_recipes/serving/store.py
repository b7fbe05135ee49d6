"""The feedback store: every response's id and version, and the feedback on them, in a real database.

SQLAlchemy, so one schema serves an embedded SQLite file (the default: nothing to start) and a PostgreSQL server
(several server replicas writing to one place). Two tables:

    responses  one row per answer, written when it completes: id (the OpenAI `id`), version, time, latency, token
               counts; the conversation itself (messages, answer) only when `log_conversations` is on, or once
               feedback names the response
    feedback   one row per piece of feedback: the response it is about, its kind (rating, choice, edit, comment),
               its value (up/down, the edited answer, the comment; for a choice, the chosen answer's id), and for
               a choice the other answer (`other_response_id`), so an A/B pair is one row

Conversations are not logged by default, yet feedback must be able to keep the conversation it judges. So the
server keeps the last `remember_responses` conversations in memory (`RecentResponses`, a bounded LRU) and, when
feedback arrives for one, stores it with the feedback in the same transaction. Feedback on a response answered by
another replica (or forgotten) still lands, on the response's row, without its text.

Nothing acknowledged is lost: each write is committed before the server answers 2xx; SQLite runs in WAL mode with
synchronous=FULL (a committed write survives a power cut, not only a crash of the server).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    delete,
    event,
    inspect,
    or_,
    select,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from llm_recipes.errors import UserError, one_line

FEEDBACK_KINDS = ("rating", "choice", "edit", "comment")
DATABASES = ("sqlite", "postgresql")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class ResponseRow(Base):
    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    # the conversation: only with log_conversations, or once feedback names the response
    messages: Mapped[str | None] = mapped_column(Text)  # the request's messages, JSON
    answer: Mapped[str | None] = mapped_column(Text)


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    response_id: Mapped[str] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # rating, choice, edit, comment
    value: Mapped[str] = mapped_column(Text)  # up/down; the chosen response's id; the edited answer; the comment
    other_response_id: Mapped[str | None] = mapped_column(ForeignKey("responses.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


@dataclass
class ResponseRecord:
    """One answer, as the server saw it."""

    id: str
    version: str
    created_at: datetime
    messages: list[dict[str, Any]]
    answer: str = ""
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None

    def row(self, with_text: bool) -> ResponseRow:
        return ResponseRow(
            id=self.id,
            version=self.version,
            created_at=self.created_at,
            latency_ms=self.latency_ms,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            finish_reason=self.finish_reason,
            messages=json.dumps(self.messages, ensure_ascii=False) if with_text else None,
            answer=self.answer if with_text else None,
        )


@dataclass
class FeedbackItem:
    """One piece of feedback on `response_id` (for a choice: `response_id` was preferred over `other_response_id`)."""

    response_id: str
    kind: str
    value: str
    other_response_id: str | None = None
    created_at: datetime = field(default_factory=utc_now)


class UnknownResponse(LookupError):
    """Feedback names a response id the store has no row for (404 for its client)."""


class RecentResponses:
    """The last `capacity` conversations, so feedback can store the one it judges without logging them all."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._records: OrderedDict[str, ResponseRecord] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, record: ResponseRecord) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._records[record.id] = record
            self._records.move_to_end(record.id)
            while len(self._records) > self.capacity:
                self._records.popitem(last=False)

    def get(self, response_id: str) -> ResponseRecord | None:
        with self._lock:
            return self._records.get(response_id)

    def __len__(self) -> int:
        return len(self._records)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; replicas on one machine can share
    cursor.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the 2xx, even in WAL mode
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def database_url(url: URL | str) -> URL:
    """The store's SQLAlchemy URL: PostgreSQL goes through psycopg 3 (the `serve` extra installs it), whatever
    driver-less scheme names it (postgresql://, postgres://)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        example = "sqlite:///feedback.db, postgresql://user@host/db"
        raise UserError(f"db: not a database URL (write e.g. {example})") from None  # it may hold a password
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in DATABASES:
        raise UserError(f"db: {backend} is not supported; use sqlite:///FILE or postgresql://USER@HOST/DB")
    return parsed


def make_engine(url: URL | str) -> Engine:
    engine = create_engine(database_url(url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class FeedbackStore:
    """Responses and feedback in a database (see the module docstring); every method commits before it returns."""

    def __init__(self, url: URL | str, recent: RecentResponses | None = None):
        self.engine = make_engine(url)
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as err:
            where = self.engine.url.render_as_string(hide_password=True)
            reason = one_line(getattr(err, "orig", None) or err)
            raise UserError(f"db: cannot open the feedback store {where}: {reason}") from None
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.recent = recent if recent is not None else RecentResponses(0)

    def record_response(self, record: ResponseRecord, with_text: bool) -> None:
        """A completed answer: its row (with the conversation if `with_text`), and remembered for feedback."""
        self.recent.remember(record)
        with self.sessions.begin() as session:
            session.add(record.row(with_text))

    def add_feedback(self, items: list[FeedbackItem]) -> list[tuple[int, str]]:
        """Feedback rows, in one transaction; the conversations they judge are stored with them (from memory) when
        their rows have none yet. Raises UnknownResponse when an id has no row. Returns each new row's id with the
        version of the response it is about."""
        wanted = {item.response_id for item in items} | {i.other_response_id for i in items if i.other_response_id}
        with self.sessions.begin() as session:
            rows = {row.id: row for row in session.scalars(select(ResponseRow).where(ResponseRow.id.in_(wanted)))}
            missing = sorted(wanted - rows.keys())
            if missing:
                raise UnknownResponse(f"unknown response id {missing[0]!r} (no answer of this server has it)")
            for row in rows.values():
                remembered = self.recent.get(row.id)
                if row.answer is None and remembered is not None:
                    row.messages = json.dumps(remembered.messages, ensure_ascii=False)
                    row.answer = remembered.answer
            added = [
                FeedbackRow(
                    response_id=item.response_id,
                    kind=item.kind,
                    value=item.value,
                    other_response_id=item.other_response_id,
                    created_at=item.created_at,
                )
                for item in items
            ]
            session.add_all(added)
            session.flush()
            return [(row.id, rows[row.response_id].version) for row in added]

    def version_of(self, response_id: str) -> str | None:
        with self.sessions() as session:
            return session.scalar(select(ResponseRow.version).where(ResponseRow.id == response_id))

    def delete_older_than(self, cutoff: datetime) -> tuple[int, int]:
        """Retention: responses created before `cutoff` go, with all the feedback that names them. Returns how many
        (responses, feedback rows) were deleted."""
        old = select(ResponseRow.id).where(ResponseRow.created_at < cutoff)
        with self.sessions.begin() as session:
            # explicit, not ON DELETE CASCADE: SQLite enforces foreign keys only where the pragma is on
            unsynchronized = {"synchronize_session": False}  # nothing of these is loaded in this session
            names_old = or_(FeedbackRow.response_id.in_(old), FeedbackRow.other_response_id.in_(old))
            feedback = session.execute(
                delete(FeedbackRow).where(names_old),
                execution_options=unsynchronized,
            ).rowcount
            responses = session.execute(
                delete(ResponseRow).where(ResponseRow.created_at < cutoff), execution_options=unsynchronized
            ).rowcount
        return responses, feedback

    def session(self) -> Session:
        return self.sessions()

    def close(self) -> None:
        self.engine.dispose()


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 date or time as an aware UTC datetime (a time without a zone is UTC)."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        example = "e.g. 2026-12-01 or 2026-12-01T08:00"
        raise UserError(f"{name}: {value!r} is not an ISO 8601 date or time ({example})") from None
    return as_utc(parsed)


def as_utc(moment: datetime) -> datetime:
    # SQLite hands back the naive UTC times the server stored; PostgreSQL aware ones
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def open_store(url: str) -> Engine:
    """An engine on an existing feedback store; a missing file, an unreachable server or a database without the
    store's tables is one line (nothing is created: a typo must not read, export or report an empty new store)."""
    parsed = database_url(url)
    where = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and (not parsed.database or not Path(parsed.database).is_file()):
        raise UserError(f"db: no feedback store at {where} (the file the serve stage's `db` setting names)")
    engine = make_engine(parsed)
    try:
        tables = set(inspect(engine).get_table_names())
    except SQLAlchemyError as err:
        engine.dispose()
        reason = one_line(getattr(err, "orig", None) or err)
        raise UserError(f"db: cannot open the feedback store {where}: {reason}") from None
    if not {ResponseRow.__tablename__, FeedbackRow.__tablename__} <= tables:
        engine.dispose()
        raise UserError(f"db: {where} is not a feedback store (no responses and feedback tables)")
    return engine
