"""The task fine-tuning recipe: config checks (one UserError each, before any model), derived defaults, the
class-weighted loss and layer-wise learning rates, freezing, and end-to-end runs on tiny encoders (and a tiny
decoder) for classification, NER and extractive QA whose outputs load in `transformers.pipeline`; the Optuna search;
the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import DEMO_DATA, PROJECT, write_yaml
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertForSequenceClassification,
    EarlyStoppingCallback,
    TrainingArguments,
    pipeline,
)

from llm_recipes.cli import load_recipe
from llm_recipes.data.task_demo import ner_rows, qa_rows, sentiment_rows
from llm_recipes.errors import UserError
from llm_recipes.runs.manifest import read_manifest
from llm_recipes.tasks.build import build_trainer
from llm_recipes.tasks.models import freeze_lower_layers
from llm_recipes.tasks.training import TaskTrainer, layerwise_parameter_groups

STAGE = "finetune-task"
RECIPE_FILE = PROJECT / "recipes" / "finetune_task.py"
TINY_BERT = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}


FT = load_recipe(STAGE)


@pytest.fixture(scope="module")
def task_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("task-data")
    files = {
        "classification": (folder / "sentiment.jsonl", sentiment_rows(48, seed=1)),
        "token-classification": (folder / "ner.jsonl", ner_rows(40, seed=1)),
        "question-answering": (folder / "qa.jsonl", qa_rows(32, seed=1)),
    }
    for path, rows in files.values():
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return {task: path for task, (path, _) in files.items()}


def task_config(task_name: str, task_data, tokenizer_dir: Path | None, output_dir: Path, **overrides) -> dict:
    config = {
        "task": task_name,
        "dataset_path": str(task_data[task_name]),
        "eval_split_size": 0.25,
        "tokenizer_name_or_path": str(tokenizer_dir) if tokenizer_dir else None,
        "preset": "bert-tiny",
        "config_overrides": TINY_BERT,
        "max_length": 48,
        "output_dir": str(output_dir),
        "num_train_epochs": 2,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 32,
        "learning_rate": 3e-3,
        "logging_steps": 2,
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    if task_name == "question-answering":
        config.update(max_length=32, doc_stride=8, max_answer_length=6)
    return {key: value for key, value in {**config, **overrides}.items() if value is not None}


def parse(tmp_path: Path, config: dict, *cli: str) -> tuple:
    return FT.parse_args(["--config", str(write_yaml(tmp_path / "finetune.yaml", config)), *cli])


def run(tmp_path: Path, config: dict) -> dict:
    return FT.main(*parse(tmp_path, config))


# --------------------------------------------------------------------------------------------------------------
# Config checks: every mistake is one UserError before a model is built


@pytest.mark.parametrize(
    ("task", "overrides", "message"),
    [
        ("classification", {"task": None}, "task is required"),
        ("classification", {"task": "summarization"}, "task: invalid choice 'summarization'"),
        ("classification", {"dataset_path": "missing.jsonl"}, "dataset file not found"),
        ("classification", {"preset": "bert-huge"}, "preset: unknown 'bert-huge'"),
        ("classification", {"preset": "lstm-tiny"}, "preset: unknown 'lstm-tiny'"),
        ("classification", {"preset": None}, "set exactly one of model_name_or_path"),
        ("classification", {"tokenizer_name_or_path": None}, "tokenizer_name_or_path is required"),
        ("classification", {"tokenizer_name_or_path": "./no/such/tokenizer"}, "tokenizer folder not found"),
        ("classification", {"use_peft": True, "freeze_layers": 1}, "freeze_layers and use_peft exclude"),
        ("classification", {"freeze_layers": 5}, "freeze_layers: 5 but preset bert-tiny has only 2 layers"),
        ("classification", {"layerwise_lr_decay": 1.5}, r"layerwise_lr_decay: 1.5 must be in \(0, 1\]"),
        ("classification", {"load_in_4bit": True, "use_peft": True}, "quantized training is not supported"),
        ("classification", {"eval_split_size": 0, "early_stopping_patience": 2}, "early_stopping_patience needs eval"),
        ("classification", {"metric_for_best_model": "exact_match"}, "'exact_match' is not a classification metric"),
        ("classification", {"text_pair_column": "text"}, "text_pair_column: must differ"),
        ("question-answering", {"doc_stride": 32}, r"doc_stride: 32 must be smaller than max_length \(32\)"),
        ("question-answering", {"class_weights": "balanced"}, "class_weights: only for classification"),
        ("question-answering", {"metric_for_best_model": "f1_macro"}, "'f1_macro' is not a question-answering"),
        ("classification", {"search": {"trials": 2, "spaces": {}}}, "search: unknown key 'spaces'; did you mean space"),
        ("classification", {"search": {"space": {"lr": [1e-3]}}}, "search.space.lr: not a training field"),
        (
            "classification",
            {"search": {"space": {"lora_r": [2, 4]}}},
            "lora_r: searching a LoRA setting needs use_peft",
        ),
        ("classification", {"search": {"trials": 0}}, "search.trials: 0 must be an integer >= 1"),
        (
            "classification",
            {"search": {"space": {"learning_rate": {"low": 0, "high": 1, "log": True}}}},
            "needs low > 0",
        ),
    ],
)
def test_config_mistakes_are_one_line_errors(tmp_path, base_model_dir, task_data, task, overrides, message):
    pytest.importorskip("optuna") if "search" in overrides else None
    with pytest.raises(UserError, match=message):
        parse(tmp_path, task_config(task, task_data, base_model_dir, tmp_path / "out", **overrides))


def test_search_without_optuna_says_how_to_install_it(tmp_path, base_model_dir, task_data, monkeypatch):
    import llm_recipes.tasks.search as search

    monkeypatch.setattr(search, "optuna_available", lambda: False)
    config = task_config("classification", task_data, base_model_dir, tmp_path / "out", search={"trials": 2})
    with pytest.raises(UserError, match=r"search needs Optuna: pip install 'llm-recipes\[search\]'"):
        parse(tmp_path, config)


def test_data_mistakes_fail_after_reading_the_data_but_before_the_model(
    tmp_path, base_model_dir, task_data, monkeypatch
):
    import llm_recipes.tasks.models as models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the data was checked")

    monkeypatch.setattr(models, "model_builder", no_model)
    out = tmp_path / "out"
    for overrides, message in [
        ({"text_column": "review"}, "text_column: .* has no column 'review'"),
        ({"labels": ["positive", "negative"]}, "labels: label 'neutral' .* is not one of the labels"),
        ({"metric_for_best_model": "f1_happy"}, "'f1_happy' is not a classification metric"),
        ({"class_weights": [1, 2]}, "class_weights: 2 weights for 3 labels"),
    ]:
        with pytest.raises(UserError, match=message):
            run(tmp_path, task_config("classification", task_data, base_model_dir, out, **overrides))


def test_evaluation_defaults_follow_the_task_and_the_save_schedule(tmp_path, base_model_dir, task_data):
    base = task_config("classification", task_data, base_model_dir, tmp_path / "out")
    _, training_args, _ = parse(tmp_path, base)
    assert training_args.metric_for_best_model == "f1_macro" and training_args.greater_is_better
    assert training_args.load_best_model_at_end and training_args.eval_strategy.value == "epoch"
    _, training_args, _ = parse(tmp_path, {**base, "save_strategy": "steps", "save_steps": 4})
    assert training_args.eval_strategy.value == "steps" and training_args.eval_steps == 4
    _, training_args, _ = parse(tmp_path, {**base, "metric_for_best_model": "loss"})
    assert training_args.greater_is_better is False
    _, training_args, _ = parse(tmp_path, {**base, "eval_split_size": 0})
    assert training_args.eval_strategy.value == "no" and not training_args.load_best_model_at_end
    qa = task_config("question-answering", task_data, base_model_dir, tmp_path / "out")
    assert parse(tmp_path, qa)[1].metric_for_best_model == "f1"


def test_early_stopping_is_wired_in(tmp_path, base_model_dir, task_data):
    config = task_config("classification", task_data, base_model_dir, tmp_path / "out", early_stopping_patience=2)
    trainer, built = build_trainer(*parse(tmp_path, config))
    assert any(isinstance(cb, EarlyStoppingCallback) for cb in trainer.callback_handler.callbacks)
    assert built.data.labels == ["negative", "neutral", "positive"]
    assert trainer.model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert trainer.model.config.hidden_size == 32
    again, _ = build_trainer(*parse(tmp_path, config))  # seeded: a rerun starts from the same weights
    assert torch.equal(trainer.model.classifier.weight, again.model.classifier.weight)


# --------------------------------------------------------------------------------------------------------------
# Search pieces (unit)


def test_search_section_space_and_objective():
    optuna = pytest.importorskip("optuna")
    from llm_recipes.tasks.search import DEFAULT_SPACE, BestObjective, hp_space, lora_overrides, parse_search

    fields = {"learning_rate", "per_device_train_batch_size", "num_train_epochs", "weight_decay", "warmup_steps"}
    spec = parse_search('{"trials": 3}', fields, use_peft=True, default_metric="f1", greater_is_better=True)
    assert (spec.trials, spec.metric, spec.direction) == (3, "f1", "maximize")  # a JSON string: the command line
    assert set(spec.space) == {*DEFAULT_SPACE, "lora_r"}
    loss = parse_search({"metric": "eval_loss"}, fields, use_peft=False, default_metric="f1", greater_is_better=True)
    assert (loss.metric, loss.direction, loss.trials) == ("loss", "minimize", 10) and "lora_r" not in loss.space
    assert parse_search(None, fields, use_peft=False, default_metric="f1", greater_is_better=True) is None

    trial = optuna.trial.FixedTrial(
        {
            "learning_rate": 1e-4,
            "per_device_train_batch_size": 16,
            "num_train_epochs": 3,
            "weight_decay": 0.05,
            "warmup_steps": 0.1,
            "lora_r": 8,
        }
    )
    assert hp_space(spec)(trial) == {
        "learning_rate": 1e-4,
        "per_device_train_batch_size": 16,
        "num_train_epochs": 3,
        "weight_decay": 0.05,
        "warmup_steps": 0.1,
    }  # the LoRA rank is not a TrainingArguments field: it reaches the model through model_init
    assert lora_overrides(spec)(trial) == {"lora_r": 8}

    objective = BestObjective("f1", maximize=True)
    assert [objective({"eval_f1": value}) for value in (0.4, 0.7, 0.5)] == [0.4, 0.7, 0.7]  # the trial's best
    objective.reset()
    assert objective({"eval_f1": 0.2}) == 0.2
    with pytest.raises(UserError, match="search.metric: 'f1' was not evaluated"):
        objective({"eval_loss": 1.0})


# --------------------------------------------------------------------------------------------------------------
# Trainer pieces (unit)


def _tiny_classifier(num_labels: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, num_hidden_layers=2, num_labels=num_labels, max_position_embeddings=16, **TINY_BERT
    )
    return BertForSequenceClassification(config)


def test_class_weights_weigh_the_cross_entropy(tmp_path):
    model = _tiny_classifier().eval()  # no dropout: the two forward passes must agree
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    weights = [0.5, 2.0, 1.0]
    trainer = TaskTrainer(model=model, args=args, class_weights=weights)
    batch = {"input_ids": torch.tensor([[1, 5, 7], [2, 8, 9], [3, 3, 4]]), "labels": torch.tensor([0, 1, 1])}
    loss = trainer.compute_loss(model, dict(batch))
    logits = model(input_ids=batch["input_ids"]).logits
    expected = torch.nn.functional.cross_entropy(logits, batch["labels"], weight=torch.tensor(weights))
    manual = (
        sum(
            w * torch.nn.functional.cross_entropy(logits[i : i + 1], batch["labels"][i : i + 1])
            for i, w in enumerate([0.5, 2.0, 2.0])
        )
        / 4.5
    )
    assert torch.allclose(loss, expected) and torch.allclose(loss, manual)
    assert trainer.loss_is_scaled_for_ga is False  # a per-batch mean: the Trainer divides it for accumulation
    unweighted = TaskTrainer(model=model, args=args).compute_loss(model, dict(batch))
    assert torch.allclose(unweighted, model(**batch).loss)


def test_layerwise_learning_rates_decay_from_the_head_down(tmp_path):
    model = _tiny_classifier()
    groups = layerwise_parameter_groups(model, 1.0, 0.5, 0.01, decay_names=["classifier.weight"])
    rate_of = {id(param): group["lr"] for group in groups for param in group["params"]}
    named = dict(model.named_parameters())
    assert rate_of[id(named["bert.embeddings.word_embeddings.weight"])] == 0.125  # depth 0 of 3
    assert rate_of[id(named["bert.encoder.layer.0.attention.self.query.weight"])] == 0.25
    assert rate_of[id(named["bert.encoder.layer.1.output.dense.weight"])] == 0.5
    assert rate_of[id(named["classifier.weight"])] == 1.0 and rate_of[id(named["bert.pooler.dense.weight"])] == 1.0
    decayed = [group for group in groups if group["weight_decay"]]
    assert [p for group in decayed for p in group["params"]] == [named["classifier.weight"]]
    trainer = TaskTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", learning_rate=2.0),
        layerwise_lr_decay=0.5,
    )
    assert sorted({group["lr"] for group in trainer.create_optimizer().param_groups}) == [0.25, 0.5, 1.0, 2.0]


def test_freezing_keeps_the_top_layers_and_the_head_trainable():
    model = _tiny_classifier()
    freeze_lower_layers(model, 1)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert not any(name.startswith(("bert.embeddings", "bert.encoder.layer.0.")) for name in trainable)
    assert {"bert.encoder.layer.1.output.dense.weight", "bert.pooler.dense.weight", "classifier.weight"} <= trainable
    with pytest.raises(UserError, match="freeze_layers: 3 but the model has only 2 layers"):
        freeze_lower_layers(model, 3)


# --------------------------------------------------------------------------------------------------------------
# End to end: train a few steps, save, load in the pipeline


@pytest.mark.slow
def test_classification_with_class_weights_and_llrd_loads_in_the_pipeline(tmp_path, base_model_dir, task_data):
    out = tmp_path / "cls"
    config = task_config(
        "classification", task_data, base_model_dir, out, class_weights="balanced", layerwise_lr_decay=0.8
    )
    summary = run(tmp_path, config)
    assert summary["task"] == "classification" and summary["labels"] == "negative, neutral, positive"
    assert summary["use with"] == 'AutoModelForSequenceClassification, pipeline("text-classification")'
    assert summary["optimizer steps"] == 10 and 0 <= summary["eval f1_macro"] <= 1
    assert set(summary) >= {
        "class weights",
        "layer-wise lr decay",
        "eval accuracy",
        "eval f1_neutral",
        "best checkpoint",
    }
    assert Path(summary["best checkpoint"]).is_dir() and summary["best eval f1_macro"] == pytest.approx(
        summary["eval f1_macro"]
    )
    manifest = read_manifest(out)
    assert manifest["stage"] == STAGE and manifest["inputs"]["model"] == "bert-tiny"
    assert manifest["metrics"]["eval f1_macro"] == summary["eval f1_macro"]
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    classify = pipeline("text-classification", model=str(out))
    predictions = classify(["The lion show at the farm was awful.", "A wonderful walk by the river."])
    assert {prediction["label"] for prediction in predictions} <= {"negative", "neutral", "positive"}


@pytest.mark.slow
def test_ner_with_frozen_lower_layers_loads_in_the_pipeline(tmp_path, base_model_dir, task_data):
    out = tmp_path / "ner"
    config = task_config("token-classification", task_data, base_model_dir, out, freeze_layers=1, label_all_tokens=True)
    summary = run(tmp_path, config)
    assert summary["fine-tuning"] == "embeddings and lowest 1 layer frozen"
    assert summary["trainable parameters"] < summary["total parameters"]
    assert {"eval precision", "eval recall", "eval f1", "eval f1_PER", "eval f1_LOC"} <= set(summary)
    model = AutoModelForTokenClassification.from_pretrained(out)
    assert model.config.label2id == {"O": 0, "B-LOC": 1, "I-LOC": 2, "B-PER": 3, "I-PER": 4}
    tagger = pipeline("token-classification", model=str(out), aggregation_strategy="simple")
    entities = tagger("Anna lives in Paris .")
    assert isinstance(entities, list) and all(e["entity_group"] in {"PER", "LOC"} for e in entities)


@pytest.mark.slow
def test_qa_with_lora_is_merged_and_loads_in_both_pipeline_forms(tmp_path, base_model_dir, task_data):
    from llm_recipes.tasks.qa import ExtractiveQuestionAnsweringPipeline

    out = tmp_path / "qa"
    config = task_config("question-answering", task_data, base_model_dir, out, use_peft=True, lora_r=4)
    summary = run(tmp_path, config)
    assert summary["fine-tuning"].startswith("LoRA r=4") and summary["training windows"] > summary["training rows"]
    assert 0 <= summary["eval exact_match"] <= summary["eval f1"] <= 1
    assert not (out / "adapter_config.json").exists() and (out / "extractive_qa.py").is_file()
    model = AutoModelForQuestionAnswering.from_pretrained(out)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert model.config.task_specific_params["question-answering"]["doc_stride"] == 8
    context = "The cat is blue. The dog eats corn. The cat lives near the river."
    for answerer in (
        pipeline("question-answering", model=str(out), trust_remote_code=True),
        pipeline("question-answering", model=str(out), pipeline_class=ExtractiveQuestionAnsweringPipeline),
    ):
        answer = answerer(question="What colour is the cat?", context=context)
        assert answer["answer"] and context[answer["start"] : answer["end"]] == answer["answer"]
        assert 0 < answer["score"] <= 1


@pytest.mark.slow
def test_a_decoder_gets_a_classification_head(tmp_path, base_model_dir, task_data):
    out = tmp_path / "decoder"
    config = task_config(
        "classification",
        task_data,
        None,
        out,
        preset=None,
        tokenizer_name_or_path=None,
        config_overrides=None,
        model_name_or_path=str(base_model_dir),
        num_train_epochs=1,
    )
    summary = run(tmp_path, config)
    assert summary["model"] == str(base_model_dir) and summary["optimizer steps"] == 5
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.model_type == "llama" and model.config.pad_token_id is not None
    assert pipeline("text-classification", model=str(out))("The dog was great.")[0]["label"] in model.config.label2id


@pytest.mark.slow
def test_an_encoder_from_our_mlm_pretraining_is_fine_tuned(tmp_path, base_model_dir, task_data):
    """model_name_or_path: the pretrain stage's masked-LM output; its encoder is what gets fine-tuned (the frozen
    embeddings come through unchanged, the MLM head is dropped for the task head)."""
    from safetensors.torch import load_file

    pretrain = load_recipe("pretrain")
    mlm = tmp_path / "mlm"
    mlm_config = {
        "dataset_path": str(DEMO_DATA / "raw_corpus.jsonl"),
        "eval_split_size": 0,
        "tokenizer_name_or_path": str(base_model_dir),
        "preset": "bert-tiny",
        "config_overrides": TINY_BERT,
        "objective": "mlm",
        "block_size": 48,
        "output_dir": str(mlm),
        "max_steps": 3,
        "per_device_train_batch_size": 4,
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
    }
    pretrain.main(*pretrain.parse_args(["--config", str(write_yaml(tmp_path / "mlm.yaml", mlm_config))]))

    out = tmp_path / "ner-from-mlm"
    config = task_config(
        "token-classification",
        task_data,
        None,
        out,
        preset=None,
        config_overrides=None,
        tokenizer_name_or_path=None,
        model_name_or_path=str(mlm),
        freeze_layers=0,
        num_train_epochs=1,
    )
    summary = run(tmp_path, config)
    assert summary["model"] == str(mlm) and summary["fine-tuning"] == "embeddings frozen"
    pretrained, tuned = load_file(mlm / "model.safetensors"), load_file(out / "model.safetensors")
    name = next(key for key in pretrained if key.endswith("word_embeddings.weight"))
    assert torch.equal(pretrained[name], tuned[name])
    layer = next(key for key in pretrained if key.endswith("layer.1.output.dense.weight"))
    assert not torch.equal(pretrained[layer], tuned[layer])
    assert not any(key.startswith("cls.") for key in tuned)  # the MLM head is gone
    tagger = pipeline("token-classification", model=str(out))
    assert all(entity["entity"] in tagger.model.config.label2id for entity in tagger("Anna lives in Paris ."))


@pytest.mark.slow
def test_search_runs_two_trials_and_writes_a_ready_to_run_config(tmp_path, base_model_dir, task_data):
    pytest.importorskip("optuna")
    out = tmp_path / "search"
    search = {
        "trials": 2,
        "space": {"learning_rate": {"low": 1e-4, "high": 3e-3, "log": True}, "lora_r": [2, 4]},
    }
    config = task_config(
        "classification", task_data, base_model_dir, out, use_peft=True, lora_r=8, num_train_epochs=1, search=search
    )
    summary = run(tmp_path, config)
    assert summary["trials"] == 2 and summary["best lora_r"] in (2, 4)
    trials = json.loads((out / "search" / "search_trials.json").read_text())
    assert [t["trial"] for t in trials] == [0, 1] and all(t["state"] == "COMPLETE" for t in trials)
    best = max(trials, key=lambda t: t["value"])
    assert summary["best eval f1_macro"] == pytest.approx(best["value"])
    assert (out / "search" / "trial-0").is_dir() and (out / "search" / "trial-1").is_dir()
    best_path = out / "search" / "best_config.yaml"
    written = yaml.safe_load(best_path.read_text())
    assert "search" not in written and written["output_dir"] == str(out)
    assert written["lora_r"] == best["params"]["lora_r"]
    assert written["learning_rate"] == pytest.approx(best["params"]["learning_rate"])
    args, training_args, model_args = FT.parse_args(["--config", str(best_path)])  # ready to run
    assert args.search is None and model_args.lora_r == best["params"]["lora_r"]
    assert training_args.learning_rate == pytest.approx(best["params"]["learning_rate"])


# --------------------------------------------------------------------------------------------------------------
# Command line


def run_command(*command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *command], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_recipe_runs_from_the_command_line(tmp_path, base_model_dir, task_data):
    out = tmp_path / "cli"
    config = write_yaml(tmp_path / "cli.yaml", task_config("token-classification", task_data, base_model_dir, out))
    # the console script (`llm-recipes finetune-task`, through accelerate launch)
    done = run_command("-m", "llm_recipes.cli", STAGE, "--config", str(config), "--num_train_epochs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "token-classification fine-tuning finished" in done.stdout and "eval f1" in done.stdout
    assert read_manifest(out)["stage"] == STAGE and (out / "model.safetensors").is_file()
    # the script itself, with a config mistake: one line, exit code 2
    failed = run_command(str(RECIPE_FILE), "--config", str(config), "--doc_stride", "0")
    assert failed.returncode == 2 and failed.stderr.strip().splitlines()[-1] == "error: doc_stride: 0 must be >= 1"
