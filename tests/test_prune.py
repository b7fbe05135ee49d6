"""Pruning: the masks hit the requested sparsity (per matrix, per row, N:M groups), Wanda ranks by activation norms,
zeros persist in the saved weights and through a recovery fine-tune, and structured pruning removes exactly the
heads and channels that carry nothing -- the smaller model gives the same outputs, and its rewritten config loads
with `AutoModelForCausalLM`. The stage end to end on a tiny model, and its config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import DEMO_DATA, write_yaml
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_recipes.cli import load_recipe
from llm_recipes.compress import prune as pruning
from llm_recipes.errors import UserError
from llm_recipes.runs.manifest import read_manifest

CORPUS = str(DEMO_DATA / "raw_corpus.jsonl")
FAST_REPORT = dict(eval_dataset_path=CORPUS, max_eval_samples=8, latency_new_tokens=4, latency_repeats=1)
CALIBRATION = dict(calibration_dataset_path=CORPUS, calibration_samples=8, calibration_length=64)


PRUNE = load_recipe("prune")


def parse_prune(tmp_path: Path, **config) -> tuple:
    return PRUNE.parse_args(["--config", str(write_yaml(tmp_path / "prune.yaml", {"use_cpu": True, **config}))])


def run_prune(tmp_path: Path, **config) -> dict:
    return PRUNE.main(*parse_prune(tmp_path, **config))


@pytest.fixture(scope="module")
def calibration(base_model_dir) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    texts = [json.loads(line)["text"] for line in Path(CORPUS).read_text().splitlines()[:60]]
    return pruning.token_windows(tokenizer, texts, count=8, length=64, seed=0)


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


# --------------------------------------------------------------------------------------------------------------
# Masks


def test_masks_hit_the_requested_sparsity():
    torch.manual_seed(0)
    scores = torch.rand(16, 64)
    whole = pruning.unstructured_mask(scores, 0.5, per_row=False)
    assert (~whole).sum() == 512 and scores[~whole].max() <= scores[whole].min()
    rows = pruning.unstructured_mask(scores, 0.75, per_row=True)
    assert ((~rows).sum(dim=1) == 48).all()
    for row in range(16):
        assert scores[row][~rows[row]].max() <= scores[row][rows[row]].min()
    two_four = pruning.n_m_mask(scores, 2, 4)
    assert ((~two_four).reshape(16, 16, 4).sum(dim=2) == 2).all()
    assert pruning.is_n_m_sparse(scores * two_four) and not pruning.is_n_m_sparse(scores)


def test_wanda_weighs_weights_by_the_norm_of_their_input():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert pruning.layer_mask(layer, 0.5, None).tolist() == [[False, False, True, True]]  # magnitude: 1 and 2 go
    norms = torch.tensor([10.0, 1.0, 1.0, 0.1])  # |W| x ||X||: 10, 2, 3, 0.4
    assert pruning.layer_mask(layer, 0.5, None, norms).tolist() == [[True, False, True, False]]


def test_the_comparison_group_can_be_chosen():
    torch.manual_seed(0)
    layer = nn.Linear(32, 8, bias=False)
    with torch.no_grad():
        layer.weight.mul_(torch.linspace(0.1, 3.0, 8)[:, None])  # rows of very different scale
    norms = torch.rand(32) + 0.5
    per_row = pruning.layer_mask(layer, 0.5, None, per_row=True)
    assert ((~per_row).sum(dim=1) == 16).all()  # magnitude, compared per row
    per_matrix = pruning.layer_mask(layer, 0.5, None, norms, per_row=False)
    assert (~per_matrix).sum() == 128 and (~per_matrix[0]).sum() > (~per_matrix[-1]).sum()  # small rows lose more


def test_patterns_and_token_windows(base_model_dir):
    assert pruning.parse_pattern("unstructured") is None and pruning.parse_pattern("2:4") == (2, 4)
    for bad in ("4:2", "2-4", "0:4"):
        with pytest.raises(UserError, match="sparsity_pattern"):
            pruning.parse_pattern(bad)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    texts = [json.loads(line)["text"] for line in Path(CORPUS).read_text().splitlines()[:40]]
    windows = pruning.token_windows(tokenizer, texts, count=5, length=32, seed=3)
    assert windows.shape == (5, 32) and torch.equal(
        windows, pruning.token_windows(tokenizer, texts, count=5, length=32, seed=3)
    )
    assert len({tuple(row.tolist()) for row in windows}) == 5
    with pytest.raises(UserError, match="fewer than one window"):
        pruning.token_windows(tokenizer, ["tiny"], count=2, length=512)


# --------------------------------------------------------------------------------------------------------------
# Unstructured pruning of a model


@pytest.mark.parametrize(
    "method, pattern", [("wanda", "unstructured"), ("magnitude", "unstructured"), ("wanda", "2:4")]
)
def test_pruning_a_model_hits_the_sparsity_and_the_zeros_are_saved(
    tmp_path, base_model_dir, calibration, method, pattern
):
    model = AutoModelForCausalLM.from_pretrained(base_model_dir)
    embeddings = model.get_input_embeddings().weight.detach().clone()
    result = pruning.prune_unstructured(model, method, sparsity=0.5, pattern=pattern, calibration=calibration)
    layers = pruning.prunable_linears(model)
    assert len(layers) == 14 and set(result.masks) == set(layers)  # q, k, v, o, gate, up, down in 2 blocks
    for row in pruning.layer_sparsity(model):
        assert row.sparsity == 0.5, row.name
    for name, layer in layers.items():
        if pattern == "2:4":
            assert pruning.is_n_m_sparse(layer.weight), name
        elif method == "wanda":  # compared within each output row
            assert ((layer.weight == 0).sum(dim=1) == layer.in_features // 2).all(), name
    assert torch.equal(model.get_input_embeddings().weight, embeddings)  # embeddings and (tied) head untouched
    model.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    assert [row.zeros for row in pruning.layer_sparsity(reloaded)] == [
        row.zeros for row in pruning.layer_sparsity(model)
    ]


def test_wanda_is_block_sequential(base_model_dir, calibration):
    """Block 1's norms come from inputs that went through the already pruned block 0, so its masks differ from
    those computed on the dense model's activations."""
    sequential = AutoModelForCausalLM.from_pretrained(base_model_dir)
    masks = pruning.prune_unstructured(sequential, "wanda", sparsity=0.5, calibration=calibration).masks
    dense = AutoModelForCausalLM.from_pretrained(base_model_dir)
    layers = pruning.prunable_linears(dense)
    norms = pruning.input_norms(dense, calibration, layers)
    one_pass = {name: pruning.layer_mask(layer, 0.5, None, norms[name]) for name, layer in layers.items()}
    assert torch.equal(masks["model.layers.0.mlp.up_proj"], one_pass["model.layers.0.mlp.up_proj"])
    assert not torch.equal(masks["model.layers.1.mlp.up_proj"], one_pass["model.layers.1.mlp.up_proj"])


def test_mask_keeper_restores_zeros_after_an_optimizer_step(base_model_dir):
    model = AutoModelForCausalLM.from_pretrained(base_model_dir)
    pruning.prune_unstructured(model, "magnitude", sparsity=0.6)
    keeper = pruning.MaskKeeper()
    keeper.on_train_begin(None, None, None, model=model)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01)  # what an optimizer step with momentum does to pruned weights
    keeper.on_optimizer_step(None, None, None, model=model)
    assert all(row.sparsity == pytest.approx(0.6, abs=1e-3) for row in pruning.layer_sparsity(model))


# --------------------------------------------------------------------------------------------------------------
# Structured pruning


def dead_heads_and_channels(model, heads: list[int], channels_per_layer: int) -> None:
    """Zero the o_proj columns of `heads` and the down_proj columns of some MLP channels in every layer: they then
    contribute nothing, and removing them must leave the outputs unchanged."""
    _, _, head_dim = pruning.attention_shape(model.config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.model.layers:
            for head in heads:
                layer.self_attn.o_proj.weight[:, head * head_dim : (head + 1) * head_dim] = 0
            dead = torch.randperm(model.config.intermediate_size, generator=generator)[:channels_per_layer]
            layer.mlp.down_proj.weight[:, dead] = 0


@pytest.mark.parametrize(
    "prune_kv_heads, dead, use_calibration",
    [(True, [2, 3], True), (False, [1, 2], True), (True, [0, 1], False)],  # llama-tiny: heads 0,1 share KV head 0
)
def test_structured_pruning_removes_what_carries_nothing(
    tmp_path, base_model_dir, calibration, prune_kv_heads, dead, use_calibration
):
    model = AutoModelForCausalLM.from_pretrained(base_model_dir)
    dead_heads_and_channels(model, dead, channels_per_layer=48)
    ids = calibration[:2]
    expected = logits(model, ids)
    plan = pruning.StructuredPlan(heads_to_prune=2, prune_kv_heads=prune_kv_heads, mlp_channels_to_prune=48)
    smaller = pruning.prune_structured(model, plan, calibration if use_calibration else None)

    config = smaller.config
    assert (config.num_attention_heads, config.intermediate_size, config.head_dim) == (2, 176 - 48, 16)
    assert config.num_key_value_heads == (1 if prune_kv_heads else 2)
    assert smaller.num_parameters() < model.num_parameters()
    assert smaller.model.layers[0].mlp.down_proj.weight.shape == (64, 128)
    torch.testing.assert_close(logits(smaller, ids), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits(model, ids), expected)  # the source model is left as it was

    smaller.save_pretrained(tmp_path / "smaller")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "smaller")
    assert reloaded.num_parameters() == smaller.num_parameters()
    torch.testing.assert_close(logits(reloaded, ids), expected, rtol=1e-5, atol=1e-5)


def test_structured_plans_are_checked_against_the_config(base_model_dir):
    config = AutoModelForCausalLM.from_pretrained(base_model_dir).config  # 4 heads, 2 KV heads, MLP 176
    with pytest.raises(UserError, match="not a multiple of 2, the query heads per KV head"):
        pruning.check_structured_plan(config, pruning.StructuredPlan(heads_to_prune=1))
    with pytest.raises(UserError, match="would leave none of the 4 heads"):
        pruning.check_structured_plan(config, pruning.StructuredPlan(heads_to_prune=4))
    with pytest.raises(UserError, match="would leave none of the 176"):
        pruning.check_structured_plan(config, pruning.StructuredPlan(mlp_channels_to_prune=176))
    with pytest.raises(UserError, match="set heads_to_prune and/or mlp_channels_to_prune"):
        pruning.check_structured_plan(config, pruning.StructuredPlan())


# --------------------------------------------------------------------------------------------------------------
# The stage


def test_structured_stage_writes_a_smaller_model_that_auto_loads(tmp_path, base_model_dir):
    out = tmp_path / "pruned"
    summary = run_prune(
        tmp_path,
        model_name_or_path=str(base_model_dir),
        output_dir=str(out),
        method="structured",
        heads_to_prune=2,
        mlp_channels_to_prune=48,
        **CALIBRATION,
        **FAST_REPORT,
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    source = AutoModelForCausalLM.from_pretrained(base_model_dir)
    assert model.num_parameters() < 0.85 * source.num_parameters()
    assert (model.config.num_attention_heads, model.config.intermediate_size) == (2, 128)
    report = json.loads((out / "compression_report.json").read_text())
    source_measure, pruned_measure = (report["comparison"][side]["measures"] for side in ("source", "compressed"))
    assert list(source_measure) == list(pruned_measure) == report["comparison"]["protocol"]["measures"]
    assert pruned_measure["parameters"] == model.num_parameters()
    assert pruned_measure["size_bytes"] < source_measure["size_bytes"]
    assert pruned_measure["corpus_perplexity"] > 1 and source_measure["corpus_perplexity"] > 1
    manifest = read_manifest(out)
    assert manifest["metrics"]["protocol measures"]["parameters"] == (
        f"{source.num_parameters():,} -> {model.num_parameters():,}"
    )
    assert manifest["stage"] == "prune" and summary["method"].startswith("structured")


@pytest.mark.slow
def test_wanda_stage_with_recovery_keeps_the_sparsity(tmp_path, base_model_dir):
    out = tmp_path / "pruned"
    run_prune(
        tmp_path,
        model_name_or_path=str(base_model_dir),
        output_dir=str(out),
        method="wanda",
        sparsity=0.5,
        recovery_dataset_path=CORPUS,
        recovery_block_size=64,
        max_recovery_samples=200,
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        save_strategy="no",
        **CALIBRATION,
        **FAST_REPORT,
    )
    report = json.loads((out / "compression_report.json").read_text())
    assert report["recovery"]["optimizer steps"] == 8
    assert all(row["sparsity"] == 0.5 for row in report["layer_sparsity"])
    source, pruned, recovered = (
        report["comparison"]["source"]["measures"],
        report["pruned_before_recovery"]["measures"],
        report["comparison"]["compressed"]["measures"],
    )
    assert list(pruned) == list(recovered) == list(source)  # the three models on the same measures
    ppl = "corpus_perplexity"
    assert pruned[ppl] != source[ppl] and recovered[ppl] != pruned[ppl]
    # zeros of the pruned layers over all weight matrices, embeddings included
    assert report["comparison"]["compressed"]["details"]["weight_sparsity"] > 0.25
    reloaded = AutoModelForCausalLM.from_pretrained(out)  # the recovered weights still hold the zeros
    assert all(row.sparsity == 0.5 for row in pruning.layer_sparsity(reloaded))
    assert not (out / PRUNE.UNRECOVERED).exists()


@pytest.mark.slow
def test_recovery_on_chats_keeps_the_chat_format(tmp_path, chat_model_dir):
    """recovery_datasets fine-tunes as SFT does (chat template, loss on the answers): the pruned chat model answers
    and ends its turn, where recovery on flattened text taught the demo model to run on past its answer."""
    import subprocess
    import sys

    chats = tmp_path / "chats.jsonl"

    def chat(n: int) -> dict:
        return {
            "messages": [{"role": "user", "content": f"Is {n} a number?"}, {"role": "assistant", "content": "Yes."}]
        }

    chats.write_text("".join(json.dumps(chat(n)) + "\n" for n in range(64)))
    out = tmp_path / "pruned"
    config = dict(
        model_name_or_path=str(chat_model_dir),
        output_dir=str(out),
        method="magnitude",
        sparsity=0.5,
        recovery_datasets=[{"path": str(chats), "weight": 2.0}],
        max_steps=30,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        save_strategy="no",
        use_cpu=True,
        **FAST_REPORT,
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm_recipes.cli",
            "prune",
            "--config",
            str(write_yaml(tmp_path / "prune.yaml", config)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "compression_report.json").read_text())
    assert report["recovery"]["optimizer steps"] == 30 and report["recovery"]["training rows"] == 128
    assert report["recovery"]["data"].startswith("chats")
    assert all(row.sparsity == 0.5 for row in pruning.layer_sparsity(AutoModelForCausalLM.from_pretrained(out)))
    assert read_manifest(out)["inputs"]["recovery dataset"] == [str(chats)]

    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    turn = [{"role": "user", "content": "Is 99 a number?"}]
    prompt = tokenizer.apply_chat_template(turn, add_generation_prompt=True, return_dict=True)["input_ids"]
    output = model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt) :].tolist()
    assert tokenizer.decode(output, skip_special_tokens=True).strip() == "Yes."
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in output  # it ends its turn


def test_config_mistakes_fail_before_loading(tmp_path, base_model_dir):
    base = dict(model_name_or_path=str(base_model_dir), output_dir=str(tmp_path / "o"))
    with pytest.raises(UserError, match="method wanda .* set calibration_dataset_path"):
        parse_prune(tmp_path, **base, method="wanda")
    with pytest.raises(UserError, match="are for method: structured"):
        parse_prune(tmp_path, **base, method="magnitude", heads_to_prune=2)
    with pytest.raises(UserError, match="not a multiple of 2"):
        parse_prune(tmp_path, **base, method="structured", heads_to_prune=1)
    with pytest.raises(UserError, match="sparsity: 1.0 must be in"):
        parse_prune(tmp_path, **base, method="magnitude", sparsity=1.0)
    with pytest.raises(UserError, match="sparsity_pattern: '3:2'"):
        parse_prune(tmp_path, **base, method="magnitude", sparsity_pattern="3:2")
    chats = [{"path": str(DEMO_DATA / "colour_sft.jsonl")}]
    with pytest.raises(UserError, match=r"recovery_dataset_path \(text\) or recovery_datasets \(chats\), not both"):
        parse_prune(tmp_path, **base, method="magnitude", recovery_dataset_path=CORPUS, recovery_datasets=chats)
    with pytest.raises(UserError, match=r"recovery_datasets\[0\]: unknown key 'wieght'.*weight"):
        parse_prune(tmp_path, **base, method="magnitude", recovery_datasets=[{"path": CORPUS, "wieght": 2}])
    with pytest.raises(UserError, match="recovery dataset .*nowhere.jsonl"):
        parse_prune(tmp_path, **base, method="magnitude", recovery_datasets=[{"path": "nowhere.jsonl"}])


def test_quantized_sources_are_refused(tmp_path, base_model_dir):
    from test_quantize import lora_adapter

    from llm_recipes.compress.quantize import QuantizationSpec, quantize_folder

    int8 = tmp_path / "int8"
    quantize_folder(base_model_dir, int8, QuantizationSpec("bnb_int8"))
    with pytest.raises(UserError, match=r"is quantized \(int8\); prune the full-precision model"):
        parse_prune(tmp_path, model_name_or_path=str(int8), output_dir=str(tmp_path / "o"), method="magnitude")
    adapter = lora_adapter(base_model_dir, tmp_path / "lora")
    with pytest.raises(UserError, match=r"quantized \(int8\).*merge the adapter into the full-precision base first"):
        parse_prune(
            tmp_path,
            model_name_or_path=str(adapter),
            base_model_name_or_path=str(int8),
            output_dir=str(tmp_path / "o"),
            method="magnitude",
        )
