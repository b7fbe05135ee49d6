"""How the prompts the server got differ from the training data's: length, language mix, and the share the
training data never covered.

A conversation's prompt is its last user message (a training conversation ends with the answer, so the same rule
finds its prompt). Definitions:
    length            words (whitespace-separated); compared by the Kolmogorov-Smirnov distance, the largest gap
                      between the two empirical distribution functions
    language mix      lingua's best guess among the candidate languages (the corpus stage's language filter),
                      `unknown` when it has none; compared by the total variation distance, half the sum of the
                      absolute differences of the shares
    not covered       a prompt none of whose lowercase word n-grams occurs in any training prompt; prompts with
                      fewer than n words are counted apart
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from llm_recipes.corpus.filters.language import LanguageFilter
from llm_recipes.data.io import load_dataset_source
from llm_recipes.errors import UserError

WORD = re.compile(r"\w+")
PROMPT_COLUMNS = ("messages", "prompt", "text", "question", "instruction")


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return ""


def prompt_of(messages: Sequence[dict[str, Any]]) -> str | None:
    """The last user message of a conversation, or None when it has none."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return None


def training_prompts(path: str, split: str, limit: int) -> list[str]:
    """The first `limit` prompts of the training data: its conversations' last user messages, or its `prompt`
    (a string or a conversation), `text`, `question` or `instruction` column."""
    dataset = load_dataset_source(path, split=split)
    column = next((name for name in PROMPT_COLUMNS if name in dataset.column_names), None)
    if column is None:
        columns = ", ".join(dataset.column_names)
        raise UserError(f"training_data: {path} has none of {', '.join(PROMPT_COLUMNS)} (its columns: {columns})")
    prompts = []
    for value in dataset.select(range(min(limit, len(dataset))))[column]:
        prompt = prompt_of(value) if isinstance(value, list) else text_of(value)
        if prompt:
            prompts.append(prompt)
    if not prompts:
        raise UserError(f"training_data: no prompt in the {column} column of {path}")
    return prompts


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def length_summary(lengths: list[int]) -> dict[str, float | None]:
    if not lengths:
        return {"mean": None, "p50": None, "p90": None}
    return {
        "mean": float(np.mean(lengths)),
        "p50": float(np.percentile(lengths, 50)),
        "p90": float(np.percentile(lengths, 90)),
    }


def ks_distance(a: list[int], b: list[int]) -> float:
    """The largest gap between the empirical distribution functions of a and b."""
    points = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), points, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), points, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def language_shares(prompts: Iterable[str], detector: LanguageFilter) -> dict[str, float]:
    counts = Counter(detector.detect(prompt)[0] or "unknown" for prompt in prompts)
    total = sum(counts.values())
    return {language: count / total for language, count in sorted(counts.items())}


def prompt_drift(served: list[str], training: list[str], n: int, languages: Sequence[str]) -> dict[str, Any]:
    """Length, language mix and n-gram coverage of the served prompts against the training prompts."""
    served_lengths = [len(prompt.split()) for prompt in served]
    training_lengths = [len(prompt.split()) for prompt in training]
    detector = LanguageFilter(languages=None, candidates=languages)
    mix_served = language_shares(served, detector) if served else {}
    mix_training = language_shares(training, detector)
    names = set(mix_served) | set(mix_training)
    seen: set[tuple[str, ...]] = set()
    for prompt in training:
        seen |= ngrams(words(prompt), n)
    eligible = [ngrams(words(prompt), n) for prompt in served if len(words(prompt)) >= n]
    uncovered = sum(not (grams & seen) for grams in eligible)
    return {
        "length": {
            "served": length_summary(served_lengths),
            "training": length_summary(training_lengths),
            "ks": ks_distance(served_lengths, training_lengths) if served else None,
            "served_lengths": served_lengths,
            "training_lengths": training_lengths,
        },
        "languages": {
            "served": mix_served,
            "training": mix_training,
            "total_variation": 0.5 * sum(abs(mix_served.get(k, 0) - mix_training.get(k, 0)) for k in names)
            if served
            else None,
        },
        "coverage": {
            "n": n,
            "eligible": len(eligible),
            "uncovered": uncovered,
            "too_short": len(served) - len(eligible),
            "uncovered_share": uncovered / len(eligible) if eligible else None,
        },
    }
