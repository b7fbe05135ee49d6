"""`POST /v1/feedback` bodies -> feedback rows, or the 4xx that says what is wrong with them.

    {"response_id": "chatcmpl-...", "rating": "up"}                 thumbs up or down
    {"response_id": "chatcmpl-A", "preferred_over": "chatcmpl-B"}   a choice between two answers (the A/B page)
    {"response_id": "chatcmpl-...", "edit": "a better answer"}      an edited answer
    {"response_id": "chatcmpl-...", "comment": "too long"}          a comment

One body may carry several of them (a rating with a comment); they are stored together or not at all.
"""

from __future__ import annotations

from typing import Any

from llm_recipes.serving.store import FeedbackItem

RATINGS = ("up", "down")
FIELDS = ("rating", "preferred_over", "edit", "comment")


class FeedbackError(ValueError):
    """A feedback body the server refuses: `status` is the HTTP status (422 malformed, 413 too long)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def _text(body: dict[str, Any], name: str, max_chars: int) -> str:
    value = body[name]
    if not isinstance(value, str) or not value.strip():
        raise FeedbackError(f"{name} must be a non-empty string")
    if len(value) > max_chars:
        raise FeedbackError(f"{name} has {len(value)} characters; at most {max_chars} are accepted", status=413)
    return value


def parse_feedback(body: Any, max_chars: int) -> list[FeedbackItem]:
    """The feedback items of a request body; raises FeedbackError."""
    if not isinstance(body, dict):
        raise FeedbackError('the body must be a JSON object such as {"response_id": "...", "rating": "up"}')
    unknown = sorted(set(body) - {"response_id", *FIELDS})
    if unknown:
        raise FeedbackError(f"unknown field {unknown[0]!r} (fields: response_id, {', '.join(FIELDS)})")
    response_id = body.get("response_id")
    if not isinstance(response_id, str) or not response_id:
        raise FeedbackError("response_id is required: the `id` of the chat completion the feedback is about")
    if not any(name in body for name in FIELDS):
        raise FeedbackError(f"no feedback given: send one of {', '.join(FIELDS)}")
    items = []
    if "rating" in body:
        if body["rating"] not in RATINGS:
            raise FeedbackError(f"rating must be 'up' or 'down', got {body['rating']!r}")
        items.append(FeedbackItem(response_id, "rating", body["rating"]))
    if "preferred_over" in body:
        other = body["preferred_over"]
        if not isinstance(other, str) or not other:
            raise FeedbackError("preferred_over must be the id of the answer response_id was chosen over")
        if other == response_id:
            raise FeedbackError("preferred_over names the same response as response_id; a choice needs two answers")
        # the chosen answer is the value too, so a query of one column reads the choice whichever way it is joined
        items.append(FeedbackItem(response_id, "choice", response_id, other_response_id=other))
    if "edit" in body:
        items.append(FeedbackItem(response_id, "edit", _text(body, "edit", max_chars)))
    if "comment" in body:
        items.append(FeedbackItem(response_id, "comment", _text(body, "comment", max_chars)))
    return items
