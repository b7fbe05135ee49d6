"""Model presets and the recurrent baseline: built from a preset, trained a little, saved, reloaded by Auto classes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from llm_recipes.errors import UserError
from llm_recipes.models.loading import build_config, init_model, preset_names, resize_for_tokenizer
from llm_recipes.tokenizer.training import train_bpe_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"the cat number {i} sat on the mat and looked at dog {i * 7}." for i in range(300)]
    return train_bpe_tokenizer(texts, vocab_size=400)


@pytest.mark.parametrize(
    ("preset", "objective", "auto_class"),
    [
        ("llama-tiny", "clm", AutoModelForCausalLM),
        ("lstm-tiny", "clm", AutoModelForCausalLM),
        ("gru-tiny", "clm", AutoModelForCausalLM),
        ("bert-tiny", "mlm", AutoModelForMaskedLM),
    ],
)
def test_preset_round_trips_through_auto_class(tokenizer, tmp_path, preset, objective, auto_class):
    config = build_config(tokenizer, preset=preset, objective=objective)
    assert config.vocab_size == len(tokenizer)
    assert config.pad_token_id == tokenizer.pad_token_id
    model = init_model(config, objective).eval()
    ids = torch.tensor([tokenizer("the cat sat on the mat").input_ids])
    logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    model.save_pretrained(tmp_path)
    reloaded = auto_class.from_pretrained(tmp_path)
    assert type(reloaded) is type(model)
    assert torch.allclose(reloaded(input_ids=ids).logits, logits)


def test_recurrent_baseline_learns_and_generates(tokenizer):
    torch.manual_seed(0)
    model = init_model(build_config(tokenizer, preset="lstm-tiny", overrides={"dropout": 0.0}))
    assert model.lm_head.weight is model.embed_tokens.weight  # tied, like the Llama presets
    batch = tokenizer(["the cat number 3 sat on the mat and looked at dog 21."] * 4, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 3
    prompt = tokenizer("the cat number 3", return_tensors="pt")
    generated = model.eval().generate(**prompt, max_new_tokens=6, do_sample=False)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 6
    assert "sat" in tokenizer.decode(generated[0][prompt["input_ids"].shape[1] :])


def test_objective_must_match_architecture(tokenizer):
    with pytest.raises(UserError, match="objective: mlm"):
        build_config(tokenizer, preset="bert-tiny", objective="clm")
    with pytest.raises(UserError, match="masked LM needs an encoder"):
        build_config(tokenizer, preset="lstm-tiny", objective="mlm")
    with pytest.raises(UserError, match="did you mean|choose from"):
        build_config(tokenizer, preset="llama-huge")
    with pytest.raises(UserError, match="exactly one"):
        build_config(tokenizer)


def test_config_name_with_overrides(tokenizer, tmp_path):
    init_model(build_config(tokenizer, preset="llama-tiny")).config.save_pretrained(tmp_path)
    config = build_config(tokenizer, config_name=str(tmp_path), overrides={"num_hidden_layers": 1})
    assert config.num_hidden_layers == 1 and config.model_type == "llama"
    assert {"llama-1b", "bert-base", "lstm-tiny"} <= set(preset_names())


def test_embeddings_grow_with_the_tokenizer(tokenizer):
    model = init_model(build_config(tokenizer, preset="llama-tiny"))
    grown = train_bpe_tokenizer(["a b c"] * 10, vocab_size=300)
    assert resize_for_tokenizer(model, grown) == 0  # never shrinks
    bigger = train_bpe_tokenizer([f"word{i} " * 3 for i in range(500)], vocab_size=900)
    added = resize_for_tokenizer(model, bigger)
    assert added == len(bigger) - len(tokenizer)
    assert model.get_input_embeddings().weight.shape[0] == len(bigger)


def test_recurrent_loss_scales_by_the_accumulated_token_count(tokenizer):
    """The Trainer passes num_items_in_batch under gradient accumulation; the loss must be sum / that count."""
    model = init_model(build_config(tokenizer, preset="gru-tiny")).eval()
    batch = tokenizer(["the cat sat on the mat", "a dog looked at the cat and sat"], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    mean_loss = model(**batch, labels=labels).loss
    targets = int((labels[:, 1:] != -100).sum())
    summed = model(**batch, labels=labels, num_items_in_batch=targets * 2).loss
    assert torch.allclose(summed * 2, mean_loss)
