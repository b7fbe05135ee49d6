"""Distillation: the KD loss against a hand computation, students built from a teacher, the tokenizer check, the
trainer's loss wiring, the comparison report, and end-to-end runs (text, chats, GKD) that train and save."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import PROJECT, write_yaml
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from llm_recipes.compress.distill import (
    GKD_MISSING,
    PaddedRowsCollator,
    check_same_tokenizer,
    check_student_layers,
    distillation_loss,
    encode_chat,
    encode_prompt_completion,
    gkd_beta,
    load_gkd,
    student_from_preset,
    student_from_teacher,
    token_divergence,
)
from llm_recipes.compress.distill_build import LABELS_ONLY
from llm_recipes.compress.report import compare_models, format_comparison, safetensors_bytes
from llm_recipes.errors import UserError


def load_distill_recipe():
    """recipes/distill.py by path (until the stage is registered in llm_recipes.cli.STAGES)."""
    try:
        from llm_recipes.cli import STAGES, load_recipe

        if "distill" in STAGES:
            return load_recipe("distill")
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location("llm_recipes_recipe_distill", PROJECT / "recipes" / "distill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DISTILL = load_distill_recipe()


# --------------------------------------------------------------------------------------------------------------
# The loss, by hand


def softmax(values: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


STUDENT = [[[0.5, -1.0, 2.0, 0.0], [1.5, 0.3, -0.7, 0.2], [0.0, 0.0, 0.0, 3.0], [9.0, -9.0, 9.0, -9.0]]]
TEACHER = [[[1.0, 0.0, 1.0, -2.0], [-0.5, 2.0, 0.1, 0.4], [2.0, -1.0, 0.5, 0.0], [-9.0, 9.0, -9.0, 9.0]]]
# position i predicts labels[i + 1]; labels[2] is ignored, so positions 0 and 2 are scored and position 1 is not
LABELS = [[7, 2, -100, 1]]


def hand_loss(alpha: float, temperature: float, divergence) -> float:
    scored = [(0, 2), (2, 1)]  # (position, its target)
    kd = ce = 0.0
    for position, target in scored:
        student, teacher = STUDENT[0][position], TEACHER[0][position]
        kd += divergence(softmax(teacher, temperature), softmax(student, temperature)) * temperature**2
        ce += -math.log(softmax(student, 1.0)[target])
    return (alpha * kd + (1 - alpha) * ce) / len(scored)


def test_forward_kl_loss_equals_a_hand_computation():
    loss = distillation_loss(
        torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS), alpha=0.7, temperature=2.0
    )
    expected = hand_loss(0.7, 2.0, lambda teacher, student: kl(teacher, student))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_alpha_blends_kd_with_the_label_cross_entropy():
    student, teacher, labels = torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS)
    labels_only = distillation_loss(student, teacher, labels, alpha=0.0, temperature=2.0)
    reference = F.cross_entropy(student[0, [0, 2]], torch.tensor([2, 1]))
    assert labels_only.item() == pytest.approx(reference.item(), rel=1e-6)
    assert distillation_loss(student, None, labels, alpha=0.0).item() == pytest.approx(reference.item(), rel=1e-6)
    kd_only = distillation_loss(student, teacher, labels, alpha=1.0, temperature=2.0)
    half = distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    assert half.item() == pytest.approx(0.5 * kd_only.item() + 0.5 * labels_only.item(), rel=1e-6)


def test_reverse_kl_and_jsd_equal_hand_computations():
    student, teacher, labels = torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS)
    reverse = distillation_loss(student, teacher, labels, alpha=1.0, temperature=1.5, divergence="reverse_kl")
    assert reverse.item() == pytest.approx(hand_loss(1.0, 1.5, lambda t, s: kl(s, t)), rel=1e-5)

    def jsd(t: list[float], s: list[float], beta: float = 0.3) -> float:
        mixture = [beta * ti + (1 - beta) * si for ti, si in zip(t, s, strict=True)]
        return beta * kl(t, mixture) + (1 - beta) * kl(s, mixture)

    loss = distillation_loss(student, teacher, labels, alpha=1.0, temperature=1.0, divergence="jsd", jsd_beta=0.3)
    assert loss.item() == pytest.approx(hand_loss(1.0, 1.0, jsd), rel=1e-5)


def test_ignored_positions_and_padding_do_not_count():
    student, teacher, labels = torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(LABELS)
    before = distillation_loss(student, teacher, labels, alpha=0.5, temperature=2.0)
    changed_student, changed_teacher = student.clone(), teacher.clone()
    changed_student[0, 1] = torch.tensor([50.0, -50.0, 3.0, 1.0])  # position 1 predicts an ignored label
    changed_teacher[0, 3] = torch.tensor([-5.0, 5.0, 0.0, 0.0])  # the last position predicts nothing
    after = distillation_loss(changed_student, changed_teacher, labels, alpha=0.5, temperature=2.0)
    assert after.item() == pytest.approx(before.item(), rel=1e-6)


def test_a_student_equal_to_its_teacher_has_zero_divergence():
    logits = torch.randn(2, 5, 11)
    for divergence in ("forward_kl", "reverse_kl", "jsd"):
        values = token_divergence(logits, logits.clone(), temperature=3.0, divergence=divergence)
        assert values.abs().max().item() < 1e-6


def test_jsd_matches_trls_gkd_definition():
    try:
        _, gkd_trainer = load_gkd()
    except UserError:
        pytest.skip("this TRL has no experimental GKD to compare with")
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 6, 9), torch.randn(2, 6, 9)
    labels = torch.randint(0, 9, (2, 6))
    labels[0, :3] = -100
    for divergence, beta in (("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.3)):
        ours = distillation_loss(student, teacher, labels, alpha=1.0, divergence=divergence, jsd_beta=beta)
        trl_beta = gkd_beta(divergence, beta)
        theirs = gkd_trainer.generalized_jsd_loss(student[:, :-1], teacher[:, :-1], labels[:, 1:], beta=trl_beta)
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-5), divergence


# --------------------------------------------------------------------------------------------------------------
# Students and tokenizers


@pytest.fixture(scope="module")
def small_teacher(base_model_dir):
    """A 4-layer random Llama with the base fixture's tokenizer."""
    from llm_recipes.models.loading import init_decoder

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    torch.manual_seed(1)
    teacher = init_decoder("llama-tiny", tokenizer, num_hidden_layers=4)
    return teacher, tokenizer


def test_student_from_teacher_copies_every_other_layer(small_teacher):
    teacher, tokenizer = small_teacher
    student = student_from_teacher(teacher)
    assert student.config.num_hidden_layers == 2
    assert teacher.config.num_hidden_layers == 4  # the teacher's config is not touched
    for student_index, teacher_index in enumerate([0, 2]):
        ours = student.model.layers[student_index].state_dict()
        theirs = teacher.model.layers[teacher_index].state_dict()
        assert all(torch.equal(ours[name], theirs[name]) for name in ours)
        assert student.model.layers[student_index].self_attn.layer_idx == student_index  # the KV cache's slot
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    # it runs, with cache, and generates
    ids = tokenizer("the cat", return_tensors="pt")["input_ids"]
    output = student.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    assert output.shape[1] == ids.shape[1] + 4


def test_student_from_chosen_layers_and_their_checks(small_teacher):
    teacher, _ = small_teacher
    student = student_from_teacher(teacher, [1, 3])
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    with pytest.raises(UserError, match=r"out of range; the teacher has layers 0\.\.3"):
        check_student_layers([0, 4], 4)
    with pytest.raises(UserError, match="distinct and increasing"):
        check_student_layers([2, 0], 4)
    with pytest.raises(UserError, match="at least one"):
        check_student_layers([], 4)


def test_preset_student_matches_the_teachers_vocabulary(small_teacher):
    teacher, tokenizer = small_teacher
    padded = teacher.config.__class__.from_dict({**teacher.config.to_dict(), "vocab_size": len(tokenizer) + 8})
    student = student_from_preset("llama-tiny", tokenizer, padded)
    assert student.config.vocab_size == len(tokenizer) + 8  # follows the teacher's (padded) output layer
    assert student.config.num_hidden_layers == 2
    with pytest.raises(UserError, match="student_preset: unknown"):
        student_from_preset("llama-huge", tokenizer, padded)


def test_a_different_tokenizer_is_refused(base_model_dir, chat_model_dir, tmp_path):
    from llm_recipes.tokenizer.training import train_bpe_tokenizer

    teacher = AutoTokenizer.from_pretrained(base_model_dir)
    check_same_tokenizer(teacher, AutoTokenizer.from_pretrained(base_model_dir))  # the same: accepted
    other = train_bpe_tokenizer(["a completely different corpus of words"] * 20, vocab_size=300)
    with pytest.raises(UserError, match="tokenizer differs from the teacher's .*tokens vs the teacher's"):
        check_same_tokenizer(teacher, other)
    with pytest.raises(UserError, match="needs the same tokenizer"):
        check_same_tokenizer(teacher, AutoTokenizer.from_pretrained(chat_model_dir))


# --------------------------------------------------------------------------------------------------------------
# Rows and batches


def test_chat_rows_are_labelled_on_assistant_turns_only(chat_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    messages = [{"role": "user", "content": "what is two plus two"}, {"role": "assistant", "content": "four"}]
    row = encode_chat(tokenizer, messages, assistant_only=True)
    labelled = [token for token in row["labels"] if token != -100]
    assert tokenizer.decode(labelled) == "four<|im_end|>"  # the answer and its stop token, nothing else
    whole = encode_chat(tokenizer, messages, assistant_only=False)
    assert whole["labels"] == whole["input_ids"]


def test_prompt_completion_rows_are_labelled_on_the_completion_only(base_model_dir, chat_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    row = encode_prompt_completion(tokenizer, "two plus two is", " four")
    prompt_length = len(tokenizer("two plus two is")["input_ids"])
    assert row["labels"][:prompt_length] == [-100] * prompt_length
    assert row["labels"][prompt_length:] == row["input_ids"][prompt_length:]
    assert row["input_ids"][-1] == tokenizer.eos_token_id  # the student learns where the completion stops

    chat = AutoTokenizer.from_pretrained(chat_model_dir)
    prompt = [{"role": "user", "content": "what is two plus two"}]
    row = encode_prompt_completion(chat, prompt, [{"role": "assistant", "content": "four"}])
    assert chat.decode([t for t in row["labels"] if t != -100]).strip() == "four<|im_end|>"


def test_collator_pads_and_never_targets_padding():
    batch = PaddedRowsCollator(pad_token_id=0, pad_to_multiple_of=4)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9, 10, 11, 12]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0, 0, 0, 0], [8, 9, 10, 11, 12, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, -100, -100, -100, -100], [8, 9, 10, 11, 12] + [-100] * 3]
    assert batch["attention_mask"].sum(dim=1).tolist() == [3, 5]


# --------------------------------------------------------------------------------------------------------------
# The trainer's loss is the blended loss of the two models' logits


def test_trainer_loss_is_the_blend_of_teacher_and_student_logits(small_teacher, tmp_path):
    from llm_recipes.compress.distill_trainer import DistillationTrainer

    teacher, _ = small_teacher
    student = student_from_teacher(teacher)
    torch.manual_seed(2)
    with torch.no_grad():
        for param in student.parameters():
            param.add_(0.05 * torch.randn_like(param))  # so the student differs from the teacher's layers
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        data_collator=PaddedRowsCollator(pad_token_id=0),
        alpha=0.6,
        temperature=2.0,
        divergence="reverse_kl",
    )
    batch = PaddedRowsCollator(pad_token_id=0)([{"input_ids": [1, 5, 9, 13, 17]}, {"input_ids": [1, 6, 7]}])
    student.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(student, dict(batch))
        expected = distillation_loss(
            student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            batch["labels"],
            alpha=0.6,
            temperature=2.0,
            divergence="reverse_kl",
        )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())

    # the teacher's perplexity on the eval rows' labelled tokens: exp of its mean cross-entropy on them
    from datasets import Dataset

    rows = Dataset.from_list([{"input_ids": [1, 5, 9, 13, 17]}, {"input_ids": [1, 6, 7], "labels": [-100, 6, 7]}])
    trainer.eval_dataset = rows
    batch = PaddedRowsCollator(pad_token_id=0)(list(rows))
    with torch.no_grad():
        teacher_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected_ce = distillation_loss(teacher_logits, None, batch["labels"], alpha=0.0)
    assert trainer.labelled_perplexity(teacher) == pytest.approx(math.exp(expected_ce.item()), rel=1e-5)

    baseline = DistillationTrainer(model=student, teacher_model=teacher, args=args, alpha=0.0)
    assert baseline.teacher_model is None  # labels only: the teacher is never run
    with pytest.raises(UserError, match="alpha"):
        DistillationTrainer(model=student, teacher_model=teacher, args=args, alpha=1.5)


# --------------------------------------------------------------------------------------------------------------
# The comparison report (shared with the quantize and prune stages)


def test_compare_models_reports_both_models(small_teacher, base_model_dir, tmp_path):
    teacher, tokenizer = small_teacher
    student = student_from_teacher(teacher)
    student.save_pretrained(tmp_path / "student")
    texts = ["the cat sat on the mat", "two plus two is four", ""]
    report = compare_models(
        base_model_dir, student, tokenizer, texts, compressed_dir=tmp_path / "student", max_new_tokens=3, repeats=1
    )
    source, compressed = report["source"]["measures"], report["compressed"]["measures"]
    assert list(source) == list(compressed) == report["protocol"]["measures"]
    assert compressed["size_bytes"] == (tmp_path / "student" / "model.safetensors").stat().st_size
    assert source["size_bytes"] == safetensors_bytes(base_model_dir)
    assert compressed["parameters"] == sum(p.numel() for p in student.parameters())
    assert source["parameters"] == sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(base_model_dir).parameters()
    )
    for side in ("source", "compressed"):
        entry = report[side]
        assert entry["measures"]["corpus_perplexity"] > 1 and entry["measures"]["ms_per_token"] > 0
        assert entry["details"]["corpus"]["tokens"] > 0 and entry["details"]["latency_device"] == "cpu"
    table = format_comparison(report, "student vs teacher")
    assert table.splitlines()[0] == "student vs teacher"
    assert "parameters" in table and "ms/token" in table and "x" in table
    assert table.count("ms/token: median wall-clock milliseconds per generated token") == 1


# --------------------------------------------------------------------------------------------------------------
# The recipe: config checks before any weights load, then end-to-end runs


def distill_config(teacher_dir: Path, output_dir: Path, data: str, **overrides) -> dict:
    config = {
        "teacher_name_or_path": str(teacher_dir),
        "dataset_path": data,
        "output_dir": str(output_dir),
        "eval_split_size": 0.1,
        "max_length": 64,
        "max_steps": 4,
        "per_device_train_batch_size": 8,
        "learning_rate": 3e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "use_cpu": True,
        "seed": 0,
        "report_eval_texts": 8,
        "latency_new_tokens": 4,
        "latency_repeats": 1,
    }
    return {**config, **overrides}


def parse_distill(tmp_path: Path, config: dict) -> tuple:
    return DISTILL.parse_args(["--config", str(write_yaml(tmp_path / "distill.yaml", config))])


TEXT_DATA = str(PROJECT / "configs" / "demo" / "data" / "raw_corpus.jsonl")
CHAT_DATA = str(PROJECT / "configs" / "demo" / "data" / "arithmetic_alpaca.jsonl")


def test_config_mistakes_fail_before_loading(tmp_path, base_model_dir, chat_model_dir, monkeypatch):
    def fails(match: str, **overrides):
        with pytest.raises(UserError, match=match):
            parse_distill(tmp_path, distill_config(base_model_dir, tmp_path / "out", TEXT_DATA, **overrides))

    fails("student_name_or_path: .*differs|tokenizer differs", student_name_or_path=str(chat_model_dir))
    fails("set one student source", student_layers=[0], student_preset="llama-tiny")
    fails(r"student_layers: \[5\] out of range", student_layers=[0, 5])
    fails("student_preset: unknown", student_preset="llama-giant")
    fails("alpha: 1.5 must be in", alpha=1.5)
    fails("temperature: 0.0 must be > 0", temperature=0.0)
    fails("divergence: invalid choice", divergence="kl")
    fails("teacher_name_or_path: model folder not found", teacher_name_or_path=str(tmp_path / "missing"))
    fails("report_reward_model: replaced by protocol", report_reward_model=str(tmp_path / "no-rm"))
    fails("protocol: file not found", protocol=str(tmp_path / "no-protocol.yaml"))
    monkeypatch.setitem(sys.modules, "trl.experimental.gkd", None)  # a TRL without the experimental GKD
    fails(GKD_MISSING, method="gkd")


def test_gkd_feature_check_names_the_missing_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "trl.experimental.gkd", None)
    with pytest.raises(UserError, match=r"no GKDTrainer at trl\.experimental\.gkd; use method: logits"):
        load_gkd()


@pytest.mark.slow
def test_text_distillation_trains_and_saves_a_smaller_model(tmp_path, small_teacher):
    teacher, tokenizer = small_teacher
    teacher_dir = tmp_path / "teacher"
    teacher.save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    out = tmp_path / "student"
    summary = DISTILL.main(*parse_distill(tmp_path, distill_config(teacher_dir, out, TEXT_DATA)))

    student = AutoModelForCausalLM.from_pretrained(out)  # loads like any model
    assert student.config.num_hidden_layers == 2
    assert summary["optimizer steps"] == 4 and math.isfinite(summary["final train loss"])
    assert summary["final kd loss"] > 0 and summary["eval perplexity (labelled tokens)"] > 1
    # the teacher scored on the same labelled eval tokens: exp of its mean cross-entropy there
    assert summary["teacher eval perplexity (labelled tokens)"] > 1
    report = json.loads((out / "compression_report.json").read_text())
    source, compressed = (report["comparison"][side]["measures"] for side in ("source", "compressed"))
    assert compressed["parameters"] < source["parameters"]
    assert compressed["size_bytes"] == (out / "model.safetensors").stat().st_size
    assert source["size_bytes"] == (teacher_dir / "model.safetensors").stat().st_size
    # the trainer's labelled-token figure is kept apart from the protocol's measures, under its own name
    trainer_eval = report["trainer_eval"]
    assert trainer_eval["teacher perplexity (labelled tokens)"] == summary["teacher eval perplexity (labelled tokens)"]
    assert "corpus_perplexity" in compressed and compressed["corpus_perplexity"] > 1
    assert json.loads((out / "llm_recipes_manifest.json").read_text())["stage"] == "distill"
    logged = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("kd_loss" in entry and "ce_loss" in entry for entry in logged)
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tokenizer.get_vocab()


def save_reward_model(folder: Path, tokenizer_dir: Path) -> Path:
    """A tiny reward model as TRL's RewardTrainer leaves it: a sequence classifier with one output."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(3)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_chat_distillation_into_a_preset_student_compared_on_a_protocol(tmp_path, chat_model_dir):
    out = tmp_path / "student"
    reward_dir = save_reward_model(tmp_path / "reward", chat_model_dir)
    protocol = {
        "corpus": {"path": TEXT_DATA, "split": "train", "max_texts": 4},
        "tasks": [{"name": "arithmetic", "kind": "exact_match", "path": CHAT_DATA, "max_rows": 4}],
        "reward_model": str(reward_dir),
        "latency": {"max_new_tokens": 4, "repeats": 1},
        "max_new_tokens": 4,
        "device": "cpu",
    }
    config = distill_config(
        chat_model_dir,
        out,
        CHAT_DATA,
        student_preset="llama-tiny",
        student_config_overrides={"hidden_size": 32},
        protocol=str(write_yaml(tmp_path / "protocol.yaml", protocol)),
    )
    summary = DISTILL.main(*parse_distill(tmp_path, config))
    student = AutoModelForCausalLM.from_pretrained(out)
    assert student.config.hidden_size == 32
    assert summary["data shape"] == "messages" and math.isfinite(summary["eval loss"])
    comparison = json.loads((out / "compression_report.json").read_text())["comparison"]
    names = ["corpus_perplexity", "corpus_bits_per_byte", "arithmetic/exact_match", "reward_model_score"]
    assert comparison["protocol"]["measures"][:4] == names
    for side in ("source", "compressed"):
        assert all(math.isfinite(comparison[side]["measures"][name]) for name in names)
    assert "RM score" in format_comparison(comparison, "t")


@pytest.mark.slow
def test_labels_only_baseline_gets_the_same_budget(tmp_path, chat_model_dir):
    """compare_labels_only: the same student trained without the teacher (same start, data, steps, rate, seed) is
    measured on the protocol beside the distilled one, in the report and the printed table."""
    import subprocess

    out = tmp_path / "student"
    protocol = {
        "corpus": {"path": TEXT_DATA, "split": "train", "max_texts": 4},
        "tasks": [{"name": "arithmetic", "kind": "exact_match", "path": CHAT_DATA, "max_rows": 4}],
        "latency": {"max_new_tokens": 4, "repeats": 1},
        "max_new_tokens": 4,
        "device": "cpu",
    }
    config = distill_config(
        chat_model_dir,
        out,
        CHAT_DATA,
        student_preset="llama-tiny",
        student_config_overrides={"hidden_size": 32},
        protocol=str(write_yaml(tmp_path / "protocol.yaml", protocol)),
        compare_labels_only=True,
        max_steps=6,
    )
    command = [
        sys.executable,
        "-m",
        "llm_recipes.cli",
        "distill",
        "--config",
        str(write_yaml(tmp_path / "d.yaml", config)),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "compression_report.json").read_text())
    baseline, distilled = report["labels_only"], report["comparison"]["compressed"]
    assert list(baseline["measures"]) == list(distilled["measures"]) == report["comparison"]["protocol"]["measures"]
    assert math.isfinite(baseline["measures"]["corpus_perplexity"])
    assert baseline["measures"]["parameters"] == distilled["measures"]["parameters"]  # the same student
    manifest = json.loads((out / "llm_recipes_manifest.json").read_text())
    assert report["labels_only_training"]["optimizer steps"] == manifest["metrics"]["optimizer steps"] == 6
    assert report["labels_only_training"]["loss"].startswith("CE only (alpha 0)")
    assert manifest["metrics"]["protocol measures"]["models"] == "source -> labels only, same budget -> compressed"
    assert "labels only, same budget" in result.stdout
    # trained apart from the distilled student, from the same start
    baseline_model = AutoModelForCausalLM.from_pretrained(out / LABELS_ONLY)
    distilled_model = AutoModelForCausalLM.from_pretrained(out)
    assert not torch.equal(baseline_model.lm_head.weight, distilled_model.lm_head.weight)

    def fails(match: str, **overrides):
        with pytest.raises(UserError, match=match):
            parse_distill(tmp_path, {**config, **overrides})

    fails("compare_labels_only: set protocol", protocol=None)
    fails("compare_labels_only: alpha is 0", alpha=0.0)


@pytest.mark.slow
def test_gkd_method_trains_on_cpu(tmp_path, chat_model_dir):
    try:
        load_gkd()
    except UserError:
        pytest.skip("this TRL has no experimental GKD")
    out = tmp_path / "gkd"
    config = distill_config(
        chat_model_dir, out, CHAT_DATA, method="gkd", gkd_max_new_tokens=4, max_steps=2, compare_with_teacher=False
    )
    summary = DISTILL.main(*parse_distill(tmp_path, config))
    assert summary["method"] == "gkd" and summary["optimizer steps"] == 2
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 1
