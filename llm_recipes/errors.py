"""The one exception family a user should ever see from a recipe: a mistake they can fix, said in one line.

Under `llm-recipes <stage>` a recipe runs in a child of `accelerate launch` (or of torchrun, one per rank), whose
own error handling would print a traceback and the child's command line. So a recipe does not print its error
there: it leaves it in the folder the console script names in LLM_RECIPES_ERROR_DIR, and the console script,
which alone talks to the user, prints one line and exits 2.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path

# where a launched recipe leaves its user error for the console script (one file per rank)
ERROR_DIR_ENV = "LLM_RECIPES_ERROR_DIR"

# Hugging Face user access tokens; anything shaped like one is masked in what we print
HF_TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{16,}")


class UserError(ValueError):
    """A problem with the user's config, data or paths. Recipes print it as one line and exit with code 2."""


class StageComplete(Exception):
    """A stage found its output already finished with the same settings: nothing to do, exit code 0."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """ "; did you mean X?" naming the candidate closest to a mistyped name, or "" when none is close."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def one_line(message: object) -> str:
    """A message as the single line we print: first line only, tokens masked."""
    text = str(message).strip()
    return mask_tokens(text.splitlines()[0] if text else type(message).__name__)


def mask_tokens(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return HF_TOKEN_PATTERN.sub("hf_<redacted>", text)


def report_user_error(err: BaseException) -> None:
    """Say a user error once: to the console script when one launched us, else on stderr from rank 0."""
    rank = os.environ.get("RANK", "0")
    folder = os.environ.get(ERROR_DIR_ENV)
    if folder and os.path.isdir(folder):
        path = Path(folder) / f"rank-{rank}.txt"
        partial = path.with_suffix(".tmp")
        partial.write_text(one_line(err), encoding="utf-8")
        os.replace(partial, path)  # the console script never reads half a message
    elif rank == "0":
        print(f"error: {one_line(err)}", file=sys.stderr, flush=True)


def reported_error(folder: str | Path) -> str | None:
    """The user error a launched recipe left in `folder`: rank 0's if it has one, else the lowest rank's."""
    found = []
    for path in Path(folder).glob("rank-*.txt"):
        rank = path.stem.removeprefix("rank-")
        found.append((int(rank) if rank.isdigit() else 1 << 30, path))
    for _, path in sorted(found):
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text
    return None
