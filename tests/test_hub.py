"""Model cards and Hub pushes (llm_recipes/hub/): the manifest chain, the evaluation-results reader, the card's
metadata and body, and the push path against a mocked `HfApi`. No model is trained and nothing touches the network."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects

from llm_recipes import hub
from llm_recipes.errors import UserError
from llm_recipes.runs.manifest import MANIFEST_NAME

SECRET = "hf_SECRETtoken1234567890abcdef"


def write_manifest(folder: Path, stage: str, inputs: dict, config: dict | None = None, metrics=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "stage": stage,
        "complete": True,
        "inputs": inputs,
        "config": config or {"script": {"seed": 42}},
        "metrics": metrics or {"seconds": 1.0},
        "versions": {"transformers": "5.24.0"},
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def model_folder(folder: Path, chat: bool = True) -> Path:
    """The files of a saved model as the card reads them (no weights needed for the card)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "dtype": "float32"}))
    (folder / "model.safetensors").write_bytes(b"weights")
    tokenizer_config = {"eos_token": "<|im_end|>"}
    if chat:
        tokenizer_config["chat_template"] = "{{ messages }}"
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.fixture
def pipeline_chain(tmp_path, monkeypatch):
    """clean-corpus -> train-tokenizer -> pretrain -> sft, with relative paths as the stages record them when run
    from the project root; the test then runs from elsewhere."""
    root = tmp_path / "project"
    corpus = write_manifest(root / "outputs/corpus", "clean-corpus", {"inputs": ["raw/*.jsonl"]})
    tokenizer = write_manifest(
        root / "outputs/tokenizer", "train-tokenizer", {"dataset": "outputs/corpus", "base_tokenizer": None}
    )
    pretrain = write_manifest(
        root / "outputs/pretrain",
        "pretrain",
        {"tokenizer": "outputs/tokenizer", "model": "llama-tiny", "datasets": ["outputs/corpus"]},
        config={"script": {"block_size": 512, "preset": "llama-tiny"}, "training": {"learning_rate": 3e-3}},
    )
    sft = write_manifest(
        model_folder(root / "outputs/sft"),
        "sft",
        {"model": "outputs/pretrain", "datasets": ["HuggingFaceH4/ultrachat_200k", "data/local.jsonl"]},
        config={
            "script": {"eval_split_size": 0.1},
            "training": {"learning_rate": 2e-5, "hub_token": "<redacted>", "logging_dir": None},
            "model": {"use_peft": True, "lora_r": 16},
        },
        metrics={"final train loss": 1.25, "optimizer steps": 100},
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return {"corpus": corpus, "tokenizer": tokenizer, "pretrain": pretrain, "sft": sft}


def eval_file(path: Path, model_key: str) -> Path:
    data = {
        "models": {
            model_key: {
                "metrics": {"perplexity": 12.5, "accuracy": 0.75},
                "dataset": {"name": "arith", "split": "test"},
            },
            "/somewhere/base": {"metrics": {"perplexity": 40.0}, "dataset": {"name": "arith"}},
        },
        "model_index": {
            model_key: [
                {
                    "task_type": "text-generation",
                    "dataset_name": "Arithmetic",
                    "dataset_type": "llm-recipes/arithmetic",
                    "dataset_split": "test",
                    "metric_type": "perplexity",
                    "metric_name": "Perplexity",
                    "metric_value": 12.5,
                },
                {
                    "task_type": "text-generation",
                    "dataset_name": "Arithmetic",
                    "dataset_type": "llm-recipes/arithmetic",
                    "dataset_split": "test",
                    "metric_type": "accuracy",
                    "metric_name": "Exact match",
                    "metric_value": 0.75,
                },
            ]
        },
    }
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------------------------------------------
# Stage history


def test_stage_history_follows_every_input_back_to_the_corpus(pipeline_chain):
    records = hub.stage_history(pipeline_chain["sft"])
    # each stage once, inputs before the stages that read them (the corpus feeds the tokenizer and pretraining)
    assert [r.stage for r in records] == ["clean-corpus", "train-tokenizer", "pretrain", "sft"]
    assert records[-1].config["training"]["learning_rate"] == 2e-5
    assert records[2].config["script"]["block_size"] == 512
    # Hub ids are what a card can link; local files and preset names are not
    assert hub.hub_datasets(records) == ["HuggingFaceH4/ultrachat_200k"]
    assert hub.hub_models(records) == []


def test_hub_models_are_found_newest_first(tmp_path):
    base = write_manifest(tmp_path / "pre", "pretrain", {"model": "HuggingFaceTB/SmolLM2-135M"})
    sft = write_manifest(tmp_path / "sft", "sft", {"model": str(base)})
    assert hub.hub_models(hub.stage_history(sft)) == ["HuggingFaceTB/SmolLM2-135M"]


# --------------------------------------------------------------------------------------------------------------
# Evaluation results


def test_eval_results_reader_turns_model_index_into_eval_results(tmp_path):
    model = tmp_path / "outputs" / "sft"
    model.mkdir(parents=True)
    path = eval_file(tmp_path / "eval_results.json", str(model))
    report = hub.read_eval_results(tmp_path, model / "." / "")  # a folder holding the file; the same model path
    assert report.key == str(model)
    assert [(r.metric_type, r.metric_value, r.dataset_split) for r in report.results] == [
        ("perplexity", 12.5, "test"),
        ("accuracy", 0.75, "test"),
    ]
    assert report.results[0].dataset_type == "llm-recipes/arithmetic" and report.results[1].metric_name == "Exact match"
    assert report.summary["metrics"]["accuracy"] == 0.75
    assert report.file == path


def test_eval_results_recorded_from_another_directory_match_by_folder_name(tmp_path):
    path = eval_file(tmp_path / "eval_results.json", "outputs/demo/sft")
    assert hub.read_eval_results(path, tmp_path / "elsewhere" / "sft").key == "outputs/demo/sft"


def test_eval_results_for_another_model_name_what_is_there(tmp_path):
    path = eval_file(tmp_path / "eval_results.json", "/models/a")
    with pytest.raises(UserError, match=r"no results for .*other.*/models/a, /somewhere/base"):
        hub.read_eval_results(path, tmp_path / "other")
    with pytest.raises(UserError, match="is not an eval_results.json file"):
        hub.read_eval_results(tmp_path / "missing.json", "/models/a")


def test_eval_results_entry_without_a_value_is_an_error(tmp_path):
    path = tmp_path / "eval_results.json"
    entry = {"task_type": "text-generation", "dataset_name": "d", "dataset_type": "d", "metric_type": "accuracy"}
    path.write_text(json.dumps({"model_index": {"/m": [entry]}}))
    with pytest.raises(UserError, match="lacks metric_value"):
        hub.read_eval_results(path, "/m")


# --------------------------------------------------------------------------------------------------------------
# The card


def test_card_carries_metadata_metrics_and_every_stage_config(pipeline_chain, tmp_path):
    sft = pipeline_chain["sft"]
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    results = eval_file(evaluation / "eval_results.json", str(sft))
    (evaluation / "eval_report.md").write_text("# Evaluation\n\n![loss](plots/loss.png)\n")
    (evaluation / "plots").mkdir()
    (evaluation / "plots" / "loss.png").write_bytes(b"png")
    options = hub.CardOptions(
        license="apache-2.0",
        language=["en"],
        tags=["math"],
        datasets=["me/extra-data"],
        eval_results_path=str(results),
        intended_use="Arithmetic homework help.",
        limitations="Only adds small numbers.",
    )
    card = hub.write_model_card(sft, "me/tiny-sft", options)

    saved = ModelCard.load(sft / "README.md")  # huggingface_hub parses what we wrote
    data = saved.data
    assert data.license == "apache-2.0" and data.language == ["en"]
    assert data.pipeline_tag == "text-generation" and data.library_name == "transformers"
    assert data.datasets == ["me/extra-data", "HuggingFaceH4/ultrachat_200k"]
    assert data.tags[:5] == ["llm-recipes", "clean-corpus", "train-tokenizer", "pretrain", "sft"]
    assert "lora" in data.tags and "math" in data.tags
    assert data.model_name == "tiny-sft"
    assert [(r.metric_type, r.metric_value) for r in data.eval_results] == [("perplexity", 12.5), ("accuracy", 0.75)]
    assert data.to_dict()["model-index"][0]["results"][0]["dataset"]["split"] == "test"

    text = saved.text
    for stage in ("1. clean-corpus", "2. train-tokenizer", "3. pretrain", "4. sft"):
        assert f"### {stage}" in text
    assert "learning_rate: 2.0e-05" in text and "block_size: 512" in text  # configs of the stages, from manifests
    assert "lora_r: 16" in text
    assert "hub_token" not in text and "logging_dir" not in text  # secrets and unset values left out
    assert "| final train loss | 1.25 |" in text
    assert "| accuracy | 0.75 |" in text and "Arithmetic homework help." in text and "Only adds small numbers." in text
    assert 'pipeline("text-generation", model="me/tiny-sft")' in text
    # the report travels with the model: results, the Markdown report and the plots it shows
    assert (sft / "eval_results.json").read_text() == results.read_text()
    assert (sft / "eval_report.md").is_file() and (sft / "plots" / "loss.png").read_bytes() == b"png"
    assert "`eval_results.json` and `eval_report.md`" in text
    assert str(card) == (sft / "README.md").read_text(encoding="utf-8")


def test_card_for_an_adapter_names_its_base_and_peft(tmp_path):
    folder = model_folder(tmp_path / "adapter", chat=False)
    (folder / "config.json").unlink()
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "use_dora": True, "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M"})
    )
    card = hub.build_model_card(folder, "me/adapter")
    assert card.data.library_name == "peft" and card.data.base_model == "HuggingFaceTB/SmolLM2-135M"
    assert "dora" in card.data.tags
    assert 'AutoPeftModelForCausalLM.from_pretrained("me/adapter")' in card.text
    assert 'tokenizer("Once upon a time"' in card.text  # no chat template: a plain prompt
    assert "No evaluation results were recorded" in card.text


def test_table_cells_escape_pipes_and_angle_brackets(tmp_path):
    folder = write_manifest(model_folder(tmp_path / "m"), "export", {}, metrics={"stops at": "<|im_end|>"})
    card = hub.build_model_card(folder, "me/m")
    assert "| stops at | &lt;\\|im_end\\|> |" in card.text


def test_card_check_rejects_what_huggingface_hub_cannot_parse(tmp_path):
    card = hub.build_model_card(model_folder(tmp_path / "m"), "me/m")
    hub.check_card(card)

    class Edited:  # a card whose text was changed after it was built
        data = card.data

        def __str__(self):
            return str(card).replace("pipeline_tag: text-generation", "model-index: [{name: m, results: 3}]")

    with pytest.raises(UserError, match="does not validate: Invalid `model_index`"):
        hub.check_card(Edited())
    Edited.__str__ = lambda self: str(card).replace("license", "licence")  # parses, but says something else
    card.data.license = "mit"
    with pytest.raises(UserError, match="does not survive a round trip"):
        hub.check_card(Edited())


# --------------------------------------------------------------------------------------------------------------
# Pushing, with the Hub client mocked at HfApi


class FakeHfApi:
    """Records what would be sent to the Hub; `fail` makes a call raise."""

    instances: list[FakeHfApi] = []
    fail: dict[str, BaseException] = {}
    namespace = "me"

    def __init__(self, token=None, **kwargs):
        self.token = token
        self.calls: list[tuple[str, dict]] = []
        FakeHfApi.instances.append(self)

    def _record(self, name, **kwargs):
        self.calls.append((name, kwargs))
        if name in FakeHfApi.fail:
            raise FakeHfApi.fail[name]

    def create_repo(self, repo_id, **kwargs):
        self._record("create_repo", repo_id=repo_id, **kwargs)
        from huggingface_hub import RepoUrl

        full = repo_id if "/" in repo_id else f"{FakeHfApi.namespace}/{repo_id}"
        return RepoUrl(f"https://huggingface.co/{full}")

    def create_branch(self, repo_id, **kwargs):
        self._record("create_branch", repo_id=repo_id, **kwargs)

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        kwargs["files"] = sorted(filter_repo_objects(files, ignore_patterns=kwargs.get("ignore_patterns")))
        readme = folder / "README.md"
        kwargs["readme"] = readme.read_text(encoding="utf-8") if readme.is_file() else None
        self._record("upload_folder", **kwargs)
        from types import SimpleNamespace

        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123")


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHfApi.instances = []
    FakeHfApi.fail = {}
    monkeypatch.setattr(hub.push, "HfApi", FakeHfApi)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    return FakeHfApi


def stage_output(tmp_path: Path) -> Path:
    folder = write_manifest(model_folder(tmp_path / "sft-out"), "sft", {"model": "HuggingFaceTB/SmolLM2-135M"})
    (folder / "training_args.bin").write_bytes(b"pickle")
    (folder / "checkpoint-4").mkdir()
    (folder / "checkpoint-4" / "model.safetensors").write_bytes(b"old")
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out").write_bytes(b"log")
    return folder


def test_push_sends_model_tokenizer_card_and_eval_report_to_a_private_repo(fake_hub, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    folder = stage_output(tmp_path)
    results = eval_file(tmp_path / "eval_results.json", str(folder))
    result = hub.push_stage_output(
        folder,
        "tiny-sft",
        revision="v1",
        commit_message="first push",
        card=hub.CardOptions(eval_results_path=str(results)),
    )

    (api,) = fake_hub.instances
    assert api.token is None  # the token is huggingface_hub's to find (HF_TOKEN / login), never passed around
    names = [name for name, _ in api.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][1] == {"repo_id": "tiny-sft", "private": True, "exist_ok": True, "repo_type": "model"}
    assert api.calls[1][1] == {"repo_id": "me/tiny-sft", "branch": "v1", "exist_ok": True, "repo_type": "model"}
    upload = api.calls[2][1]
    assert upload["repo_id"] == "me/tiny-sft" and upload["revision"] == "v1" and upload["repo_type"] == "model"
    assert upload["commit_message"] == "first push" and upload["folder_path"] == str(folder)
    assert upload["files"] == [
        "README.md",
        "config.json",
        "eval_results.json",
        MANIFEST_NAME,
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    # the card uploaded names the repo with its namespace, and carries the eval results
    assert 'model="me/tiny-sft"' in upload["readme"] and "model-index" in upload["readme"]
    assert result.repo_id == "me/tiny-sft" and result.commit_url.endswith("/commit/abc123") and result.private

    logged = capsys.readouterr()
    assert SECRET not in logged.out + logged.err + caplog.text
    assert SECRET not in "".join(p.read_text(errors="ignore") for p in folder.rglob("*") if p.is_file())


def test_public_push_without_revision_creates_no_branch(fake_hub, tmp_path):
    hub.push_folder(model_folder(tmp_path / "m"), "me/m", private=False)
    (api,) = fake_hub.instances
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1]["private"] is False and api.calls[1][1]["revision"] is None


def test_push_token_given_explicitly_reaches_only_hfapi(fake_hub, tmp_path, capsys):
    hub.push_folder(model_folder(tmp_path / "m"), "me/m", token=SECRET)
    assert fake_hub.instances[0].token == SECRET
    assert SECRET not in capsys.readouterr().out


def test_offline_push_says_so_and_leaves_the_folder_untouched(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    constructed = []
    monkeypatch.setattr(hub.push, "HfApi", lambda **kwargs: constructed.append(kwargs))
    folder = stage_output(tmp_path)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(UserError) as err:
        hub.push_stage_output(folder, "me/tiny", what="export")
    message = str(err.value)
    assert message.startswith("could not reach the Hub (offline?")
    assert f"the export in {folder} is complete" in message
    assert f"hf upload me/tiny {folder} . --private" in message and "--exclude 'checkpoint-*'" in message
    assert not constructed
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before  # no card written, nothing moved


def test_connection_failure_mid_push_is_the_offline_error(fake_hub, tmp_path):
    import httpx2

    fake_hub.fail = {"create_repo": httpx2.ConnectError(f"cannot connect (token {SECRET})")}
    folder = model_folder(tmp_path / "m")
    with pytest.raises(UserError, match=r"could not reach the Hub \(offline\? ConnectError\)") as err:
        hub.push_folder(folder, "me/m", revision="dev")
    assert "--revision dev" in str(err.value) and SECRET not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no traceback chain to leak through
    assert (folder / "model.safetensors").is_file()


def test_rejected_token_is_a_clear_error_without_the_token(fake_hub, tmp_path):
    from httpx2 import Request, Response
    from huggingface_hub.errors import HfHubHTTPError

    response = Response(401, request=Request("POST", "https://huggingface.co/api/repos/create"))
    fake_hub.fail = {"upload_folder": HfHubHTTPError(f"401 Unauthorized for token {SECRET}", response=response)}
    with pytest.raises(UserError, match=r"refused the push to me/m \(HTTP 401\): log in with `hf auth login`") as err:
        hub.push_folder(model_folder(tmp_path / "m"), "me/m")
    assert SECRET not in str(err.value)


def test_other_hub_errors_are_one_line_with_the_token_removed(fake_hub, tmp_path):
    from httpx2 import Request, Response
    from huggingface_hub.errors import HfHubHTTPError

    response = Response(500, request=Request("POST", "https://huggingface.co/api/repos/create"))
    fake_hub.fail = {"create_repo": HfHubHTTPError(f"500 Server Error {SECRET}\ndetails", response=response)}
    with pytest.raises(UserError, match=r"the push to me/m failed: 500 Server Error <token>; the output in") as err:
        hub.push_folder(model_folder(tmp_path / "m"), "me/m")
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------------------------
# Every stage that pushes: once, private unless told otherwise, with our card, the token from the environment

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo" / "data"
FAST_TRAINING = {"max_steps": 1, "logging_steps": 1, "save_strategy": "no", "use_cpu": True, "seed": 0}
FAST_RL = {
    "dataset_path": str(DEMO / "rl_prompts.jsonl"),
    "reward_function": "llm_recipes.data.synthetic:synthetic_reward",
}


def pushing_stage_config(run: str, model: Path) -> dict:
    """A run of a stage small enough for a test, from the tiny chat model."""
    text = {"dataset_path": str(DEMO / "arithmetic_alpaca.jsonl"), "max_train_samples": 8}
    pairs = {"dataset_path": str(DEMO / "preferences.jsonl"), "max_train_samples": 8, "max_length": 64}
    sampled = {"num_generations": 2, "max_completion_length": 4, "per_device_train_batch_size": 2}
    configs = {
        "sft": {"model_name_or_path": model, **text, "max_length": 64, "per_device_train_batch_size": 4},
        "pretrain": {"tokenizer_name_or_path": model, "preset": "llama-tiny", **text, "block_size": 32},
        "reward": {"model_name_or_path": model, **pairs, "per_device_train_batch_size": 4, "dtype": "float32"},
        "dpo": {"model_name_or_path": model, **pairs, "per_device_train_batch_size": 4, "dtype": "float32"},
        "grpo": {"model_name_or_path": model, **FAST_RL, **sampled, "max_train_samples": 4, "dtype": "float32"},
        "rloo": {"model_name_or_path": model, **FAST_RL, **sampled, "max_train_samples": 4, "dtype": "float32"},
        "ppo": {
            "model_name_or_path": model,
            **FAST_RL,
            "max_train_samples": 4,
            "rollout_batch_size": 4,
            "mini_batch_size": 2,
            "ppo_epochs": 1,
            "num_ppo_steps": 1,
            "response_length": 4,
            "sample_every": 0,
            "use_cpu": True,
            "seed": 0,
        },
        "distill": {
            "teacher_name_or_path": model,
            **text,
            "max_length": 64,
            "per_device_train_batch_size": 4,
            "compare_with_teacher": False,
        },
        "prune": {"model_name_or_path": model, "method": "magnitude", "latency_new_tokens": 1, "latency_repeats": 1},
        "prune-recovery": {
            "model_name_or_path": model,
            "method": "magnitude",
            "latency_new_tokens": 1,
            "latency_repeats": 1,
            "recovery_dataset_path": str(DEMO / "raw_corpus.jsonl"),
            "max_recovery_samples": 8,
            "recovery_block_size": 32,
        },
        "finetune-task": {
            "task": "classification",
            "dataset_path": str(DEMO / "sentiment.csv"),
            "max_train_samples": 8,
            "tokenizer_name_or_path": model,
            "preset": "bert-tiny",
            "config_overrides": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
            "max_length": 32,
            "per_device_train_batch_size": 4,
        },
        "export": {"model_name_or_path": model},
    }
    bert = {key: configs["finetune-task"][key] for key in ("tokenizer_name_or_path", "preset", "config_overrides")}
    task_data = {"max_train_samples": 8, "per_device_train_batch_size": 4, **bert}
    configs.update(
        {
            "reward-lora": {**configs["reward"], "use_peft": True, "lora_r": 4},
            "pretrain-mlm": {**configs["pretrain"], **bert, "objective": "mlm"},
            "finetune-task-ner": {**task_data, "task": "token-classification", "dataset_path": str(DEMO / "ner.jsonl")},
            "finetune-task-qa": {
                **task_data,
                "task": "question-answering",
                "dataset_path": str(DEMO / "qa.jsonl"),
                "max_length": 32,
                "doc_stride": 12,
                "max_answer_length": 8,
            },
        }
    )
    config = {key: str(value) if isinstance(value, Path) else value for key, value in configs[run].items()}
    if run not in ("ppo", "export"):
        config.update(FAST_TRAINING)
    return config


# every stage whose config has push_to_hub (quantize has none: its folder is pushed by export), and the kinds of
# model a stage can make; prune's recovery fine-tune is a Trainer of its own
RUN_STAGES = {
    "sft": "sft",
    "pretrain": "pretrain",
    "pretrain-mlm": "pretrain",
    "reward": "reward",
    "reward-lora": "reward",
    "dpo": "dpo",
    "grpo": "grpo",
    "rloo": "rloo",
    "ppo": "ppo",
    "distill": "distill",
    "prune": "prune",
    "prune-recovery": "prune",
    "finetune-task": "finetune-task",
    "finetune-task-ner": "finetune-task",
    "finetune-task-qa": "finetune-task",
    "export": "export",
}
PIPELINE_TAGS = {
    "reward": "text-classification",
    "reward-lora": "text-classification",
    "pretrain-mlm": "fill-mask",
    "finetune-task": "text-classification",
    "finetune-task-ner": "token-classification",
    "finetune-task-qa": "question-answering",
}


@pytest.mark.slow
@pytest.mark.parametrize("run", list(RUN_STAGES))
def test_every_stage_pushes_once_privately_with_the_card(run, fake_hub, chat_model_dir, tmp_path, capsys, monkeypatch):
    from conftest import write_yaml

    from llm_recipes.cli import load_recipe

    stage = RUN_STAGES[run]
    out = tmp_path / "out"
    config = write_yaml(tmp_path / "stage.yaml", {**pushing_stage_config(run, chat_model_dir), "output_dir": str(out)})
    argv = ["--config", str(config), "--push_to_hub", "true", "--hub_model_id", f"me/{stage}"]
    if stage != "export":  # export has no hub_token field: it reads HF_TOKEN or the login, as every stage can
        monkeypatch.setenv("HF_TOKEN", "hf_anEarlierTokenOfTheEnvironment")  # a token given to the stage wins
        argv += ["--hub_token", SECRET]
    recipe = load_recipe(stage)
    recipe.main(*recipe.parse_args(argv))

    (api,) = fake_hub.instances
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1]["repo_id"] == f"me/{stage}" and api.calls[0][1]["private"] is True
    upload = api.calls[1][1]
    assert upload["folder_path"] == str(out) and "README.md" in upload["files"]
    assert "training_args.bin" not in upload["files"] and not any(f.startswith("checkpoint-") for f in upload["files"])
    card = ModelCard(upload["readme"])  # our card, naming this stage, not the Trainer's
    assert card.data.tags[:2] == ["llm-recipes", stage] and f"me/{stage}" in card.text
    # what the model does: a reward model and a classifier are no text generators
    assert card.data.pipeline_tag == PIPELINE_TAGS.get(run, "text-generation")
    local = hub.build_model_card(out, str(out))  # the card for the folder as it is here: its usage code runs
    exec(compile(re.search(r"```python\n(.*?)```", local.text, re.S).group(1), "README.md", "exec"), {})
    assert api.token is None and os.environ["HF_TOKEN"] == SECRET  # the token reached huggingface_hub by HF_TOKEN
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err
    assert [str(p) for p in out.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()] == []


def test_a_training_stage_pushes_publicly_only_when_told(fake_hub, tmp_path):
    from types import SimpleNamespace

    folder = model_folder(tmp_path / "m")
    for private in (None, True, False):
        args = SimpleNamespace(
            output_dir=str(folder), hub_model_id="me/m", hub_private_repo=private, hub_revision=None, hub_token=None
        )
        hub.push_trained_output(args, "sft")
    assert [api.calls[0][1]["private"] for api in fake_hub.instances] == [True, True, False]


@pytest.mark.parametrize("reward_input", ["conversational", "text"])
def test_a_reward_model_card_scores_as_the_reward_stage_does(reward_input, chat_model_dir, tmp_path, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from llm_recipes.rl.rewards import record_reward_input, score_responses

    folder = tmp_path / "rm"
    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(chat_model_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    record_reward_input(model, reward_input == "conversational")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    card = hub.build_model_card(folder, str(folder))
    assert card.data.pipeline_tag == "text-classification" and "A reward model" in card.text
    capsys.readouterr()
    exec(compile(re.search(r"```python\n(.*?)```", card.text, re.S).group(1), "README.md", "exec"), {})
    printed = float(capsys.readouterr().out.split()[-1])
    prompt = (
        [{"role": "user", "content": "What is 2 plus 3?"}]
        if reward_input == "conversational"
        else "What is 2 plus 3?\n"
    )
    assert printed == pytest.approx(score_responses(model.eval(), tokenizer, [prompt], ["5"])[0], abs=1e-5)


@pytest.mark.slow
def test_a_hyperparameter_search_pushes_no_trial_and_its_best_config_still_pushes(
    fake_hub, chat_model_dir, tmp_path, monkeypatch
):
    import yaml
    from conftest import write_yaml

    from llm_recipes.cli import load_recipe

    pytest.importorskip("optuna")
    out = tmp_path / "out"
    search = {"trials": 2, "space": {"learning_rate": {"low": 1e-4, "high": 3e-3, "log": True}}}
    config = {**pushing_stage_config("finetune-task", chat_model_dir), "output_dir": str(out), "search": search}
    config.update(eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1)
    argv = ["--config", str(write_yaml(tmp_path / "search.yaml", config)), "--push_to_hub", "true"]
    recipe = load_recipe("finetune-task")
    recipe.main(*recipe.parse_args([*argv, "--hub_token", SECRET]))
    assert fake_hub.instances == []  # the search only finds settings; the run from its best config pushes
    best = yaml.safe_load((out / "search" / "best_config.yaml").read_text())
    assert best["push_to_hub"] is True and "hub_token" not in best
    assert [str(p) for p in out.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()] == []
