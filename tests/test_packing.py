"""Pretraining rows: packing keeps every token, labels line up, document boundaries hold, MLM masks at its rate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

from llm_recipes.data.packing import (
    IGNORE_INDEX,
    PackedLMCollator,
    non_padding_share,
    pack_documents,
    row_lengths,
    target_token_count,
    tokenize_documents,
)
from llm_recipes.models.loading import build_config
from llm_recipes.pretrain.build import MASK_TOKEN, prepare_tokenizer


@pytest.fixture(scope="module")
def tokenizer(base_model_dir):
    return AutoTokenizer.from_pretrained(base_model_dir)


def documents(count: int = 300) -> list[str]:
    c4 = SHARED_DATA / "c4_demo.jsonl"
    if c4.is_file():
        return [json.loads(line)["text"] for line in c4.read_text().splitlines()[:count]]
    return [f"Document number {i} says " + "words " * (i % 37 + 1) for i in range(count)]


def packed(tokenizer, texts, block_size=64, **kwargs):
    docs = tokenize_documents(Dataset.from_dict({"text": texts}), tokenizer)
    return docs, pack_documents(docs, block_size, **kwargs)


def test_packing_keeps_every_token_in_order_with_eos_between_documents(tokenizer):
    texts = documents()
    docs, blocks = packed(tokenizer, texts, block_size=64)
    eos = tokenizer.eos_token_id
    for text, ids in zip(texts, docs["input_ids"], strict=True):
        assert ids == tokenizer(text)["input_ids"] + [eos]  # every document ends with EOS, nothing else added
    stream = [token for ids in docs["input_ids"] for token in ids]
    packed_stream = [token for row in blocks["input_ids"] for token in row]
    assert packed_stream == stream  # no token lost, duplicated or reordered
    lengths = row_lengths(blocks)
    assert (lengths[:-1] == 64).all() and 0 < lengths[-1] <= 64  # only the last block is short
    assert packed_stream.count(eos) == len(texts)
    share = non_padding_share(lengths, batch_size=8, fixed_width=64)
    assert share >= 0.99


def test_without_packing_each_row_is_one_document_split_at_block_size(tokenizer):
    texts = documents(20) + [f"a short note number {i}" for i in range(40)]
    docs, rows = packed(tokenizer, texts, block_size=64, pack=False)
    expected = [ids[i : i + 64] for ids in docs["input_ids"] for i in range(0, len(ids), 64)]
    assert rows["input_ids"] == expected
    _, short_rows = packed(tokenizer, [f"note {i}: " + "ok " * (i % 20) for i in range(64)], block_size=64, pack=False)
    share = non_padding_share(row_lengths(short_rows), batch_size=8, pad_to_multiple_of=8)
    assert share < 0.99  # padding to the longest row of each batch costs something ...
    assert share > non_padding_share(row_lengths(short_rows), batch_size=8, fixed_width=64)  # ... less than a block


def test_causal_labels_align_with_inputs_and_skip_padding(tokenizer):
    _, blocks = packed(tokenizer, documents(40), block_size=64)
    rows = [blocks[i] for i in range(len(blocks) - 2, len(blocks))]  # a full block and the short last one
    batch = PackedLMCollator(pad_token_id=tokenizer.pad_token_id, fixed_width=64)(rows)
    assert batch["input_ids"].shape == (2, 64)
    length = len(rows[1]["input_ids"])
    assert torch.equal(batch["labels"][0], batch["input_ids"][0])  # the model shifts; labels are the inputs
    assert torch.equal(batch["labels"][1, :length], batch["input_ids"][1, :length])
    assert (batch["labels"][1, length:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, length:] == tokenizer.pad_token_id).all()
    assert "attention_mask" not in batch  # trailing padding cannot reach earlier tokens of a causal model
    assert target_token_count(batch["labels"], causal=True) == 63 + length - 1


def test_separate_documents_restart_positions_and_drop_cross_document_targets(tokenizer):
    _, blocks = packed(tokenizer, documents(40), block_size=64, separate_documents=True)
    batch = PackedLMCollator(pad_token_id=tokenizer.pad_token_id, fixed_width=64, separate_documents=True)(
        [blocks[i] for i in range(4)]
    )
    ids, positions, labels = batch["input_ids"], batch["position_ids"], batch["labels"]
    eos = tokenizer.eos_token_id
    after_eos = torch.zeros_like(ids, dtype=torch.bool)
    after_eos[:, 1:] = ids[:, :-1] == eos
    assert (positions[after_eos] == 0).all()  # a new document starts at position 0 ...
    assert (positions[:, 0] == 0).all()  # ... and so does every block
    inner = ~after_eos
    inner[:, 0] = False
    assert (positions[inner] == positions.roll(1, dims=1)[inner] + 1).all()
    assert (labels[after_eos] == IGNORE_INDEX).all()  # a document's first token is not predicted from the last one
    assert torch.equal(labels[inner], ids[inner])
    assert batch["use_cache"] is False


def _two_documents(tokenizer, first: list[int], separate: bool, objective="clm", mlm=None, additive=False):
    """One packed block: `first` + EOS, then a fixed second document + EOS, padded to 64."""
    eos = tokenizer.eos_token_id
    docs = Dataset.from_dict({"input_ids": [first + [eos], SECOND + [eos]]})
    blocks = pack_documents(docs, 64, separate_documents=separate)
    collator = PackedLMCollator(
        pad_token_id=tokenizer.pad_token_id,
        objective=objective,
        fixed_width=64,
        separate_documents=separate,
        mlm_collator=mlm,
        special_token_ids=tokenizer.all_special_ids,
        additive_attention_mask=additive,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same masking for both variants of the first document
        batch = collator([blocks[0]])
    return batch, len(first) + 1


# ordinary (non-special) token ids: two first documents of the same length, and the document after them
FIRST, ALTERED, SECOND = list(range(100, 110)), list(range(200, 210)), list(range(300, 312))


def _second_document_logits(model, tokenizer, first, separate, **kwargs) -> torch.Tensor:
    batch, start = _two_documents(tokenizer, first, separate, **kwargs)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    return logits[0, start : start + len(SECOND) + 1]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_token_never_attends_to_the_previous_document_when_separated(tokenizer, attention):
    torch.manual_seed(0)
    config = build_config(tokenizer, preset="llama-tiny")
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()
    batch, _ = _two_documents(tokenizer, FIRST, separate=True)
    assert "attention_mask" not in batch and "position_ids" in batch

    separated = _second_document_logits(model, tokenizer, FIRST, True)
    assert torch.allclose(separated, _second_document_logits(model, tokenizer, ALTERED, True), atol=1e-5)
    crossing = _second_document_logits(model, tokenizer, FIRST, False)
    assert not torch.allclose(crossing, _second_document_logits(model, tokenizer, ALTERED, False), atol=1e-3)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_an_encoder_keeps_documents_apart_with_a_block_diagonal_mask(base_model_dir, attention):
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    prepare_tokenizer(tokenizer, "mlm")
    torch.manual_seed(0)
    config = build_config(tokenizer, preset="bert-tiny", objective="mlm")
    model = AutoModelForMaskedLM.from_config(config, attn_implementation=attention).eval()
    mlm = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15)
    options = dict(objective="mlm", mlm=mlm, additive=attention == "eager")

    batch, _ = _two_documents(tokenizer, FIRST, True, **options)
    assert batch["attention_mask"].shape == (1, 1, 64, 64)
    separated = _second_document_logits(model, tokenizer, FIRST, True, **options)
    assert torch.allclose(separated, _second_document_logits(model, tokenizer, ALTERED, True, **options), atol=1e-5)
    crossing = _second_document_logits(model, tokenizer, FIRST, False, **options)
    assert not torch.allclose(crossing, _second_document_logits(model, tokenizer, ALTERED, False, **options), atol=1e-3)


def test_mlm_masks_its_share_of_ordinary_tokens_and_never_special_ones(base_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    notes = prepare_tokenizer(tokenizer, "mlm")
    assert tokenizer.mask_token == MASK_TOKEN and any(MASK_TOKEN in note for note in notes)
    _, blocks = packed(tokenizer, documents(), block_size=128)
    collator = PackedLMCollator(
        pad_token_id=tokenizer.pad_token_id,
        objective="mlm",
        fixed_width=128,
        mlm_collator=DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15),
        special_token_ids=tokenizer.all_special_ids,
    )
    torch.manual_seed(0)
    original = torch.tensor(np.concatenate([row for row in blocks["input_ids"][:64]])).reshape(64, 128)
    batch = collator([blocks[i] for i in range(64)])
    targets = batch["labels"] != IGNORE_INDEX
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    assert not targets[special].any()  # EOS separators are never masked
    rate = targets.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.015
    assert torch.equal(batch["labels"][targets], original[targets])  # labels hold the original tokens
    replaced = (batch["input_ids"][targets] == tokenizer.mask_token_id).float().mean().item()
    assert abs(replaced - 0.8) < 0.05  # 80% become the mask token, the rest random or kept
    assert torch.equal(batch["input_ids"][~targets], original[~targets])
