"""Dry-run estimates (llm_recipes/pipeline/estimates/) and the real-scale pipeline configs they size.

Nothing here trains or downloads: parameter counts come from meta-device models, activations are checked against
the tensors autograd saves for a tiny model, and the pipelines in configs/smollm2-135m and configs/qwen2.5-1.5b pass
every stage's own checks, as `llm-recipes pipeline --dry_run` runs them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command_parser
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification

from llm_recipes.errors import UserError
from llm_recipes.models.loading import DECODER_PRESETS, ENCODER_PRESETS
from llm_recipes.pipeline.estimates import (
    activation_bytes,
    estimate_stage,
    format_bytes,
    launch_plan,
    model_config_for,
    parameter_count,
    related_model_configs,
)

PROJECT = Path(__file__).resolve().parents[1]
ACCELERATE = PROJECT / "configs" / "accelerate"
PIPELINES = [
    PROJECT / "configs" / "smollm2-135m" / "pipeline.yaml",
    PROJECT / "configs" / "qwen2.5-1.5b" / "pipeline.yaml",
]
REAL_SCALE_ACCELERATE = sorted((PROJECT / "configs").glob("*/accelerate/*.yaml"))
STAGE_SECTIONS = ("clean-corpus", "train-tokenizer", "pretrain", "sft", "reward", "ppo", "grpo", "rloo", "dpo")
STAGE_SECTIONS += ("evaluate", "distill", "quantize", "prune", "export")


def small_llama(**overrides):
    from transformers import LlamaConfig

    fields = dict(DECODER_PRESETS["llama-small"], vocab_size=1000, tie_word_embeddings=True)
    return LlamaConfig(**{**fields, **overrides})


def launch(name: str) -> list[str]:
    return ["--config_file", str(ACCELERATE / name)]


SFT_SECTION = {
    "model_name_or_path": "outputs/x/pretrain",
    "dataset_path": "data.jsonl",
    "max_length": 1024,
    "per_device_train_batch_size": 4,
    "dtype": "bfloat16",
    "bf16": True,
}


# --------------------------------------------------------------------------------------------------------------
# Parameter counts


@pytest.mark.parametrize(
    ("config", "head", "auto_class"),
    [
        (small_llama(), "causal_lm", AutoModelForCausalLM),
        (small_llama(tie_word_embeddings=False), "causal_lm", AutoModelForCausalLM),
        (small_llama(num_labels=1), "sequence_classification", AutoModelForSequenceClassification),
    ],
    ids=["llama-tied", "llama-untied", "llama-classifier"],
)
def test_parameter_count_matches_a_real_model(config, head, auto_class):
    torch.manual_seed(0)
    model = auto_class.from_config(config)
    assert parameter_count(config, head=head) == sum(p.numel() for p in model.parameters())


def test_parameter_count_of_an_encoder():
    from transformers import BertConfig

    config = BertConfig(**ENCODER_PRESETS["bert-tiny"], vocab_size=800)
    model = AutoModelForMaskedLM.from_config(config)
    assert parameter_count(config, head="masked_lm") == sum(p.numel() for p in model.parameters())


def test_real_architectures_have_their_published_sizes():
    smollm = AutoConfig.from_pretrained(PROJECT / "configs" / "smollm2-135m" / "model")
    qwen = AutoConfig.from_pretrained(PROJECT / "configs" / "qwen2.5-1.5b" / "model")
    assert (smollm.hidden_size, smollm.num_hidden_layers, smollm.num_key_value_heads) == (576, 30, 3)
    assert parameter_count(smollm) == 134_515_008  # SmolLM2-135M
    assert parameter_count(qwen) == 1_543_714_304  # Qwen2.5-1.5B: "1.54B"


# --------------------------------------------------------------------------------------------------------------
# Activations: the formula against what autograd really keeps for the backward pass


def _saved_bytes(config, dtype: torch.dtype, autocast: bool, batch: int = 2, seq: int = 32) -> int:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(dtype).train()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, config.vocab_size, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=ids, labels=ids)
    return sum(size for pointer, size in storages.items() if pointer not in parameters)


@pytest.mark.parametrize(
    ("dtype", "autocast", "compute16"),
    [(torch.bfloat16, False, True), (torch.float32, True, True), (torch.float32, False, False)],
    ids=["bf16", "fp32-autocast", "fp32"],
)
def test_activation_formula_per_layer_matches_saved_tensors(dtype, autocast, compute16):
    base = dict(hidden_size=96, intermediate_size=256, num_attention_heads=6, num_key_value_heads=2, vocab_size=500)
    shallow, deep = small_llama(num_hidden_layers=1, **base), small_llama(num_hidden_layers=3, **base)
    measured = _saved_bytes(deep, dtype, autocast) - _saved_bytes(shallow, dtype, autocast)
    kwargs = dict(batch=2, seq_len=32, checkpointing=False, compute16=compute16, fp32_residual=dtype == torch.float32)
    estimated = activation_bytes(deep, **kwargs) - activation_bytes(shallow, **kwargs)
    if autocast:  # autocast keeps a bf16 copy of each weight for the backward pass (counted with the model states)
        estimated += 2 * (parameter_count(deep) - parameter_count(shallow))
    assert estimated == pytest.approx(measured, rel=0.05)


def test_checkpointing_and_eager_attention_move_activations_the_right_way():
    config = small_llama()
    kwargs = dict(batch=4, seq_len=512, compute16=True)
    plain = activation_bytes(config, checkpointing=False, **kwargs)
    assert activation_bytes(config, checkpointing=True, **kwargs) < plain / 2
    assert activation_bytes(config, checkpointing=False, eager_attention=True, **kwargs) > plain
    classifier = activation_bytes(config, checkpointing=False, head="sequence_classification", **kwargs)
    assert plain - classifier == 4 * 512 * 1000 * 14  # the LM head's logits term


# --------------------------------------------------------------------------------------------------------------
# Launch settings


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fsdp.yaml", (8, "fsdp", "bf16")),
        ("multi_node.yaml", (16, "multi-node ddp", "bf16")),
        ("ddp.yaml", (8, "ddp", "bf16")),
        ("deepspeed_zero2.yaml", (8, "zero2", "bf16")),
        ("deepspeed_zero3.yaml", (8, "zero3", "bf16")),
        ("single_gpu.yaml", (1, "single", "bf16")),
        ("cpu.yaml", (2, "cpu ddp", "no")),
    ],
)
def test_launch_plan_reads_the_accelerate_configs(name, expected):
    assert launch_plan(launch(name)) == expected


def test_launch_flags_override_the_file():
    assert launch_plan([*launch("ddp.yaml"), "--num_processes", "4"]) == (4, "ddp", "bf16")
    assert launch_plan(["--num_processes=2", "--use_deepspeed", "--zero_stage", "3"]) == (2, "zero3", "no")
    assert launch_plan(None) == (1, "single", "no")
    assert launch_plan(["--multi_gpu", "--num_processes", "8", "--mixed_precision", "fp16"]) == (8, "ddp", "fp16")


def test_launch_plan_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="accelerate config file not found"):
        launch_plan(["--config_file", str(tmp_path / "nope.yaml")])


# --------------------------------------------------------------------------------------------------------------
# Estimates


def test_zero3_per_device_is_below_ddp():
    config = small_llama()
    ddp = estimate_stage("sft", SFT_SECTION, model_config=config, launch_args=launch("ddp.yaml"))
    zero3 = estimate_stage("sft", SFT_SECTION, model_config=config, launch_args=launch("deepspeed_zero3.yaml"))
    assert (ddp.strategy, zero3.strategy, zero3.processes) == ("ddp", "zero3", 8)
    assert zero3.memory_per_device < ddp.memory_per_device
    states = ("weights", "gradients", "optimizer states")
    assert sum(zero3.breakdown[k] for k in states) < sum(ddp.breakdown[k] for k in states) / 2
    assert zero3.breakdown["activations"] == ddp.breakdown["activations"]  # sharding never splits the batch


def test_lora_trains_a_small_fraction():
    config = small_llama()
    full = estimate_stage("sft", SFT_SECTION, model_config=config)
    lora = estimate_stage("sft", {**SFT_SECTION, "use_peft": True, "lora_r": 8}, model_config=config)
    assert full.trainable_parameters == full.parameters == parameter_count(config)
    assert 0 < lora.trainable_parameters < full.trainable_parameters / 20
    # q_proj and v_proj (PEFT's default for Llama), rank 8: r * (in + out) per matrix
    head_dim = config.hidden_size // config.num_attention_heads
    per_layer = 8 * (2 * config.hidden_size) + 8 * (config.hidden_size + config.num_key_value_heads * head_dim)
    assert lora.trainable_parameters == config.num_hidden_layers * per_layer
    assert lora.breakdown["optimizer states"] < full.breakdown["optimizer states"] / 20


def test_partial_finetuning_counts_the_unfrozen_top():
    config = small_llama()
    partial = estimate_stage("sft", {**SFT_SECTION, "trainable_top_layers": 1}, model_config=config)
    block = parameter_count(config) - parameter_count(small_llama(num_hidden_layers=config.num_hidden_layers - 1))
    embedding = config.vocab_size * config.hidden_size  # tied: training the head trains the embedding
    assert partial.trainable_parameters == block + embedding + config.hidden_size  # + the final norm


def test_4bit_weights_are_smaller_than_bf16():
    config = small_llama()
    qlora = {**SFT_SECTION, "use_peft": True, "load_in_4bit": True}
    bf16 = estimate_stage("sft", {**SFT_SECTION, "use_peft": True}, model_config=config)
    four_bit = estimate_stage("sft", qlora, model_config=config)
    assert four_bit.breakdown["weights"] < bf16.breakdown["weights"] / 2
    assert four_bit.trainable_parameters == bf16.trainable_parameters


def test_dpo_holds_a_reference_only_without_lora():
    config = small_llama()
    section = {**SFT_SECTION, "beta": 0.1}
    full = estimate_stage("dpo", section, model_config=config)
    lora = estimate_stage("dpo", {**section, "use_peft": True}, model_config=config)
    assert full.breakdown["reference model"] == parameter_count(config) * 2  # a frozen bf16 copy
    assert "reference model" not in lora.breakdown


def test_ppo_shards_its_reference_under_fsdp_keeps_the_reward_model_whole_and_refuses_zero3():
    config = small_llama()
    section = {"model_name_or_path": "p", "reward_model_path": "r", "dataset_path": "d.jsonl", "dtype": "bfloat16"}
    ddp = estimate_stage("ppo", section, model_config=config, launch_args=launch("ddp.yaml"), reward_config=config)
    fsdp = estimate_stage("ppo", section, model_config=config, launch_args=launch("fsdp.yaml"), reward_config=config)
    assert fsdp.breakdown["reference model"] == ddp.breakdown["reference model"] / 8 > 0  # prepared with the policy
    assert ddp.breakdown["reward model"] == fsdp.breakdown["reward model"] > 0  # only called: whole on every device
    assert fsdp.breakdown["weights"] < ddp.breakdown["weights"]  # policy + value sharded
    # generation keeps the whole policy gathered (fp32: this section has no bf16, which PPO's precision follows)
    assert fsdp.breakdown["gathered parameters"] == 4 * parameter_count(config)
    for file in ("deepspeed_zero3.yaml", "deepspeed_zero2.yaml"):
        with pytest.raises(UserError, match="not under DeepSpeed"):
            estimate_stage("ppo", section, model_config=config, launch_args=launch(file), reward_config=config)
    with pytest.raises(UserError, match="FSDP2 only, not fsdp_version 1"):
        estimate_stage("ppo", section, model_config=config, launch_args=[*launch("fsdp.yaml"), "--fsdp_version", "1"])


def test_unknowns_give_none_and_a_note():
    config = small_llama()
    assert estimate_stage("sft", SFT_SECTION, model_config=None).memory_per_device is None
    odd = estimate_stage("sft", {**SFT_SECTION, "optim": "galore_adamw"}, model_config=config)
    assert odd.memory_per_device is None
    assert any("galore_adamw" in note for note in odd.notes)
    distill = estimate_stage("distill", {"teacher_name_or_path": "t"}, model_config=config)
    assert distill.memory_per_device is None and any("teacher" in note for note in distill.notes)


def test_weights_only_stages():
    config = small_llama(dtype="float32")
    quantize = estimate_stage("quantize", {"model_name_or_path": "m", "method": "bnb_4bit"}, model_config=config)
    export = estimate_stage("export", {"model_name_or_path": "m", "dtype": "bfloat16"}, model_config=config)
    assert quantize.breakdown["quantized copy"] < quantize.breakdown["weights"] / 3
    assert export.memory_per_device == parameter_count(config) * 2
    assert export.trainable_parameters == 0


def test_format_bytes():
    assert format_bytes(None) == "—"
    assert format_bytes(512) == "512 B"
    assert format_bytes(int(1.25 * 1024**3)) == "1.2 GiB"
    assert format_bytes(3 * 1024**2) == "3.0 MiB"


# --------------------------------------------------------------------------------------------------------------
# Model configs


def test_model_config_for_a_preset_takes_the_trained_vocabulary():
    section = {"preset": "llama-small", "tokenizer_name_or_path": "outputs/x/train-tokenizer"}
    config = model_config_for("pretrain", section, vocab_size=4096)
    assert (config.hidden_size, config.vocab_size) == (DECODER_PRESETS["llama-small"]["hidden_size"], 4096)
    assert model_config_for("pretrain", section) is None  # vocabulary unknown: no guess


def test_model_config_for_a_hub_id_mapped_to_a_folder(tmp_path):
    small_llama().save_pretrained(tmp_path / "arch")
    mapping = {"some-org/some-model": str(tmp_path / "arch")}
    config = model_config_for("sft", {"model_name_or_path": "some-org/some-model"}, model_configs=mapping)
    assert config.hidden_size == small_llama().hidden_size
    local = model_config_for("dpo", {"model_name_or_path": str(tmp_path / "arch")})
    assert local.num_hidden_layers == small_llama().num_hidden_layers


def test_an_unmapped_hub_id_resolves_to_none_without_the_network(monkeypatch):
    import socket

    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    # even where the environment allows the network, only the local cache is read
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert model_config_for("sft", {"model_name_or_path": "some-org/not-mapped-anywhere"}) is None
    assert related_model_configs("ppo", {"reward_model_path": "some-org/also-not-mapped"}) == {"reward_config": None}
    assert attempts == []


def test_a_hub_id_in_the_local_cache_resolves(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--some-org--cached-model" / "snapshots" / "abc123"
    small_llama().save_pretrained(snapshot)
    (tmp_path / "models--some-org--cached-model" / "refs").mkdir()
    (tmp_path / "models--some-org--cached-model" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    config = model_config_for("reward", {"model_name_or_path": "some-org/cached-model"})
    assert config.hidden_size == small_llama().hidden_size


def test_earlier_outputs_stand_in_for_folders_not_written_yet():
    earlier = {"outputs/x/sft": small_llama(), "./outputs/x/reward": small_llama(num_hidden_layers=2)}
    section = {"model_name_or_path": "outputs/x/sft", "reward_model_path": "outputs/x/reward"}
    assert model_config_for("ppo", section) is None  # the folder does not exist yet
    policy = model_config_for("ppo", section, earlier_outputs=earlier)
    related = related_model_configs("ppo", section, earlier_outputs=earlier)
    assert policy.num_hidden_layers == small_llama().num_hidden_layers
    assert related["reward_config"].num_hidden_layers == 2
    estimate = estimate_stage("ppo", section, model_config=policy, **related)
    assert (
        estimate.breakdown["reward model"]
        == parameter_count(related["reward_config"], head="sequence_classification") * 4
    )


def test_distill_student_and_teacher(tmp_path):
    small_llama().save_pretrained(tmp_path / "teacher")
    section = {"teacher_name_or_path": str(tmp_path / "teacher")}
    student = model_config_for("distill", section)
    assert student.num_hidden_layers == small_llama().num_hidden_layers // 2  # every other layer
    related = related_model_configs("distill", section)
    estimate = estimate_stage("distill", section, model_config=student, **related)
    assert estimate.parameters < parameter_count(small_llama())
    assert estimate.breakdown["teacher model"] == parameter_count(small_llama()) * 4  # saved in fp32


# --------------------------------------------------------------------------------------------------------------
# Real-scale pipelines: every section parses as its stage would, and the headers quote the current estimates


def _plan(path: Path, **settings):
    from llm_recipes.pipeline.plan import build_plan, read_pipeline_config

    pipeline_settings, sections = read_pipeline_config(str(path))
    for key, value in settings.items():
        setattr(pipeline_settings, key, value)
    return pipeline_settings, sections, build_plan(pipeline_settings, sections)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.parent.name)
def test_real_scale_pipelines_pass_every_stage_check(path: Path, tmp_path, monkeypatch):
    """What `--dry_run` does: each stage's resolved config through that stage's own parser, as on the GPU nodes."""
    from llm_recipes.pipeline.runner import check_plan, checks_as_on_a_gpu_machine, write_stage_configs

    monkeypatch.chdir(PROJECT)  # the configs' paths are relative to the repository root
    for rl_algorithm in ("ppo", "dpo"):  # one field switches the RL stage; both sections are complete
        settings, _, plan = _plan(path, rl_algorithm=rl_algorithm)
        assert rl_algorithm in {step.stage for step in plan if step.action == "run"}
        with checks_as_on_a_gpu_machine():
            check_plan(plan, write_stage_configs(plan, tmp_path / rl_algorithm))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.parent.name)
def test_real_scale_pipelines_are_estimated_and_headers_are_current(path: Path, monkeypatch):
    from llm_recipes.pipeline.dry_run import estimate_plan

    monkeypatch.chdir(PROJECT)
    settings, sections, plan = _plan(path)
    assert {"ppo", "dpo"} <= set(sections)  # one field switches the RL algorithm
    estimates = estimate_plan(plan, settings)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#")
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for heading in ("WHEN TO USE", "WHAT TO CHANGE", "MEMORY NOTES", "THROUGHPUT"):
        assert heading in header, f"{path.name}: header lacks {heading}"
    stages = {step.slot: step.stage for step in plan}
    for slot, estimate in estimates.items():
        stage = stages[slot]
        if stage in ("clean-corpus", "train-tokenizer"):
            continue
        assert estimate.parameters is not None and estimate.memory_per_device is not None, stage
        assert estimate.memory_per_device < 80 * 1024**3, f"{stage} does not fit an 80 GB GPU"
        assert re.search(rf"\b{re.escape(format_bytes(estimate.memory_per_device))}", header), (
            f"{path.name}: the MEMORY NOTES do not quote {stage}'s current estimate "
            f"{format_bytes(estimate.memory_per_device)}"
        )
    other = "ppo" if settings.rl_algorithm == "dpo" else "dpo"
    settings, _, plan = _plan(path, rl_algorithm=other)
    assert estimate_plan(plan, settings)["rl"].memory_per_device is not None


# --------------------------------------------------------------------------------------------------------------
# The real-scale accelerate configs, through accelerate's own loader (as tests/test_accelerate_configs.py does)

EXPECTED_REAL_SCALE = {
    "smollm2-135m/ddp.yaml": (8, "ddp", "bf16"),
    "smollm2-135m/multi_node.yaml": (16, "multi-node ddp", "bf16"),
    "qwen2.5-1.5b/fsdp.yaml": (8, "fsdp", "bf16"),
    "qwen2.5-1.5b/ddp.yaml": (8, "ddp", "bf16"),
    "qwen2.5-1.5b/deepspeed_zero3.yaml": (8, "zero3", "bf16"),
    "qwen2.5-1.5b/multi_node_fsdp.yaml": (16, "multi-node fsdp", "bf16"),
}


def _key(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.name}"


def test_expected_real_scale_accelerate_configs_exist():
    assert sorted(EXPECTED_REAL_SCALE) == sorted(_key(path) for path in REAL_SCALE_ACCELERATE)


@pytest.mark.parametrize("path", REAL_SCALE_ACCELERATE, ids=_key)
def test_real_scale_accelerate_config(path: Path):
    text = path.read_text(encoding="utf-8")
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for section in ("WHEN TO USE", "WHAT TO CHANGE", "MEMORY NOTES", "THROUGHPUT"):
        assert section in header, f"{path.name}: header lacks {section}"
    config = load_config_from_file(str(path))  # raises on unknown top-level keys or bad enum values
    assert isinstance(config.mixed_precision, str)
    dests = {action.dest for action in launch_command_parser()._actions}
    nested = {f"fsdp_{k}" if not k.startswith("fsdp") else k for k in config.fsdp_config} | set(config.deepspeed_config)
    assert not sorted(nested - dests), f"{path.name}: keys `accelerate launch` does not read"
    processes, strategy, mixed = EXPECTED_REAL_SCALE[_key(path)]
    assert (config.num_processes, config.mixed_precision) == (processes, mixed)
    assert launch_plan(["--config_file", str(path)]) == (processes, strategy, mixed)
    if config.fsdp_config:
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "Qwen2DecoderLayer"
