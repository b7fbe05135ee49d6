"""Task data and features: label sets, NER tags aligned to sub-word tokens on hand-made examples, QA windows with
stride and their answer spans, the span search of QA post-processing, and the data checks (one UserError each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, List, Value
from transformers import AutoTokenizer, EvalPrediction

from llm_recipes.data.task_demo import ner_rows, qa_rows, sentiment_rows
from llm_recipes.errors import UserError
from llm_recipes.tasks.config import FinetuneTaskArguments
from llm_recipes.tasks.data import load_task_data, resolve_labels
from llm_recipes.tasks.features import (
    align_labels,
    join_words,
    qa_features,
    token_classification_features,
    token_word_ids,
)
from llm_recipes.tasks.labels import class_weights, continuation_ids, infer_label_names
from llm_recipes.tasks.metrics import qa_metric_fn
from llm_recipes.tasks.qa import answer_token_span, best_answers, encode_features

TAGS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]  # the order inferred from data: O first, then by type


@pytest.fixture(scope="module")
def tokenizer(base_model_dir):
    loaded = AutoTokenizer.from_pretrained(base_model_dir)
    loaded.pad_token = loaded.pad_token or loaded.eos_token
    return loaded


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------
# Labels


def test_label_names_come_from_the_data_the_features_or_the_config():
    assert infer_label_names(["I-PER", "O", "B-LOC", "B-PER", "I-LOC"], None, "tags_column", tags=True) == TAGS
    assert infer_label_names(["pos", "neg", "pos"], None, "label_column", tags=False) == ["neg", "pos"]
    assert infer_label_names([0, 2, 1], None, "label_column", tags=False) == ["LABEL_0", "LABEL_1", "LABEL_2"]
    assert infer_label_names([0, 1], ["no", "yes"], "label_column", tags=False) == ["no", "yes"]
    with pytest.raises(UserError, match="tags are integer ids; set labels"):
        infer_label_names([0, 1], None, "tags_column", tags=True)


def test_class_label_names_of_a_hub_style_dataset_are_used(tmp_path):
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=TAGS))})
    dataset = Dataset.from_dict({"tokens": [["Anna", "left"]], "ner_tags": [[1, 0]]}, features=features)
    args = FinetuneTaskArguments(task="token-classification")
    assert resolve_labels(args, dataset, None) == TAGS


def test_continuation_labels_and_class_weights():
    assert continuation_ids(TAGS) == [0, 2, 2, 4, 4]  # B-LOC -> I-LOC, B-PER -> I-PER, others themselves
    # balanced: n / (k * count) with counts 3 and 1 of 4 rows -> 4/6 and 4/2
    assert class_weights("balanced", ["a", "b"], [0, 0, 0, 1]) == pytest.approx([2 / 3, 2.0])
    assert class_weights(["balanced"], ["a", "b"], [0, 1]) == [1.0, 1.0]  # the CLI's form
    assert class_weights(["1", "2.5"], ["a", "b"], []) == [1.0, 2.5]
    assert class_weights({"b": 3}, ["a", "b"], []) == [1.0, 3.0]
    with pytest.raises(UserError, match="class_weights: 1 weights for 2 labels"):
        class_weights([1], ["a", "b"], [])
    with pytest.raises(UserError, match="class_weights: 'c' is not one of the labels"):
        class_weights({"c": 1}, ["a", "b"], [])


# --------------------------------------------------------------------------------------------------------------
# NER alignment


def test_tokens_map_to_words_by_offsets_including_bare_spaces():
    text, spans = join_words(["John", "lives", "in", "New", "York", "."])
    assert text == "John lives in New York ." and spans[3] == (14, 17)
    # byte-level BPE style: a token may carry the space before its word, or be that space alone
    offsets = [(0, 0), (0, 2), (2, 4), (4, 10), (10, 11), (11, 13), (13, 17), (17, 22), (22, 24), (0, 0)]
    assert token_word_ids(offsets, spans) == [None, 0, 0, 1, 2, 2, 3, 4, 5, None]
    # WordPiece style: no spaces in the tokens
    assert token_word_ids([(0, 0), (0, 4), (5, 8), (8, 10), (11, 13)], spans) == [None, 0, 1, 1, 2]


def test_only_the_first_sub_token_is_labelled_unless_all_are_asked_for():
    word_ids = [None, 0, 0, 1, 2, 2, 2, None]
    words = [3, 0, 1]  # B-PER, O, B-LOC
    continuation = continuation_ids(TAGS)
    assert align_labels(word_ids, words, False, continuation) == [-100, 3, -100, 0, 1, -100, -100, -100]
    assert align_labels(word_ids, words, True, continuation) == [-100, 3, 4, 0, 1, 2, 2, -100]


def test_ner_features_label_each_word_once_with_a_real_tokenizer(tokenizer):
    rows = [
        {
            "tokens": ["Anna", "Okafor", "lives", "in", "Rio", "de", "Janeiro", "."],
            "ner_tags": ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O"],
        },
        {"tokens": ["Hugo", "met", "Iris"], "ner_tags": ["B-PER", "O", "B-PER"]},
    ]
    dataset = Dataset.from_list(rows)
    args = FinetuneTaskArguments(task="token-classification")
    first_only = token_classification_features(dataset, tokenizer, args, TAGS, 64, label_all_tokens=False)
    every = token_classification_features(dataset, tokenizer, args, TAGS, 64, label_all_tokens=True)
    for row, first, full in zip(rows, first_only, every, strict=True):
        labelled = [label for label in first["labels"] if label != -100]
        assert labelled == [TAGS.index(tag) for tag in row["ner_tags"]]
        # the features are the tokens of the running text, exactly what the pipeline sees at inference
        assert first["input_ids"] == tokenizer(" ".join(row["tokens"]))["input_ids"]
        assert len(first["input_ids"]) > len(row["tokens"])  # the tokenizer really splits words here
        continued = [label for label, head in zip(full["labels"], first["labels"], strict=True) if head == -100]
        assert set(continued) <= {0, 2, 4, -100} and {2, 4} & set(continued)  # B-X continues as I-X, never B-
    truncated = token_classification_features(dataset, tokenizer, args, TAGS, 4, label_all_tokens=False)
    assert all(len(ids) <= 4 for ids in truncated["input_ids"])


# --------------------------------------------------------------------------------------------------------------
# QA windows and spans


def test_answer_token_span_on_hand_made_offsets():
    # question tokens and specials have None; context " The cat is blue." with byte-level offsets
    offsets = [None, None, (0, 3), (3, 7), (7, 10), (10, 15), (15, 16), None]
    assert answer_token_span(offsets, 11, 15) == (5, 5)  # "blue" inside " blue"
    assert answer_token_span(offsets, 4, 10) == (3, 4)  # "cat is"
    assert answer_token_span(offsets, 20, 24, fallback=0) == (0, 0)  # beyond this window


def test_long_contexts_become_overlapping_windows_that_keep_the_answer(tokenizer):
    context = " ".join(
        f"The {animal} is {colour}."
        for animal, colour in [
            ("cat", "red"),
            ("dog", "blue"),
            ("horse", "green"),
            ("bird", "black"),
            ("fish", "white"),
            ("mouse", "orange"),
            ("lion", "purple"),
            ("bear", "yellow"),
        ]
    )
    answer = "purple"
    start = context.index(answer)
    encoding = encode_features(tokenizer, ["What colour is the lion?"], [context], max_length=24, doc_stride=8)
    windows = len(encoding["input_ids"])
    assert windows > 2 and set(encoding["overflow_to_sample_mapping"]) == {0}
    found = 0
    for index in range(windows):
        offsets = encoding["offset_mapping"][index]
        first, last = answer_token_span(offsets, start, start + len(answer), fallback=-1)
        if first >= 0:
            found += 1
            assert context[offsets[first][0] : offsets[last][1]].strip() == answer
    assert found >= 1
    # consecutive windows share their last/first context tokens (the stride)
    spans = [[span for span in encoding["offset_mapping"][i] if span is not None] for i in range(windows)]
    assert spans[0][-8:] == spans[1][:8]


def test_qa_features_label_the_answer_in_every_window_holding_it(tokenizer):
    rows = qa_rows(6, seed=3)
    dataset = Dataset.from_list(rows)
    args = FinetuneTaskArguments(task="question-answering", doc_stride=6)
    result = qa_features(dataset, tokenizer, args, max_length=24)
    assert len(result.features) > len(rows) and sorted(set(result.example_index)) == list(range(len(rows)))
    for feature, example, offsets in zip(result.features, result.example_index, result.offsets, strict=True):
        start, end = feature["start_positions"], feature["end_positions"]
        if offsets[start] is None:
            continue  # this window does not hold the answer: both labels on the no-answer position
        text = rows[example]["context"][offsets[start][0] : offsets[end][1]].strip()
        assert text == rows[example]["answers"]["text"][0]


def test_doc_stride_must_leave_room_next_to_the_question(tokenizer):
    dataset = Dataset.from_list(qa_rows(2))
    args = FinetuneTaskArguments(task="question-answering", doc_stride=12)
    with pytest.raises(UserError, match="doc_stride: 12 leaves no room"):
        qa_features(dataset, tokenizer, args, max_length=16)


def test_best_answers_recover_the_span_over_windows():
    context = "The cat is blue. The dog is red."
    # two windows of the same context; None marks question tokens. Offsets carry the leading space (" blue").
    window_a = [None, None, (0, 3), (3, 7), (7, 10), (10, 15), (15, 16)]
    window_b = [None, None, (10, 15), (15, 16), (16, 20), (20, 24), (24, 27), (27, 31), (31, 32)]
    starts_a = np.array([9.0, 0, 0, 0, 0, 3.0, 0])  # the strongest start is a question token: not an answer
    ends_a = np.array([9.0, 0, 0, 0, 0, 3.0, 0])
    starts_b = np.array([0, 0, 5.0, 0, 0, 0, 0, 4.0, 0, -100, -100])  # padded by the Trainer past the window
    ends_b = np.array([0, 0, 5.0, 0, 0, 0, 0, 4.0, 0, -100, -100])
    answers = best_answers([starts_a, starts_b], [ends_a, ends_b], [window_a, window_b], context, top_k=3)
    # ranked by start + end logit: blue 5+5, blue..red 5+4, red 4+4
    assert [a["answer"] for a in answers] == ["blue", "blue. The dog is red", "red"]
    assert answers[0]["start"] == 11 and context[answers[0]["start"] : answers[0]["end"]] == "blue"
    assert answers[0]["score"] > answers[1]["score"] > 0
    # the same span seen in both windows is one answer; a span longer than max_answer_length is not one
    short = best_answers(
        [starts_a, starts_b], [ends_a, ends_b], [window_a, window_b], context, max_answer_length=1, top_k=6
    )
    assert [a["answer"] for a in short[:2]] == ["blue", "red"]
    assert all(" " not in a["answer"] for a in short) and len({a["start"] for a in short}) == len(short)
    assert best_answers([np.zeros(2)], [np.zeros(2)], [[None, None]], context) == [
        {"answer": "", "start": 0, "end": 0, "score": 0.0}
    ]


def test_qa_metric_scores_the_best_span_of_every_example():
    contexts = ["The cat is blue.", "The dog eats corn."]
    offsets = [[None, (0, 3), (3, 7), (7, 10), (10, 15), (15, 16)], [None, (0, 3), (3, 7), (7, 12), (12, 17), (17, 18)]]
    example_index = [0, 1]
    starts = np.array([[0, 0, 0, 0, 6.0, 0], [0, 0, 0, 0, 6.0, 0]])
    ends = starts.copy()
    compute = qa_metric_fn(example_index, offsets, contexts, [["blue"], ["seeds"]], n_best_size=5, max_answer_length=5)
    scores = compute(EvalPrediction(predictions=(starts, ends), label_ids=(np.zeros(2), np.zeros(2))))
    assert scores == {"exact_match": 0.5, "f1": 0.5}


# --------------------------------------------------------------------------------------------------------------
# Data checks


def _args(path: Path, task: str, **overrides) -> FinetuneTaskArguments:
    return FinetuneTaskArguments(task=task, dataset_path=str(path), **{"eval_split_size": 0, **overrides})


def test_classification_data_is_checked_before_any_model(tmp_path):
    path = write_jsonl(tmp_path / "reviews.jsonl", sentiment_rows(20))
    data = load_task_data(_args(path, "classification", eval_split_size=0.25))
    assert data.labels == ["negative", "neutral", "positive"] and len(data.eval) == 5 and len(data.train) == 15
    with pytest.raises(UserError, match="text_column: .* has no column 'review'"):
        load_task_data(_args(path, "classification", text_column="review"))
    with pytest.raises(UserError, match="labels: label 'neutral' .* is not one of the labels"):
        load_task_data(_args(path, "classification", labels=["negative", "positive"]))
    ids = write_jsonl(tmp_path / "ids.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 3}])
    with pytest.raises(UserError, match="labels: label id 3 .* out of range for 2 labels"):
        load_task_data(_args(ids, "classification", labels=["no", "yes"]))


def test_ner_data_is_checked(tmp_path):
    rows = ner_rows(10)
    assert load_task_data(_args(write_jsonl(tmp_path / "ner.jsonl", rows), "token-classification")).labels == TAGS
    rows[3]["ner_tags"] = rows[3]["ner_tags"][:-1]
    with pytest.raises(UserError, match="tags_column: row 3 has .* words but .* tags"):
        load_task_data(_args(write_jsonl(tmp_path / "bad.jsonl", rows), "token-classification"))


def test_qa_answers_must_be_where_answer_start_says(tmp_path):
    rows = qa_rows(8)
    assert load_task_data(_args(write_jsonl(tmp_path / "qa.jsonl", rows), "question-answering")).labels is None
    rows[5]["answers"]["answer_start"] = [rows[5]["answers"]["answer_start"][0] + 1]
    with pytest.raises(UserError, match="answers_column: row 5: answer .* is not in the context at answer_start"):
        load_task_data(_args(write_jsonl(tmp_path / "bad.jsonl", rows), "question-answering"))
    # a bare answer text is found in the context; one that is not there is named
    plain = [{"question": "What colour?", "context": "It is red.", "answers": "red"}]
    assert load_task_data(_args(write_jsonl(tmp_path / "plain.jsonl", plain), "question-answering")).labels is None
    plain[0]["answers"] = "blue"
    with pytest.raises(UserError, match="answer 'blue' is not in the context anywhere"):
        load_task_data(_args(write_jsonl(tmp_path / "missing.jsonl", plain), "question-answering"))


def test_sentence_pairs_are_encoded_together(tokenizer):
    from llm_recipes.tasks.features import classification_features

    dataset = Dataset.from_list([{"premise": "The cat is red.", "hypothesis": "The cat has a colour.", "label": "yes"}])
    args = FinetuneTaskArguments(task="classification", text_column="premise", text_pair_column="hypothesis")
    encoded = classification_features(dataset, tokenizer, args, ["no", "yes"], 64)[0]
    assert encoded["input_ids"] == tokenizer("The cat is red.", "The cat has a colour.")["input_ids"]
    assert len(encoded["input_ids"]) > len(tokenizer("The cat is red.")["input_ids"]) and encoded["labels"] == 1


@pytest.mark.parametrize("form", ["csv", "json", "jsonl", "parquet", "save_to_disk"])
def test_every_file_form_gives_the_same_task_data(tmp_path, form):
    rows = sentiment_rows(12, seed=3)
    dataset = Dataset.from_list(rows)
    path = tmp_path / f"reviews.{form}"
    if form == "csv":
        dataset.to_csv(path, index=False)
    elif form == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif form == "jsonl":
        write_jsonl(path, rows)
    elif form == "parquet":
        dataset.to_parquet(path)
    else:
        path = tmp_path / "reviews"
        dataset.save_to_disk(path)
    data = load_task_data(_args(path, "classification"))
    assert data.labels == sorted({row["label"] for row in rows})
    assert data.train["text"][:] == [row["text"] for row in rows]
    assert data.train["label"][:] == [row["label"] for row in rows]
