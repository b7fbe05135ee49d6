"""Keeping evaluation text out of training data: duplicates across splits, and n-gram decontamination against
evaluation texts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llm_recipes.corpus.dedup.clusters import connected_components, near_duplicate_clusters
from llm_recipes.corpus.dedup.columns import BATCH_SIZE, check_text_column, map_to_numpy, preview_text
from llm_recipes.corpus.dedup.exact import ExactHashBatch
from llm_recipes.corpus.dedup.hashing import mix64, ngram_hashes, whole_text_hash, word_hashes, words
from llm_recipes.corpus.dedup.minhash import MinHashConfig, dataset_signatures
from llm_recipes.corpus.parallel import map_batches
from llm_recipes.errors import UserError

if TYPE_CHECKING:
    from datasets import Dataset


def dedup_across_splits(
    splits: dict[str, Dataset],
    priority: Sequence[str] = ("train", "validation", "test"),
    config: MinHashConfig | None = None,
    text_field: str = "text",
    num_proc: int | None = None,
) -> tuple[dict[str, Dataset], dict[str, Any]]:
    """Remove documents that leak between splits, keeping the evaluation splits whole.

    `priority` lists splits from least to most protected: a document is dropped from a split when it is an exact
    or near duplicate of a document in a split listed after it. With the default, train loses anything that is
    also in validation or test, and validation anything that is also in test, so eval sets stay comparable with
    published numbers and the training data stops leaking into them. Duplicates within one split are left alone
    (that is `exact_dedup` / `near_dedup`'s job). Clusters are transitive: a train document that is a near
    duplicate of another train document that duplicates a test document goes too.
    """
    from datasets import Value  # noqa: PLC0415  corpus workers import this module: no datasets

    config = config or MinHashConfig()
    unknown = [name for name in splits if name not in priority]
    if unknown:
        raise UserError(f"split(s) {', '.join(unknown)} not in priority {tuple(priority)}; list every split there")
    names = [name for name in priority if name in splits]
    for name in names:
        check_text_column(splits[name], text_field, what=f"split '{name}'")
    rank = np.concatenate([np.full(len(splits[name]), at, dtype=np.int64) for at, name in enumerate(names)])
    texts = [text for name in names for text in splits[name][text_field]]
    n = len(texts)

    signatures = np.concatenate([dataset_signatures(splits[name], config, text_field, num_proc) for name in names])
    near, near_stats = near_duplicate_clusters(signatures, config, texts if config.verify else None)
    exact_hash = ExactHashBatch(text_field)
    exact = np.concatenate(
        [map_to_numpy(splits[name], exact_hash, "exact_hash", num_proc, Value("uint64")) for name in names]
    )
    _, first_of_hash, inverse = np.unique(exact, return_index=True, return_inverse=True)
    labels = connected_components(
        n,
        np.concatenate([near, first_of_hash[inverse]]),
        np.concatenate([np.arange(n), np.arange(n)]),
    )

    top_rank = np.full(n, -1, dtype=np.int64)
    np.maximum.at(top_rank, labels, rank)
    drop = rank < top_rank[labels]

    result, report, offset = {}, {"policy": f"drop from a split what duplicates a later split of {names}"}, 0
    report["splits"], report["examples"] = {}, []
    for name in names:
        size = len(splits[name])
        dropped = np.flatnonzero(drop[offset : offset + size])
        result[name] = splits[name].select(np.setdiff1d(np.arange(size), dropped))
        report["splits"][name] = {"documents": size, "dropped": int(dropped.size), "kept": size - int(dropped.size)}
        for row in dropped[:2].tolist():
            label = labels[offset + row]
            winner = int(np.flatnonzero((labels == label) & (rank == top_rank[label]))[0])
            report["examples"].append(
                {
                    "split": name,
                    "row": row,
                    "duplicates": names[rank[winner]],
                    "text": preview_text(texts[offset + row]),
                }
            )
        offset += size
    report["near_duplicate_clusters"] = near_stats.clusters
    return result, report


class DecontaminationBatch:
    """Batch function: `{text_field: [...]}` -> `{"contaminated_ngram": [first shared n-gram, or ""]}`.

    Holds the evaluation n-gram hashes, one sorted array per n-gram length.
    """

    def __init__(self, eval_ngrams: dict[int, np.ndarray], text_field: str = "text"):
        self.eval_ngrams = eval_ngrams
        self.text_field = text_field

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        word_lists = [words(text) for text in batch[self.text_field]]
        hashes, lengths = word_hashes(word_lists)
        doc_starts = np.cumsum(lengths) - lengths
        found = [""] * len(word_lists)
        for n, eval_hashes in self.eval_ngrams.items():
            batch_ngrams, positions = ngram_hashes(hashes, lengths, n)
            matched = positions[np.isin(batch_ngrams, eval_hashes)]
            docs = np.searchsorted(doc_starts, matched, side="right") - 1
            unique_docs, first = np.unique(docs, return_index=True)
            for doc, position in zip(unique_docs.tolist(), matched[first].tolist(), strict=True):
                if not found[doc]:
                    at = position - int(doc_starts[doc])
                    found[doc] = " ".join(word_lists[doc][at : at + n])
        return {"contaminated_ngram": found}


def eval_ngram_index(eval_texts: Iterable[str], ngram: int = 13, min_words: int = 8) -> tuple[dict, int]:
    """Hashes of the evaluation texts' word n-grams, by n-gram length, and how many texts were too short to use.

    A text shorter than `ngram` words but with at least `min_words` contributes its whole word sequence (so a
    short question still matches a training document that contains it); shorter ones would match too much.
    """
    word_lists = [words(text) for text in eval_texts]
    hashes, lengths = word_hashes(word_lists)
    full, _ = ngram_hashes(hashes, lengths, ngram)
    index = {ngram: [full]}
    ends = np.cumsum(lengths)
    too_short = 0
    for doc, length in enumerate(lengths.tolist()):
        if length >= ngram:
            continue
        if length < min_words:
            too_short += 1
            continue
        whole = mix64(np.array([whole_text_hash(hashes[ends[doc] - length : ends[doc]])], dtype=np.uint64))
        index.setdefault(length, []).append(whole)
    return {n: np.unique(np.concatenate(parts)) for n, parts in index.items()}, too_short


def decontaminate(
    ds: Dataset,
    eval_texts: Iterable[str],
    ngram: int = 13,
    text_field: str = "text",
    min_words: int = 8,
    num_proc: int | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """Drop training documents that share any word n-gram (13, as in GPT-3 and datatrove) with the eval texts.

    Words are lowercase `\\w+` runs, so case and punctuation do not hide a match. An eval text shorter than `ngram`
    words counts as one n-gram of its own length when it has at least `min_words` words (see `eval_ngram_index`).
    Stats: documents, dropped, kept, eval_ngrams, eval_texts_too_short, and examples of the n-grams matched.
    """
    from datasets import Features, Value  # noqa: PLC0415  corpus workers import this module: no datasets

    if ngram < 1 or min_words < 1:
        raise UserError(f"ngram ({ngram}) and min_words ({min_words}) must be >= 1")
    check_text_column(ds, text_field)
    index, too_short = eval_ngram_index(eval_texts, ngram, min_words)
    out = map_batches(
        ds,
        DecontaminationBatch(index, text_field),
        batch_size=BATCH_SIZE,
        num_proc=num_proc,
        remove_columns=ds.column_names,
        features=Features({"contaminated_ngram": Value("string")}),
        desc="decontamination",
    )
    matches = list(out["contaminated_ngram"]) if len(ds) else []
    dropped = [row for row, match in enumerate(matches) if match]
    stats = {
        "documents": len(ds),
        "dropped": len(dropped),
        "kept": len(ds) - len(dropped),
        "eval_ngrams": int(sum(hashes.size for hashes in index.values())),
        "eval_texts_too_short": too_short,
        "examples": [{"row": row, "ngram": matches[row]} for row in dropped[:5]],
    }
    return ds.select(np.setdiff1d(np.arange(len(ds)), dropped)), stats
