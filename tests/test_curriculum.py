"""Curriculum learning: difficulty scores and easy -> hard orders."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from llm_recipes.data.config import DatasetSpec
from llm_recipes.data.curriculum import column_scores, curriculum_order, length_scores, model_loss_scores
from llm_recipes.data.packing import tokenize_documents
from llm_recipes.errors import UserError
from llm_recipes.pretrain.build import load_pretraining_texts, order_documents


def curriculum_args(**overrides) -> SimpleNamespace:
    fields = dict(
        curriculum="length",
        curriculum_column=None,
        curriculum_model=None,
        curriculum_schedule="sorted",
        curriculum_buckets=4,
        block_size=64,
        trust_remote_code=False,
    )
    return SimpleNamespace(**{**fields, **overrides})


def test_sorted_order_is_ascending_and_stable():
    assert curriculum_order([3.0, 1.0, 2.0, 1.0]) == [1, 3, 2, 0]


def test_buckets_rise_in_difficulty_and_shuffle_inside():
    scores = list(range(40, 0, -1))  # row i has score 40 - i: the hardest rows come first
    order = curriculum_order(scores, "buckets", buckets=4, seed=0)
    assert sorted(order) == list(range(40))
    ranks = [[scores[i] - 1 for i in order[b * 10 : (b + 1) * 10]] for b in range(4)]
    for bucket, members in enumerate(ranks):
        assert sorted(members) == list(range(bucket * 10, bucket * 10 + 10))  # bucket b holds the b-th easiest tenth
    assert any(members != sorted(members) for members in ranks)  # shuffled inside
    assert curriculum_order(scores, "buckets", buckets=4, seed=0) == order  # and reproducibly so
    assert curriculum_order(scores, "buckets", buckets=4, seed=1) != order


def test_length_curriculum_orders_documents_by_token_count(base_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    texts = Dataset.from_dict({"text": ["one two three four five six", "one", "one two three", "one two"]})
    docs = tokenize_documents(texts, tokenizer)
    assert length_scores(docs) == [float(len(ids)) for ids in docs["input_ids"]]
    ordered = order_documents(docs, texts, curriculum_args(), seed=0)
    lengths = [len(ids) for ids in ordered["input_ids"]]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


def test_column_curriculum_carries_scores_through_format_conversion(tmp_path, base_model_dir):
    rows = [
        {"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}.", "level": (7 * i) % 10}
        for i in range(10)
    ]
    path = tmp_path / "scored.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    texts = load_pretraining_texts([DatasetSpec(path=str(path))], score_column="level", seed=0)
    assert sorted(texts.train.column_names) == ["level", "text"]
    by_text = {row["text"]: row["level"] for row in texts.train}
    assert by_text["Question 3?\nAnswer 3."] == 1  # the score stayed with its row through alpaca -> text and shuffle

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    docs = tokenize_documents(texts.train, tokenizer, keep_columns=["level"])
    ordered = order_documents(docs, texts.train, curriculum_args(curriculum="column", curriculum_column="level"), 0)
    assert ordered["level"] == sorted(by_text.values())


def test_column_scores_must_be_numbers():
    with pytest.raises(UserError, match="row 0 holds '1', not a number"):
        column_scores(Dataset.from_dict({"level": ["1", "hard"]}), "level")
    with pytest.raises(UserError, match="no column 'difficulty'"):
        column_scores(Dataset.from_dict({"level": [1]}), "difficulty")


def test_model_loss_curriculum_orders_by_the_scoring_models_mean_token_loss(base_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    texts = ["the the the the the the the the the the the the", "Zebra quantum 7 ox!? jumps — über", "a b"]
    scores = model_loss_scores(texts, str(base_model_dir), max_length=32, batch_size=2)
    scorer, tokenizer = (
        AutoModelForCausalLM.from_pretrained(base_model_dir),
        AutoTokenizer.from_pretrained(base_model_dir),
    )
    for text, score in zip(texts, scores, strict=True):  # batched with padding = each text alone
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            assert score == pytest.approx(scorer(input_ids=ids, labels=ids).loss.item(), rel=1e-4)
    dataset = Dataset.from_dict({"text": texts})
    docs = tokenize_documents(dataset, tokenizer)
    args = curriculum_args(curriculum="model_loss", curriculum_model=str(base_model_dir))
    ordered = order_documents(docs, dataset, args, seed=0)
    expected = [docs[i]["input_ids"] for i in curriculum_order(scores)]
    assert ordered["input_ids"] == expected
