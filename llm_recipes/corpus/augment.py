"""EDA-style text augmentation for small corpora: random deletion, swap, insertion and typo-like character noise.

Easy Data Augmentation (Wei & Zou 2019) helps small classification sets; for language-model data it is a
deliberate trade -- it adds variety but also ungrammatical text -- so nothing augments unless a config asks.
We write it ourselves because the libraries that offer it (nlpaug, textattack) pull in NLTK/WordNet downloads,
and because it must be a picklable batch function whose output does not depend on how rows are batched:
every augmented copy draws from a random generator seeded by the document's text, the seed and the copy number,
so `Dataset.map(batched=True, batch_size=..., num_proc=N)` gives the same rows for any batch size or N.

Words are whitespace-separated tokens, changed line by line so a document keeps its line structure.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence

from llm_recipes.errors import UserError, did_you_mean


def random_deletion(words: list[str], probability: float, rng: random.Random, pool: Sequence[str]) -> list[str]:
    """Each word is dropped with `probability`; one word always survives."""
    kept = [word for word in words if rng.random() >= probability]
    return kept or [rng.choice(words)]


def random_swap(words: list[str], probability: float, rng: random.Random, pool: Sequence[str]) -> list[str]:
    """`probability * len(words)` (at least one) swaps of two random positions."""
    words = list(words)
    if len(words) < 2:
        return words
    for _ in range(max(1, round(probability * len(words)))):
        i, j = rng.randrange(len(words)), rng.randrange(len(words))
        words[i], words[j] = words[j], words[i]
    return words


def random_insertion(words: list[str], probability: float, rng: random.Random, pool: Sequence[str]) -> list[str]:
    """`probability * len(words)` (at least one) words from the same document inserted at random positions."""
    words = list(words)
    for _ in range(max(1, round(probability * len(words)))):
        words.insert(rng.randrange(len(words) + 1), rng.choice(pool))
    return words


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word) - 1)
    if rng.random() < 0.5:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # swap two neighbours
    return word[:i] + word[i + 1 :]  # drop one character


def char_noise(words: list[str], probability: float, rng: random.Random, pool: Sequence[str]) -> list[str]:
    """Each word of two or more characters gets a typo with `probability`: two neighbours swapped or one dropped."""
    return [_typo(word, rng) if len(word) > 1 and rng.random() < probability else word for word in words]


AUGMENTATIONS: dict[str, Callable[[list[str], float, random.Random, Sequence[str]], list[str]]] = {
    "deletion": random_deletion,
    "swap": random_swap,
    "insertion": random_insertion,
    "char_noise": char_noise,
}


def augment_text(text: str, op: str, probability: float, rng: random.Random) -> str:
    """Apply one augmentation to every non-empty line of `text`."""
    transform = AUGMENTATIONS[op]
    pool = text.split()
    if not pool:
        return text
    lines = []
    for line in text.split("\n"):
        words = line.split()
        lines.append(" ".join(transform(words, probability, rng, pool)) if words else line)
    return "\n".join(lines)


def document_rng(text: str, seed: int, copy: int) -> random.Random:
    """A generator that depends only on the text, the seed and the copy number (not on batching or process)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return random.Random(f"{seed}:{copy}:{digest}")


class AugmentBatch:
    """The batch function: each row, then `copies` augmented variants of it.

    Every column is copied; `augmented` (bool) marks the variants. An `id` column becomes text with `#aug<k>`
    appended for variant k (originals keep their id, as text, so the column has one type). Each variant applies
    one of `ops`, chosen by the document's own generator.
    """

    def __init__(
        self,
        ops: Sequence[str] = ("deletion", "swap"),
        copies: int = 1,
        probability: float = 0.1,
        seed: int = 0,
        text_field: str = "text",
    ):
        if isinstance(ops, str):
            ops = [ops]
        if not ops:
            raise UserError(f"augment: ops is empty; choose from {', '.join(AUGMENTATIONS)}")
        for op in ops:
            if op not in AUGMENTATIONS:
                raise UserError(
                    f"unknown augmentation {op!r}{did_you_mean(op, AUGMENTATIONS)} (known: {', '.join(AUGMENTATIONS)})"
                )
        if copies < 0:
            raise UserError(f"augment: copies {copies} must be >= 0")
        if not 0 < probability <= 1:
            raise UserError(f"augment: probability {probability} must be in (0, 1]")
        self.ops, self.copies, self.probability, self.seed = tuple(ops), copies, probability, seed
        self.text_field = text_field

    def variant(self, text: str, copy: int) -> str:
        rng = document_rng(text, self.seed, copy)
        return augment_text(text, rng.choice(self.ops), self.probability, rng)

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self.text_field not in batch:
            raise UserError(f"no column {self.text_field!r} to augment; columns are {sorted(batch)}")
        columns = [name for name in batch if name != "augmented"]
        out: dict[str, list] = {name: [] for name in columns}
        out["augmented"] = []
        for row in range(len(batch[self.text_field])):
            text = batch[self.text_field][row]
            for copy in range(self.copies + 1):
                for name in columns:
                    value = batch[name][row]
                    if name == "id":
                        value = str(value) if copy == 0 else f"{value}#aug{copy}"
                    elif name == self.text_field and copy and text:
                        value = self.variant(text, copy)
                    out[name].append(value)
                out["augmented"].append(copy > 0)
        return out

    def __repr__(self) -> str:
        return (
            f"AugmentBatch(ops={self.ops!r}, copies={self.copies}, probability={self.probability}, "
            f"seed={self.seed}, text_field={self.text_field!r})"
        )
