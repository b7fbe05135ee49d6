"""The feedback store against real databases: a SQLite file and a PostgreSQL server (see conftest's store_url).
Every check reads back through a fresh connection of its own, as another process (or replica) would."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from llm_recipes.errors import UserError
from llm_recipes.serving.feedback import FeedbackError, parse_feedback
from llm_recipes.serving.store import (
    FeedbackItem,
    FeedbackStore,
    RecentResponses,
    ResponseRecord,
    UnknownResponse,
    database_url,
    utc_now,
)

MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]


def read(url: str, query: str) -> list[tuple]:
    """Rows as a separate connection sees them: only what was committed."""
    engine = create_engine(database_url(url))
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


def answer(response_id: str, version: str = "v1", age: timedelta = timedelta(0), text: str = "5") -> ResponseRecord:
    return ResponseRecord(
        response_id, version, utc_now() - age, MESSAGES, answer=text, latency_ms=12.5, completion_tokens=1
    )


def test_a_conversation_is_stored_only_once_feedback_names_it(store_url):
    store = FeedbackStore(store_url, RecentResponses(10))
    store.record_response(answer("a"), with_text=False)
    assert read(store_url, "SELECT id, version, messages, answer, completion_tokens FROM responses") == [
        ("a", "v1", None, None, 1)
    ]
    ids = store.add_feedback([FeedbackItem("a", "rating", "up")])
    assert ids == [(ids[0][0], "v1")]
    assert read(store_url, "SELECT messages, answer FROM responses") == [(json.dumps(MESSAGES), "5")]
    assert read(store_url, "SELECT response_id, kind, value FROM feedback") == [("a", "rating", "up")]
    store.close()


def test_logged_conversations_are_stored_with_their_answer(store_url):
    store = FeedbackStore(store_url)
    store.record_response(answer("a", text="five"), with_text=True)
    assert read(store_url, "SELECT messages, answer FROM responses") == [(json.dumps(MESSAGES), "five")]
    store.close()


def test_every_kind_of_feedback_and_an_ab_pair(store_url):
    store = FeedbackStore(store_url, RecentResponses(10))
    store.record_response(answer("a", "v1", text="5"), with_text=False)
    store.record_response(answer("b", "v2", text="6"), with_text=False)
    stored = store.add_feedback(
        [
            FeedbackItem("a", "choice", "a", other_response_id="b"),
            FeedbackItem("b", "edit", "2 + 3 = 5"),
            FeedbackItem("b", "comment", "wrong sum"),
            FeedbackItem("b", "rating", "down"),
        ]
    )
    assert [version for _, version in stored] == ["v1", "v2", "v2", "v2"]
    rows = read(store_url, "SELECT response_id, kind, value, other_response_id FROM feedback ORDER BY id")
    assert rows == [
        ("a", "choice", "a", "b"),
        ("b", "edit", "2 + 3 = 5", None),
        ("b", "comment", "wrong sum", None),
        ("b", "rating", "down", None),
    ]
    # both answers of the pair are kept with their text: the pair is usable as preference data
    assert read(store_url, "SELECT id, answer FROM responses ORDER BY id") == [("a", "5"), ("b", "6")]
    store.close()


def test_feedback_naming_an_unknown_response_stores_nothing(store_url):
    store = FeedbackStore(store_url)
    store.record_response(answer("a"), with_text=False)
    with pytest.raises(UnknownResponse, match="'nope'"):
        store.add_feedback([FeedbackItem("a", "rating", "up"), FeedbackItem("a", "choice", "a", "nope")])
    assert read(store_url, "SELECT count(*) FROM feedback") == [(0,)]  # all or nothing
    store.close()


def test_feedback_on_another_replicas_answer_lands_without_its_text(store_url):
    """Two servers on one database: each remembers only its own conversations."""
    first, second = FeedbackStore(store_url, RecentResponses(10)), FeedbackStore(store_url, RecentResponses(10))
    first.record_response(answer("a"), with_text=False)
    second.add_feedback([FeedbackItem("a", "rating", "up")])
    assert read(store_url, "SELECT answer FROM responses") == [(None,)]
    first.add_feedback([FeedbackItem("a", "comment", "good")])  # the replica that answered fills it in
    assert read(store_url, "SELECT answer FROM responses") == [("5",)]
    first.close()
    second.close()


def test_concurrent_writers_lose_nothing(store_url):
    """Four threads on two store objects (two replicas) write 80 answers and 80 ratings; every one is there."""
    stores = [FeedbackStore(store_url), FeedbackStore(store_url)]
    errors = []

    def write(worker: int) -> None:
        try:
            for index in range(20):
                response_id = f"w{worker}-{index}"
                stores[worker % 2].record_response(answer(response_id), with_text=False)
                stores[(worker + 1) % 2].add_feedback([FeedbackItem(response_id, "rating", "up")])
        except Exception as err:  # surfaced below: an assertion in a thread would be lost
            errors.append(err)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert read(store_url, "SELECT count(*) FROM responses") == [(80,)]
    assert read(store_url, "SELECT count(DISTINCT response_id) FROM feedback") == [(80,)]
    for store in stores:
        store.close()


def test_retention_deletes_old_responses_and_the_feedback_on_them(store_url):
    store = FeedbackStore(store_url)
    store.record_response(answer("old", age=timedelta(days=40)), with_text=True)
    store.record_response(answer("older", age=timedelta(days=90)), with_text=False)
    store.record_response(answer("new", age=timedelta(days=1)), with_text=True)
    store.add_feedback([FeedbackItem("old", "rating", "down"), FeedbackItem("new", "choice", "new", "older")])
    store.add_feedback([FeedbackItem("new", "rating", "up")])
    assert store.delete_older_than(utc_now() - timedelta(days=30)) == (2, 2)
    assert read(store_url, "SELECT id FROM responses") == [("new",)]
    assert read(store_url, "SELECT response_id, kind FROM feedback") == [("new", "rating")]
    assert store.delete_older_than(utc_now() - timedelta(days=30)) == (0, 0)
    store.close()


def test_a_sqlite_store_runs_in_wal_mode(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    store = FeedbackStore(url)
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    store.close()


def test_database_urls():
    assert database_url("postgresql://me:secret@db/feedback").drivername == "postgresql+psycopg"
    assert database_url("postgres://me@db/feedback").drivername == "postgresql+psycopg"
    assert database_url("sqlite:///feedback.db").database == "feedback.db"
    with pytest.raises(UserError, match="db: mysql is not supported"):
        database_url("mysql://me@db/feedback")
    with pytest.raises(UserError, match="not a database URL") as caught:
        database_url("secret-password@nowhere")
    assert "secret" not in str(caught.value)  # a URL may hold a password: never repeated back


def test_an_unreachable_server_is_one_line_without_the_password():
    with pytest.raises(UserError, match="cannot open the feedback store") as caught:
        FeedbackStore("postgresql://me:hunter2@127.0.0.1:1/feedback")
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


def test_recent_responses_forget_the_oldest():
    recent = RecentResponses(2)
    for response_id in ("a", "b", "c"):
        recent.remember(answer(response_id))
    assert (recent.get("a"), recent.get("b").id, recent.get("c").id, len(recent)) == (None, "b", "c", 2)
    off = RecentResponses(0)
    off.remember(answer("a"))
    assert off.get("a") is None


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ([1], 422, "must be a JSON object"),
        ({"rating": "up"}, 422, "response_id is required"),
        ({"response_id": "a"}, 422, "no feedback given"),
        ({"response_id": "a", "rating": "sideways"}, 422, "rating must be 'up' or 'down'"),
        ({"response_id": "a", "stars": 5}, 422, "unknown field 'stars'"),
        ({"response_id": "a", "preferred_over": "a"}, 422, "needs two answers"),
        ({"response_id": "a", "comment": "  "}, 422, "comment must be a non-empty string"),
        ({"response_id": "a", "edit": "x" * 101}, 413, "edit has 101 characters; at most 100"),
    ],
)
def test_bad_feedback_bodies_are_refused(body, status, message):
    with pytest.raises(FeedbackError, match=message) as caught:
        parse_feedback(body, max_chars=100)
    assert caught.value.status == status


def test_one_body_may_carry_several_kinds():
    items = parse_feedback({"response_id": "a", "rating": "down", "comment": "too long", "preferred_over": "b"}, 100)
    assert [(i.kind, i.value, i.other_response_id) for i in items] == [
        ("rating", "down", None),
        ("choice", "a", "b"),
        ("comment", "too long", None),
    ]
