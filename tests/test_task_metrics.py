"""Metrics of the fine-tuning tasks against hand-computed values on fixed predictions: classification (macro and
per class), entity-level NER (BIO/IOBES decoding, partial boundaries count as wrong) and SQuAD EM/F1."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import EvalPrediction

from llm_recipes.metrics.seqeval.seqeval import entity_scores, extract_entities
from llm_recipes.metrics.squad.squad import f1_score, normalize_answer, squad_scores
from llm_recipes.tasks.metrics import (
    classification_metric_fn,
    classification_scores,
    entity_metrics,
    load_local_metric,
    metric_names,
    token_classification_metric_fn,
    word_tags,
)

# --------------------------------------------------------------------------------------------------------------
# Classification


def test_classification_scores_match_hand_computed_values():
    # refs  : a a b b b c      preds: a b b b c c
    # a: tp 1, predicted 1, actual 2 -> P 1, R 1/2, F1 2/3
    # b: tp 2, predicted 3, actual 3 -> P 2/3, R 2/3, F1 2/3
    # c: tp 1, predicted 2, actual 1 -> P 1/2, R 1, F1 2/3
    references = [0, 0, 1, 1, 1, 2]
    predictions = [0, 1, 1, 1, 2, 2]
    scores = classification_scores(predictions, references, ["a", "b", "c"])
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["precision_a"] == 1.0 and scores["recall_a"] == 0.5 and scores["f1_a"] == pytest.approx(2 / 3)
    assert scores["precision_b"] == pytest.approx(2 / 3) and scores["recall_b"] == pytest.approx(2 / 3)
    assert scores["precision_c"] == 0.5 and scores["recall_c"] == 1.0 and scores["f1_c"] == pytest.approx(2 / 3)
    assert scores["precision_macro"] == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    assert scores["recall_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert scores["f1_macro"] == pytest.approx(2 / 3)
    assert scores["f1_micro"] == pytest.approx(4 / 6)  # single-label: micro F1 is accuracy


def test_a_label_never_seen_scores_zero_but_leaves_the_macro_average_alone():
    scores = classification_scores([0, 1, 1], [0, 1, 0], ["a", "b", "unused"])
    assert scores["f1_unused"] == 0.0 and scores["precision_unused"] == 0.0
    # macro over the classes present (scikit-learn's default): a = P 1, R 1/2; b = P 1/2, R 1
    assert scores["f1_macro"] == pytest.approx(2 / 3)


def test_classification_metric_fn_takes_the_argmax_of_logits():
    logits = np.array([[2.0, 0.1], [0.2, 1.0], [3.0, -1.0], [0.0, 0.5]])
    compute = classification_metric_fn(["neg", "pos"])
    scores = compute(EvalPrediction(predictions=logits, label_ids=np.array([0, 1, 1, 1])))
    # predictions 0 1 0 1 against 0 1 1 1
    assert (
        scores["accuracy"] == 0.75 and scores["recall_pos"] == pytest.approx(2 / 3) and scores["precision_neg"] == 0.5
    )
    assert set(metric_names("classification", ["neg", "pos"])) >= set(scores)


# --------------------------------------------------------------------------------------------------------------
# Entity-level scores


def test_bio_entities_and_lenient_inside_tags():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "B-PER", "I-LOC", "O"]
    assert extract_entities(tags, "IOB2") == [
        ("PER", 0, 1),
        ("LOC", 3, 4),  # I- after O starts an entity (conlleval)
        ("LOC", 5, 5),  # B- always starts a new one
        ("PER", 6, 6),
        ("LOC", 7, 7),  # I-LOC after a PER entity starts a LOC one
    ]


def test_iobes_and_bilou_entities():
    tags = ["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "E-ORG", "B-PER", "E-LOC"]
    assert extract_entities(tags, "IOBES") == [
        ("PER", 0, 0),
        ("LOC", 1, 3),
        ("ORG", 5, 5),
        ("PER", 6, 6),
        ("LOC", 7, 7),
    ]
    bilou = ["U-PER", "B-LOC", "L-LOC"]
    assert extract_entities(bilou, "BILOU") == [("PER", 0, 0), ("LOC", 1, 2)]
    assert extract_entities(bilou, "auto") == [("PER", 0, 0), ("LOC", 1, 2)]
    assert extract_entities(["PER", "PER", "O"], "IOB2") == [("PER", 0, 1)]  # plain IO tags


def test_entity_scores_count_partial_boundaries_as_wrong():
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "I-LOC", "O", "O"]]
    predictions = [["B-PER", "O", "O", "B-LOC"], ["B-LOC", "I-LOC", "O", "B-PER"]]
    # reference entities: PER(0-1), LOC(3), LOC(0-1); predicted: PER(0) (boundary wrong), LOC(3), LOC(0-1), PER(3)
    # correct 2 of 4 predicted, 2 of 3 actual; PER: 0/2 predicted right, 0/1 found; LOC: 2/2, 2/2
    scores = entity_scores(predictions, references)
    assert scores["overall_precision"] == 0.5
    assert scores["overall_recall"] == pytest.approx(2 / 3)
    assert scores["overall_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores["overall_accuracy"] == pytest.approx(6 / 8)
    assert scores["PER"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert scores["LOC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 2}


def test_the_local_seqeval_module_loads_through_evaluate_and_flattens_for_the_trainer():
    metric = load_local_metric("seqeval")
    references = [["B-PER", "I-PER", "O", "B-LOC"]]
    predictions = [["B-PER", "I-PER", "O", "O"]]
    scores = entity_metrics(predictions, references, metric)
    assert scores["precision"] == 1.0 and scores["recall"] == 0.5 and scores["f1"] == pytest.approx(2 / 3)
    assert scores["f1_PER"] == 1.0 and scores["recall_LOC"] == 0.0


def test_token_metrics_read_only_the_labelled_positions():
    labels = ["O", "B-PER", "I-PER", "B-LOC"]
    # two sub-word positions of a word and a special token carry -100 and must be ignored
    label_ids = np.array([[-100, 1, -100, 2, 0, 3, -100], [-100, 3, 0, -100, -100, -100, -100]])
    predicted = np.array([[3, 1, 3, 2, 0, 3, 3], [0, 3, 0, 1, 1, 1, 1]])
    predictions, references = word_tags(predicted, label_ids, labels)
    assert references == [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    assert predictions == references
    logits = np.eye(4)[predicted] * 5.0
    scores = token_classification_metric_fn(labels)(EvalPrediction(predictions=logits, label_ids=label_ids))
    assert scores["f1"] == 1.0 and scores["f1_PER"] == 1.0 and scores["accuracy"] == 1.0
    assert set(scores) <= set(metric_names("token-classification", labels))


# --------------------------------------------------------------------------------------------------------------
# SQuAD exact match and F1


def test_squad_normalisation_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Eiffel-Tower, a   landmark! ") == "eiffeltower landmark"
    assert normalize_answer("An apple") == "apple"


def test_squad_scores_match_hand_computed_values():
    # 1: exact after normalisation; 2: "cat sat" vs "cat sat down" -> P 1, R 2/3, F1 0.8;
    # 3: no overlap with the first reference, exact with the second (best reference counts); 4: nothing shared
    predictions = ["The red ball.", "the cat sat", "blue", "green"]
    references = [["red ball"], ["a cat sat down"], ["red", "Blue"], ["yellow"]]
    scores = squad_scores(predictions, references)
    assert scores["exact_match"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx((1 + 0.8 + 1 + 0) / 4)
    assert f1_score("", "") == 1.0 and f1_score("a", "cat") == 0.0  # "a" normalises to nothing
    metric = load_local_metric("squad")
    assert metric.compute(predictions=predictions, references=references) == pytest.approx(scores)
