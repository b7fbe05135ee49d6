"""Exact and near-duplicate removal, cross-split dedup and decontamination (llm_recipes.corpus.dedup)."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
from datasets import Dataset

from llm_recipes.corpus.dedup import (
    ExactHashBatch,
    MinHashBatch,
    MinHashConfig,
    choose_bands,
    decontaminate,
    dedup_across_splits,
    exact_dedup,
    jaccard,
    minhash_signatures,
    near_dedup,
    near_duplicate_clusters,
    normalize_for_hash,
    shingles,
)
from llm_recipes.errors import UserError

VOCABULARY = [f"w{i}" for i in range(5000)]


def random_doc(seed: int, length: int = 300) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCABULARY) for _ in range(length))


def substitute(text: str, count: int, seed: int) -> str:
    """The text with `count` words (spread out, chosen by seed) replaced by new words."""
    tokens = text.split()
    for position in random.Random(seed).sample(range(len(tokens)), count):
        tokens[position] = f"edit{seed}x{position}"
    return " ".join(tokens)


def similarity(a: str, b: str, ngram: int = 5) -> float:
    return jaccard(shingles(a, ngram), shingles(b, ngram))


def texts_of(ds: Dataset) -> list[str]:
    return list(ds["text"])


# ----------------------------------------------------------------------------------------------------- exact


def test_normalize_for_hash_ignores_case_whitespace_and_punctuation():
    assert normalize_for_hash("  Hello,\n\tWORLD!!  ") == "hello world"
    assert normalize_for_hash("It's   a test.") == normalize_for_hash("its a TEST")
    assert normalize_for_hash("hello world") != normalize_for_hash("hello there world")


def test_exact_dedup_keeps_first_of_variants_differing_in_case_whitespace_punctuation():
    texts = ["The cat sat on the mat.", "A different doc", "the  CAT sat on the mat", "THE CAT, SAT ON THE MAT!"]
    texts += ["A different doc", "the cat sat on a mat"]
    deduped, stats = exact_dedup(Dataset.from_dict({"text": texts, "id": list(range(len(texts)))}))
    assert texts_of(deduped) == ["The cat sat on the mat.", "A different doc", "the cat sat on a mat"]
    assert list(deduped["id"]) == [0, 1, 5]
    assert (stats.documents, stats.duplicates, stats.kept) == (6, 3, 3)
    assert stats.examples[0] == {"kept": 0, "dropped": 2, "text": "The cat sat on the mat."}


def test_exact_hash_batch_is_picklable_and_gives_uint64():
    batch = {"text": ["a b", "A  b!", "c"]}
    hashes = pickle.loads(pickle.dumps(ExactHashBatch()))(batch)["exact_hash"]
    assert hashes.dtype == np.uint64
    assert hashes[0] == hashes[1] != hashes[2]


def test_empty_dataset_passes_through_every_step():
    empty = Dataset.from_dict({"text": []})
    assert len(exact_dedup(empty)[0]) == 0
    kept, stats = near_dedup(empty, MinHashConfig(verify=True))
    assert len(kept) == 0 and stats.duplicates == 0
    assert decontaminate(empty, ["a " * 20])[1]["dropped"] == 0
    splits, _ = dedup_across_splits({"train": empty, "test": Dataset.from_dict({"text": ["x"]})})
    assert (len(splits["train"]), len(splits["test"])) == (0, 1)


def test_missing_text_column_is_a_user_error():
    with pytest.raises(UserError, match="column 'body'"):
        exact_dedup(Dataset.from_dict({"text": ["x"]}), text_field="body")


# ----------------------------------------------------------------------------------------------------- near


def test_near_duplicates_above_threshold_removed_and_distinct_kept():
    base = random_doc(0)
    close = substitute(base, 3, seed=1)  # 3 of 300 words: Jaccard ~0.9
    far = substitute(base, 30, seed=2)  # 30 of 300 words: Jaccard ~0.4
    assert similarity(base, close) > 0.85
    assert similarity(base, far) < 0.6
    texts = [base, random_doc(10), close, far, random_doc(11)]
    deduped, stats = near_dedup(Dataset.from_dict({"text": texts}))
    assert texts_of(deduped) == [base, random_doc(10), far, random_doc(11)]
    assert (stats.clusters, stats.duplicates) == (1, 1)
    assert stats.examples[0]["rows"] == [0, 2] and stats.examples[0]["size"] == 2
    assert stats.examples[0]["texts"][0] == base[:80] + "..."


@pytest.mark.parametrize("options", [{}, {"verify": True}, {"check_signatures": False}])
def test_cluster_of_four_collapses_to_its_first_member(options):
    base = random_doc(1)
    copies = [substitute(base, 2, seed=s) for s in (3, 4, 5)]
    assert min(similarity(base, copy) for copy in copies) > 0.85
    texts = [random_doc(20), copies[0], random_doc(21), base, copies[1], copies[2]]
    labels, stats = near_duplicate_clusters(minhash_signatures(texts), MinHashConfig(**options), texts)
    assert labels.tolist() == [0, 1, 2, 1, 1, 1]
    assert (stats.clusters, stats.duplicates) == (1, 3)


def test_short_and_empty_documents_are_one_shingle():
    texts = ["Hello world!", "hello, WORLD", "hello there", "", "  ", "one two three four five six"]
    assert shingles("Hello world!") == {"hello world"}
    labels, stats = near_duplicate_clusters(minhash_signatures(texts), MinHashConfig(), texts)
    assert labels.tolist() == [0, 0, 2, 3, 3, 5]
    assert stats.duplicates == 2


def test_signature_agreement_estimates_jaccard():
    base = random_doc(2)
    for edits, seed in [(2, 1), (10, 2), (25, 3), (60, 4)]:
        other = substitute(base, edits, seed)
        signatures = minhash_signatures([base, other], MinHashConfig(seed=seed))
        estimate = float(np.mean(signatures[0] == signatures[1]))
        assert abs(estimate - similarity(base, other)) < 0.12  # 3 standard deviations at 128 permutations


def test_same_output_for_num_proc_batch_size_and_repeated_runs():
    base = random_doc(3)
    texts = [random_doc(30 + i) if i % 4 else substitute(base, 2, seed=i) for i in range(40)]
    config = MinHashConfig(seed=7)
    whole = minhash_signatures(texts, config)
    minhash = MinHashBatch(config)
    uneven = np.concatenate([minhash({"text": texts[a:b]})["minhash"] for a, b in [(0, 1), (1, 14), (14, 40)]])
    np.testing.assert_array_equal(whole, uneven)
    np.testing.assert_array_equal(whole, minhash_signatures(texts, MinHashConfig(seed=7)))
    assert not np.array_equal(whole, minhash_signatures(texts, MinHashConfig(seed=8)))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(minhash))({"text": texts})["minhash"], whole)

    ds = Dataset.from_dict({"text": texts})
    one, stats_one = near_dedup(ds, config, num_proc=1)
    two, stats_two = near_dedup(ds, config, num_proc=2)
    assert texts_of(one) == texts_of(two)
    assert stats_one.as_dict() == stats_two.as_dict()
    assert stats_one.duplicates == 9  # the 10 edited copies of base collapse to one


def test_verify_rejects_forced_false_positive_candidates():
    base = random_doc(4, length=200)
    related = [substitute(base, 25, seed=s) for s in (5, 6, 7)]  # Jaccard ~0.3 to base
    assert max(similarity(base, text) for text in related) < 0.5
    texts = [base, *related]
    signatures = minhash_signatures(texts)
    # one row per band: two documents become candidates when any single minhash value agrees
    plain, plain_stats = near_duplicate_clusters(
        signatures, MinHashConfig(bands=64, rows=1, verify=False, check_signatures=False)
    )
    assert plain_stats.candidate_pairs >= 3 and plain_stats.duplicates == 3  # LSH alone merges them all

    labels, stats = near_duplicate_clusters(signatures, MinHashConfig(bands=64, rows=1, verify=True), texts)
    assert labels.tolist() == [0, 1, 2, 3]
    assert stats.check == "jaccard" and stats.rejected_pairs >= 3 and stats.verified_pairs == 0

    labels, stats = near_duplicate_clusters(signatures, MinHashConfig(bands=64, rows=1, verify=False))
    assert labels.tolist() == [0, 1, 2, 3] and stats.check == "signatures" and stats.rejected_pairs >= 3


def test_verify_reads_the_texts_when_signatures_claim_a_match():
    texts = [random_doc(5), random_doc(6)]
    signatures = minhash_signatures(texts[:1]).repeat(2, axis=0)  # crafted: both documents "look" identical
    labels, stats = near_duplicate_clusters(signatures, MinHashConfig(verify=False))
    assert labels.tolist() == [0, 0] and stats.verified_pairs == 1
    labels, stats = near_duplicate_clusters(signatures, MinHashConfig(verify=True), texts)
    assert labels.tolist() == [0, 1]
    assert (stats.candidate_pairs, stats.verified_pairs, stats.rejected_pairs) == (1, 0, 1)


def test_verify_needs_texts():
    with pytest.raises(UserError, match="pass texts"):
        near_duplicate_clusters(minhash_signatures(["a b c"]), MinHashConfig(verify=True))


def test_choose_bands_fits_num_perm_and_centres_the_s_curve_on_the_threshold():
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = choose_bands(threshold, 128)
        assert bands * rows <= 128
        assert abs((1 / bands) ** (1 / rows) - threshold) < 0.06  # where 1 - (1 - s^r)^b is steepest
    assert choose_bands(0.8, 128) == (9, 13)  # datasketch's optimal_param gives the same for equal weights
    assert choose_bands(0.9, 128)[1] > choose_bands(0.5, 128)[1]  # stricter threshold -> more rows per band
    recall_bands, recall_rows = choose_bands(0.8, 128, false_positive_weight=0.05, false_negative_weight=0.95)
    assert (1 / recall_bands) ** (1 / recall_rows) < (1 / 9) ** (1 / 13)
    assert MinHashConfig().band_layout() == (recall_bands, recall_rows)
    assert MinHashConfig(verify=False, check_signatures=False).band_layout() == (9, 13)
    assert MinHashConfig(bands=4, rows=2).band_layout() == (4, 2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"threshold": 0.0}, "threshold"),
        ({"bands": 4}, "bands and rows go together"),
        ({"bands": 20, "rows": 10}, "must be <= num_perm"),
        ({"ngram": 0}, "ngram"),
    ],
)
def test_bad_minhash_config_is_a_user_error(options, message):
    with pytest.raises(UserError, match=message):
        MinHashConfig(**options)


# ----------------------------------------------------------------------------------------------------- splits


def test_dedup_across_splits_drops_from_train_what_is_in_validation_or_test():
    test_docs = [random_doc(100), random_doc(101)]
    validation_docs = [random_doc(110), test_docs[1].upper(), random_doc(111)]
    train_docs = [
        random_doc(120),
        test_docs[0] + "!",  # exact duplicate (after normalisation) of test
        substitute(validation_docs[0], 3, seed=1),  # near duplicate of validation
        random_doc(121),
        random_doc(121),  # duplicate within train: not this function's job
    ]
    splits = {name: Dataset.from_dict({"text": docs}) for name, docs in [("test", test_docs), ("train", train_docs)]}
    splits["validation"] = Dataset.from_dict({"text": validation_docs})
    result, report = dedup_across_splits(splits)
    assert texts_of(result["test"]) == test_docs
    assert texts_of(result["validation"]) == [validation_docs[0], validation_docs[2]]
    assert texts_of(result["train"]) == [train_docs[0], train_docs[3], train_docs[4]]
    assert report["splits"]["train"] == {"documents": 5, "dropped": 2, "kept": 3}
    assert report["splits"]["validation"]["dropped"] == 1
    assert {(e["split"], e["duplicates"]) for e in report["examples"]} == {
        ("train", "test"),
        ("train", "validation"),
        ("validation", "test"),
    }


def test_dedup_across_splits_needs_every_split_in_priority():
    with pytest.raises(UserError, match="dev"):
        dedup_across_splits({"train": Dataset.from_dict({"text": ["a"]}), "dev": Dataset.from_dict({"text": ["a"]})})


# ----------------------------------------------------------------------------------------------------- decontamination


def test_decontaminate_drops_documents_sharing_a_13_gram_with_eval_texts():
    question = " ".join(f"q{i}" for i in range(20))
    eval_words = question.split()
    shares_13 = random_doc(200, 50) + " " + " ".join(eval_words[3:16]).upper() + " " + random_doc(201, 50)
    shares_12 = random_doc(202, 50) + " " + " ".join(eval_words[3:15]) + " " + random_doc(203, 50)
    short_eval = "The quick brown fox jumps over the lazy dog"  # 9 words: used whole
    contains_short = "Intro text. " + short_eval + ", said nobody."
    texts = [random_doc(204, 80), shares_13, shares_12, contains_short, "the lazy dog sleeps"]
    kept, stats = decontaminate(Dataset.from_dict({"text": texts}), [question, short_eval, "too short"])
    assert texts_of(kept) == [texts[0], shares_12, texts[4]]
    assert (stats["dropped"], stats["kept"], stats["eval_texts_too_short"]) == (2, 3, 1)
    assert stats["examples"][0] == {"row": 1, "ngram": " ".join(eval_words[3:16])}
    assert stats["examples"][1] == {"row": 3, "ngram": short_eval.lower()}


# ----------------------------------------------------------------------------------------------------- real data


def test_real_c4_documents_with_injected_duplicates(shared_data):
    originals = [json.loads(line)["text"] for line in (shared_data / "c4_demo.jsonl").read_text().splitlines()]
    long_docs = [i for i, text in enumerate(originals) if 150 <= len(text.split()) <= 800]
    rng = random.Random(0)
    picked = rng.sample(long_docs, 10)
    exact_copies = ["  " + originals[i].lower().replace(" ", "  \n") + "!!" for i in picked[:5]]
    near_copies = []
    for i in picked[5:]:
        tokens = originals[i].split()
        for position in rng.sample(range(len(tokens)), 2):
            tokens[position] = "EDITED"
        near_copies.append(" ".join(tokens))
        assert similarity(originals[i], near_copies[-1]) >= 0.9
    ds = Dataset.from_dict({"text": originals + exact_copies + near_copies})

    baseline, _ = near_dedup(exact_dedup(Dataset.from_dict({"text": originals}))[0])
    after_exact, exact_stats = exact_dedup(ds, num_proc=2)
    assert exact_stats.duplicates == 5
    after_near, near_stats = near_dedup(after_exact, num_proc=2)
    assert texts_of(after_near) == texts_of(baseline)  # every injected copy gone, the first occurrence kept
    assert near_stats.duplicates >= 5
    verified, verify_stats = near_dedup(after_exact, MinHashConfig(verify=True))
    assert texts_of(verified) == texts_of(baseline)
    assert verify_stats.verified_pairs >= 5
