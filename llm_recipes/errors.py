"""The one exception family a user should ever see from a recipe: a mistake they can fix, said in one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """A problem with the user's config, data or paths. Recipes print it as one line and exit with code 2."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """ "; did you mean X?" naming the candidate closest to a mistyped name, or "" when none is close."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""
