"""The pretrain recipe: config checks, the NaN guard, and end-to-end runs on tiny models (causal, masked, LSTM,
continued, resumed)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import DEMO_DATA, write_yaml
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    EarlyStoppingCallback,
    TrainerCallback,
    TrainerControl,
)

from llm_recipes.cli import load_recipe
from llm_recipes.errors import UserError
from llm_recipes.pretrain.trainer import build_trainer
from llm_recipes.runs.manifest import read_manifest
from llm_recipes.training.callbacks import NonFiniteLossGuard

PRETRAIN = load_recipe("pretrain")
ARITHMETIC = DEMO_DATA / "arithmetic_alpaca.jsonl"


def pretrain_config(tokenizer_dir: Path, output_dir: Path, **overrides) -> dict:
    config = {
        "dataset_path": str(ARITHMETIC),
        "eval_split_size": 0.1,
        "tokenizer_name_or_path": str(tokenizer_dir),
        "preset": "llama-tiny",
        "block_size": 64,
        "output_dir": str(output_dir),
        "max_steps": 4,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 16,
        "learning_rate": 3e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    return {key: value for key, value in {**config, **overrides}.items() if value is not None}


def parse(tmp_path: Path, config: dict, *cli: str) -> tuple:
    return PRETRAIN.parse_args(["--config", str(write_yaml(tmp_path / "pretrain.yaml", config)), *cli])


def run(tmp_path: Path, config: dict, callbacks=()) -> dict:
    return PRETRAIN.main(*parse(tmp_path, config), callbacks=callbacks)


# --------------------------------------------------------------------------------------------------------------
# Config checks: every mistake is one UserError before a model is built


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"preset": None}, "set exactly one of model_name_or_path"),
        ({"config_name": "./no/such/config"}, "got preset, config_name"),
        ({"preset": "llama-huge"}, "preset: unknown 'llama-huge'"),
        ({"objective": "mlm"}, "masked LM needs an encoder"),
        ({"preset": "bert-tiny"}, "encoder trains with objective: mlm"),
        ({"block_size": 4}, "block_size: 4 must be >= 8"),
        ({"mlm_probability": 1.5}, "mlm_probability: 1.5 must be in"),
        ({"tokenizer_name_or_path": None}, "tokenizer_name_or_path is required"),
        ({"tokenizer_name_or_path": "./no/such/tokenizer"}, "tokenizer folder not found"),
        ({"dataset_path": "missing.jsonl"}, "dataset file not found"),
        ({"curriculum": "column"}, "needs curriculum_column"),
        ({"curriculum": "model_loss"}, "needs curriculum_model"),
        ({"curriculum": "hardest"}, "invalid choice 'hardest'"),
        ({"preset": "lstm-tiny", "packing_boundaries": "separate"}, "needs an attention model"),
        ({"eval_split_size": 0, "eval_strategy": "steps"}, "there is no eval data"),
        ({"eval_split_size": 0, "early_stopping_patience": 2}, "early_stopping_patience needs evaluation"),
        ({"config_overrides": "hidden_size=8"}, "config_overrides: expected a mapping"),
    ],
)
def test_config_mistakes_are_one_line_errors(tmp_path, base_model_dir, overrides, message):
    with pytest.raises(UserError, match=message):
        parse(tmp_path, pretrain_config(base_model_dir, tmp_path / "out", **overrides))


def test_evaluation_follows_the_save_steps_unless_told_otherwise(tmp_path, base_model_dir):
    base = pretrain_config(base_model_dir, tmp_path / "out", save_strategy="steps", save_steps=7)
    script_args, training_args = parse(tmp_path, base)
    assert training_args.eval_strategy.value == "steps" and training_args.eval_steps == 7
    assert script_args.packing is True and script_args.eval_before_training is True
    _, training_args = parse(tmp_path, {**base, "eval_steps": 3})
    assert training_args.eval_steps == 3
    _, training_args = parse(tmp_path, base, "--save_steps", "50")
    assert training_args.eval_steps == 50
    # checked by TrainingArguments itself: best-model loading needs evaluation on (a divisor of) the save steps
    _, training_args = parse(tmp_path, {**base, "logging_steps": 5, "load_best_model_at_end": True})
    assert training_args.eval_steps == 7 and training_args.load_best_model_at_end
    _, training_args = parse(tmp_path, {**base, "save_strategy": "epoch"})
    assert training_args.eval_strategy.value == "epoch"
    _, training_args = parse(tmp_path, {**base, "eval_split_size": 0})
    assert training_args.eval_strategy.value == "no"
    # YAML false for a field that defaults to true is kept (argparse's --no_<field> twin must not win)
    script_args, _ = parse(tmp_path, {**base, "packing": False, "eval_before_training": False})
    assert script_args.packing is False and script_args.eval_before_training is False
    _, training_args = parse(tmp_path, {**base, "early_stopping_patience": 2})
    assert training_args.metric_for_best_model == "eval_loss" and training_args.greater_is_better is False


def test_config_overrides_and_dropout_shape_the_model(tmp_path, base_model_dir):
    config = pretrain_config(
        base_model_dir,
        tmp_path / "out",
        config_overrides={"num_hidden_layers": 1, "hidden_size": 32},
        dropout=0.2,
        early_stopping_patience=2,
        save_strategy="steps",
        save_steps=2,
    )
    trainer, blocks, _ = build_trainer(*parse(tmp_path, config))
    model_config = trainer.model.config
    assert (model_config.num_hidden_layers, model_config.hidden_size, model_config.attention_dropout) == (1, 32, 0.2)
    assert model_config.vocab_size == len(AutoTokenizer.from_pretrained(base_model_dir))  # follows the tokenizer
    assert any(isinstance(cb, EarlyStoppingCallback) for cb in trainer.callback_handler.callbacks)
    assert len(blocks.train) > 1 and max(len(row) for row in blocks.train["input_ids"]) == 64


# --------------------------------------------------------------------------------------------------------------
# NaN guard (unit)


def test_guard_stops_at_the_first_non_finite_loss_and_cancels_the_save(tmp_path):
    guard = NonFiniteLossGuard()
    for step, loss in enumerate([2.0, 1.5, float("nan"), float("inf")], start=1):
        guard.observe(torch.tensor(loss), step)
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    (tmp_path / "checkpoint-3").mkdir()  # cut short while saving: not a checkpoint to go back to
    control = TrainerControl(should_save=True, should_evaluate=True)
    guard.on_step_end(SimpleNamespace(output_dir=str(tmp_path)), SimpleNamespace(global_step=4, max_steps=10), control)
    assert control.should_training_stop and not control.should_save and not control.should_evaluate
    assert guard.failure.startswith("loss became nan at step 3; training stopped without saving")
    assert str(tmp_path / "checkpoint-2") in guard.failure


def test_guard_checks_weights_before_a_save_even_when_the_loss_was_finite(tmp_path):
    guard = NonFiniteLossGuard()
    guard.observe(torch.tensor(1.0), 1)
    model = torch.nn.Linear(2, 2)
    state = SimpleNamespace(global_step=1, max_steps=10)
    control = TrainerControl(should_log=True)
    guard.on_step_end(SimpleNamespace(output_dir=str(tmp_path)), state, control, model=model)
    assert guard.failure is None and not control.should_training_stop
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    control = TrainerControl(should_save=True)
    guard.on_step_end(SimpleNamespace(output_dir=str(tmp_path)), state, control, model=model)
    assert control.should_training_stop and not control.should_save
    assert guard.failure.startswith("weights became nan/inf at step 1") and "no checkpoint was saved" in guard.failure


# --------------------------------------------------------------------------------------------------------------
# End to end (each trains a tiny model for a few steps)


@pytest.mark.slow
def test_tokenizer_then_pretraining_on_wiki_lowers_eval_perplexity(tmp_path, shared_data):
    from llm_recipes.tokenizer.training import train_bpe_tokenizer

    wiki = shared_data / "wiki_demo.txt"
    tokenizer = train_bpe_tokenizer(wiki.read_text(encoding="utf-8").splitlines(), vocab_size=1000)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    out = tmp_path / "wiki-clm"
    config = pretrain_config(
        tmp_path / "tokenizer",
        out,
        dataset_path=str(wiki),
        eval_split_size=1,
        block_size=64,
        max_steps=24,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=64,
        learning_rate=1e-2,
        warmup_steps=3,
        lr_scheduler_type="cosine",
        logging_steps=8,
    )
    summary = run(tmp_path, config)

    assert summary["eval perplexity"] < 0.7 * summary["eval perplexity before training"]
    assert summary["eval perplexity"] == pytest.approx(torch.tensor(summary["eval loss"]).exp().item(), rel=1e-4)
    assert summary["non-padding share"] >= 0.99
    assert summary["training documents"] == 29 and summary["optimizer steps"] == 24
    assert summary["tokens trained on"] == pytest.approx(24 * 8 * 64, rel=0.01)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer) and model.config.model_type == "llama"
    assert len(AutoTokenizer.from_pretrained(out)) == len(tokenizer)
    manifest = read_manifest(out)
    assert manifest["stage"] == "pretrain" and manifest["metrics"]["eval perplexity"] == summary["eval perplexity"]


@pytest.mark.slow
def test_masked_lm_from_scratch_loads_with_automodelformaskedlm(tmp_path, base_model_dir, capsys):
    out = tmp_path / "mlm"
    config = pretrain_config(
        base_model_dir,
        out,
        preset="bert-tiny",
        objective="mlm",
        packing_boundaries="separate",
        max_steps=24,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        dropout=0.0,
    )
    summary = run(tmp_path, config)

    assert "added <|mask|>" in capsys.readouterr().out  # the tokenizer had no mask token: added, and said so
    assert summary["eval perplexity"] < summary["eval perplexity before training"]
    model = AutoModelForMaskedLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "bert" and tokenizer.mask_token == "<|mask|>"
    assert model.config.vocab_size == len(tokenizer)
    ids = tokenizer("12 plus 13 is <|mask|>.", return_tensors="pt")
    with torch.no_grad():
        assert model(**ids).logits.shape[-1] == len(tokenizer)


@pytest.mark.slow
def test_lstm_baseline_trains_and_reloads_with_automodelforcausallm(tmp_path, base_model_dir):
    import llm_recipes.models  # noqa: F401  (registers recurrent_lm with the Auto classes)

    out = tmp_path / "lstm"
    config = pretrain_config(base_model_dir, out, preset="lstm-tiny", max_steps=12, learning_rate=1e-2)
    summary = run(tmp_path, config)

    assert summary["eval perplexity"] < summary["eval perplexity before training"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "RecurrentLMForCausalLM"
    saved = load_file(out / "model.safetensors")
    for name, tensor in model.state_dict().items():
        if name in saved:
            assert torch.equal(tensor, saved[name])
    generated = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 7)


@pytest.mark.slow
def test_continued_pretraining_grows_the_embeddings_for_new_tokens(tmp_path, base_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    tokenizer.add_tokens(["plus", "minus", "seventeen"])
    tokenizer.save_pretrained(tmp_path / "grown")
    out = tmp_path / "continued"
    config = pretrain_config(
        tmp_path / "grown", out, preset=None, model_name_or_path=str(base_model_dir), max_steps=2, eval_split_size=0
    )
    summary = run(tmp_path, config)

    assert summary["embedding rows added"] == 3
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    base = AutoModelForCausalLM.from_pretrained(base_model_dir)
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)


@pytest.mark.slow
def test_curriculum_rows_reach_the_model_in_curriculum_order(tmp_path, base_model_dir):
    config = pretrain_config(base_model_dir, tmp_path / "out", curriculum="length", packing=False, eval_split_size=0)
    trainer, blocks, _ = build_trainer(*parse(tmp_path, config))
    lengths = [len(row) for row in blocks.train["input_ids"]]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    seen = []
    for batch in trainer.get_train_dataloader():
        real = batch["attention_mask"] if "attention_mask" in batch else torch.ones_like(batch["input_ids"])
        seen += real.sum(dim=1).tolist()
    assert seen == lengths  # no reshuffling between the curriculum and the model


class Interrupted(Exception):
    """Stands in for a killed process: raised right after the first checkpoint is written."""


class InterruptAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise Interrupted(f"stopped after saving step {state.global_step}")


@pytest.mark.slow
def test_a_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, base_model_dir, capsys):
    def config(out: Path) -> dict:
        return pretrain_config(
            base_model_dir,
            out,
            max_steps=6,
            save_strategy="steps",
            save_steps=3,
            eval_split_size=0,
            dropout=0.1,  # the dropout RNG must be restored too
            lr_scheduler_type="cosine",
            warmup_steps=2,
        )

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(tmp_path, config(straight))
    with pytest.raises(Interrupted):
        run(tmp_path, config(resumed), callbacks=[InterruptAfterFirstSave()])
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == ["checkpoint-3"]
    assert not read_manifest(resumed)["complete"] and not (resumed / "model.safetensors").exists()

    summary = run(tmp_path, config(resumed))
    assert f"resuming from {resumed / 'checkpoint-3'}" in capsys.readouterr().out
    assert summary["optimizer steps"] == 6
    expected, actual = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.allclose(expected[name], actual[name], atol=1e-6), name
    initial = load_file(straight / "checkpoint-3" / "model.safetensors")
    assert any(not torch.equal(initial[name], expected[name]) for name in expected)  # steps 4-6 did change them


class CorruptWeights(TrainerCallback):
    """Overwrites a weight with NaN at the end of one step (before the guard looks: callbacks run in order)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("corrupt_at", "message"), [(3, "loss became nan at step 4"), (4, "weights became nan/inf at step 4")]
)
def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, base_model_dir, corrupt_at, message):
    out = tmp_path / "nan"
    config = pretrain_config(
        base_model_dir, out, max_steps=8, save_strategy="steps", save_steps=2, logging_steps=10, eval_split_size=0
    )
    with pytest.raises(UserError, match=message) as failure:
        run(tmp_path, config, callbacks=[CorruptWeights(corrupt_at)])
    assert f"the last good checkpoint is {out / 'checkpoint-2'}" in str(failure.value)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # nothing saved after the NaN
    good = load_file(out / "checkpoint-2" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in good.values())
    assert not read_manifest(out)["complete"] and not (out / "model.safetensors").exists()
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
