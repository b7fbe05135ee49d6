"""Peak memory per device of a stage: the models it holds (policy, reference, value, reward, teacher), their
weights, gradients and optimizer states as the launch shards them, and the activations of a micro-batch.

MEMORY MODEL (bytes per device; P = parameters, T = trainable parameters, N = processes sharing a shard)

Model states (the ZeRO paper's accounting, Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training
Trillion Parameter Models"):
- weights at their load dtype: fp32 4, bf16/fp16 2 (the stage's `dtype`/`teacher_dtype`; `auto` = the dtype saved
  in config.json; from-scratch pretraining and distillation students are fp32). 8-bit loading: 1 byte per
  quantized Linear weight; 4-bit (QLoRA): 0.5 byte + one fp32 absmax per 64 weights (+0.0625; nested quantization
  +0.016 instead). Embeddings, norms and the LM head stay in the compute dtype (bitsandbytes skips them).
- gradients: T x the trainable parameters' dtype. LoRA adapters are fp32 (PEFT's `autocast_adapter_dtype`).
- optimizer states: AdamW keeps 2 states per trainable parameter in the parameter's dtype (torch creates them with
  `zeros_like`), so pure-bf16 training holds 2 x 2 bytes and fp32 training 2 x 4; 8-bit optimizers (bitsandbytes)
  1 byte per state; Lion 1 state; SGD 0 states (1 with momentum in `optim_args`); Adafactor a factored second
  moment (rows + columns of each matrix, fp32). Unknown optimizers give None and a note.
- mixed precision: under bf16/fp16 autocast with fp32 weights, autocast keeps a 16-bit copy of every trainable
  weight between forward and backward (+2 x T). DeepSpeed casts the model to 16 bit and keeps an fp32 master
  copy in its optimizer (the classic 2 + 2 + 12 bytes per parameter). Accelerate's FSDP2 upcasts trainable
  parameters to fp32 under mixed precision (4 + 4 + 8).
- DDP: replicas everywhere, plus DDP's gradient buckets (a second copy of the gradients: accelerate leaves
  `gradient_as_bucket_view` off).
- sharding over N processes: ZeRO-1 shards optimizer states; ZeRO-2 and FSDP SHARD_GRAD_OP also gradients (FSDP
  SHARD_GRAD_OP keeps a gathered 16-bit copy of the whole model between forward and backward); ZeRO-3 and FSDP
  FULL_SHARD shard weights too, plus the parameters gathered for the layer being computed (16-bit, the larger of
  the embedding and two decoder layers, for prefetch). HYBRID_SHARD shards within a node. Optimizer or parameter
  offload to the CPU removes those from the device (noted).

Activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models": per layer
s*b*h*(34 + 5*a*s/h) bytes for a GPT block in 16 bit). Re-derived for the Llama-style blocks the presets and most
checkpoints use (SwiGLU MLP of width i, grouped KV heads of total width h_kv, RMSNorm, no dropout) and checked
against the tensors autograd saves (tests/test_planning.py), bytes per token per layer:
- 16-bit weights (or DeepSpeed/FSDP mixed precision):      20h + 4h_kv + 8i
- fp32 weights under bf16/fp16 autocast (RMSNorm in fp32): 30h + 4h_kv + 8i
- fp32 without autocast:                                   32h + 8h_kv + 16i
- eager attention adds the attention matrix (Korthikanti's 5as/h term): 6*a*s (16 bit) or 5*a*s (fp32) bytes;
  SDPA / FlashAttention keep only the output and its log-sum-exp.
- gradient checkpointing (every decoder layer): each layer's input (2 or 4 bytes x h) plus one layer recomputed
  in the backward pass (Korthikanti's "full recomputation", 2sbhL).
- the LM head: logits (2 or 4 bytes) + fp32 log-softmax (4) saved, and the fp32 gradient of both in the backward
  pass (8): 14 or 16 bytes per token per vocabulary entry -- the largest single term for small models with big
  vocabularies. Sequence classifiers (reward, value models) have no such term.
Tokens per micro-batch: per_device_train_batch_size x length (pretrain: block_size; SFT/reward/DPO: max_length,
the worst case without packing; reward and DPO run chosen and rejected together, 2x rows; PPO: mini_batch_size /
gradient_accumulation_steps x (max_prompt_length + response_length); GRPO/RLOO: completions only, as TRL bounds no
prompt length -- noted).

Per stage: PPO (our trainer) trains policy + value model and holds a frozen reference (prepared with them, so
sharded under FSDP2) and a reward model (called through the reward function, whole on every device); under FSDP2
generation keeps the whole policy gathered; its rollout adds the KV cache and the logits of the scoring passes. PPO
under DeepSpeed or FSDP1 is refused (`check_ppo_launch`). GRPO/RLOO hold the policy, a reference when beta > 0
(none with LoRA: the adapter-disabled policy is the reference) and a reward model on every device; DPO the policy
and a reference (none with LoRA); reward a sequence classifier; distill a trained student and a frozen teacher;
evaluate, quantize, prune (without recovery fine-tune) and export their weights only.

Not counted: the CUDA context and kernels (~0.5-1 GiB), allocator fragmentation (often 5-15%), communication
buffers, dataloader workers. These are estimates for planning, not measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PretrainedConfig

from llm_recipes.pipeline.estimates.activations import block_dimensions, micro_batch_activations
from llm_recipes.pipeline.estimates.precision import (
    FOUR_BIT_BYTES,
    FOUR_BIT_NESTED_BYTES,
    dtype_bytes,
    optimizer_bytes,
    precision_for,
    precision_note,
    stage_mixed_precision,
    weights_bytes,
)
from llm_recipes.pipeline.estimates.shapes import ModelShape, model_shape, parameter_count, trainable_parameters
from llm_recipes.pipeline.estimates.stage_settings import DATA_STAGES, TRAINING_STAGES, checkpointing_on, stage_settings
from llm_recipes.pipeline.launch import (
    LaunchPlan,
    check_ppo_launch,
    resolve_launch,
    training_config_sharding,
)


@dataclass
class StageEstimate:
    parameters: int | None  # total parameters of the model the stage trains or serves (None if unknown)
    trainable_parameters: int | None  # LoRA / partial fine-tuning aware
    processes: int  # from the launch flags / accelerate config file (1 when none)
    strategy: str  # "single" | "ddp" | "fsdp" | "zero2" | "zero3" | "multi-node ddp" ...
    memory_per_device: int | None  # bytes, peak estimate per device
    breakdown: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Role:
    """One model the stage holds: trained or frozen, prepared by accelerate (sharded) or placed whole."""

    name: str
    config: PretrainedConfig
    head: str
    trained: bool
    load_bytes: int
    prepared: bool = True
    quantized: bool = False


def estimate_stage(
    stage: str,
    section: dict,
    *,
    model_config: PretrainedConfig | None,
    launch_args: list[str] | None = None,
    teacher_config: PretrainedConfig | None = None,
    reward_config: PretrainedConfig | None = None,
    value_config: PretrainedConfig | None = None,
) -> StageEstimate:
    """Peak memory per device for training stages; weights-only for evaluate/quantize/prune/export.

    `teacher_config` (distill), `reward_config` (PPO, GRPO, RLOO, evaluate) and `value_config` (PPO's
    value_model_path) are the stage's other models; `related_model_configs` resolves them."""
    notes: list[str] = []
    settings = stage_settings(stage, section)
    training = stage in TRAINING_STAGES or (stage == "prune" and bool(settings.get("recovery_dataset_path")))
    launch = resolve_launch(launch_args) if training else LaunchPlan()
    if stage == "ppo":
        check_ppo_launch(launch, settings)
    if not training and launch_args:
        notes.append("launch flags ignored: the stage runs in one process")
    notes.extend(launch.notes)
    if training:
        launch = training_config_sharding(launch, settings, notes)
    estimate = StageEstimate(None, None, launch.processes, launch.strategy, None, {}, notes)
    if stage in DATA_STAGES:
        notes.append("data stage: no model (CPU, disk and RAM bound)")
        return estimate
    if model_config is None:
        notes.append("model config not available offline: no estimate")
        return estimate

    head = _main_head(stage, settings)
    estimate.parameters = parameter_count(model_config, head=head)
    if not training:
        estimate.trainable_parameters = 0
        _weights_only(stage, settings, model_config, head, estimate, reward_config)
        return estimate

    roles = _roles(stage, settings, model_config, head, teacher_config, reward_config, value_config, notes)
    if roles is None:
        return estimate
    mixed = stage_mixed_precision(stage, settings, launch)
    if mixed != "no":
        notes.append(f"mixed precision: {mixed}")
    breakdown: dict[str, float] = {}
    unknown = False
    for role in roles:
        shape = model_shape(role.config, role.head)
        if not role.trained:
            divisor = launch.shard_group if (role.prepared and launch.shard_weights) else 1
            # DeepSpeed casts what it prepares to 16 bit; FSDP2 upcasts trainable parameters only
            load = 2 if (role.prepared and launch.zero_stage is not None and mixed != "no") else role.load_bytes
            weights = weights_bytes(shape, load, settings, role.quantized) / divisor
            if launch.offload_params and role.prepared:
                weights = 0
            breakdown[f"{role.name} model"] = breakdown.get(f"{role.name} model", 0) + weights
            continue
        trainable = trainable_parameters(role.config, role.head, settings)
        if role.name == "policy":
            estimate.trainable_parameters = trainable.count
        precision = precision_for(role.load_bytes, trainable.adapter, mixed, launch)
        if role.name == "policy":
            notes.append(precision_note(role.load_bytes, trainable.adapter, mixed, launch))
        frozen = shape.parameters - (0 if trainable.adapter else trainable.count)
        frozen_bytes = 2 if (launch.zero_stage is not None and mixed != "no") else role.load_bytes
        weights = trainable.count * precision.weight_bytes
        if frozen:
            weights += weights_bytes(shape, frozen_bytes, settings, role.quantized) * frozen / shape.parameters
        grads = trainable.count * precision.grad_bytes
        optim = "adamw_torch" if stage == "ppo" else settings.get("optim", "adamw_torch")  # PPO: torch AdamW
        optimizer = optimizer_bytes(optim, trainable, precision, settings, notes)
        if launch.shard_weights:
            weights /= launch.shard_group
        if launch.shard_gradients:
            grads /= launch.shard_group
        if optimizer is not None and launch.shard_optimizer:
            optimizer /= launch.shard_group
        if launch.offload_params:
            weights = grads = 0
        if launch.offload_optimizer and optimizer is not None:
            optimizer = 0
        breakdown["weights"] = breakdown.get("weights", 0) + weights
        breakdown["gradients"] = breakdown.get("gradients", 0) + grads
        if optimizer is None:
            unknown = True
        else:
            breakdown["optimizer states"] = breakdown.get("optimizer states", 0) + optimizer
        if precision.autocast_copy:
            breakdown["autocast weight copies"] = breakdown.get("autocast weight copies", 0) + 2 * trainable.count
        if launch.strategy.endswith("ddp") and launch.processes > 1:
            breakdown["ddp gradient buckets"] = breakdown.get("ddp gradient buckets", 0) + grads
    if launch.shard_weights:
        shapes = [model_shape(role.config, role.head) for role in roles if role.prepared]
        largest = max(shapes, key=lambda shape: shape.parameters)
        compute_bytes = 2 if mixed != "no" else 4
        if launch.gathers_whole_model:
            breakdown["gathered parameters"] = compute_bytes * largest.parameters
        elif stage == "ppo":  # generation keeps the policy's layers gathered from the first new token to the last
            breakdown["gathered parameters"] = compute_bytes * shapes[0].parameters
        else:
            breakdown["gathered parameters"] = compute_bytes * max(largest.embedding, 2 * largest.largest_block)

    activation = _stage_activations(stage, settings, roles, mixed, launch, notes)
    if activation is None:
        unknown = True
    else:
        breakdown.update(activation)
    estimate.breakdown = {key: int(value) for key, value in breakdown.items()}
    estimate.memory_per_device = None if unknown else sum(estimate.breakdown.values())
    return estimate


def _main_head(stage: str, settings: dict) -> str:
    if stage == "reward":
        return "sequence_classification"
    if stage == "pretrain" and settings.get("objective") == "mlm":
        return "masked_lm"
    return "causal_lm"


def _load_bytes(stage: str, settings: dict, config: PretrainedConfig, notes: list[str]) -> int:
    if stage == "pretrain":
        return dtype_bytes("auto", config, notes) if settings.get("model_name_or_path") else 4
    if stage == "distill":
        return 4  # the student trains in float32
    if stage == "prune":
        return dtype_bytes("auto", config, notes)
    return dtype_bytes(settings.get("dtype"), config, notes)


def _roles(stage, settings, config, head, teacher_config, reward_config, value_config, notes) -> list[_Role] | None:
    load = _load_bytes(stage, settings, config, notes)
    quantized = bool(settings.get("load_in_4bit") or settings.get("load_in_8bit"))
    roles = [_Role("policy", config, head, True, load, quantized=quantized)]
    peft = bool(settings.get("use_peft"))
    if stage in ("dpo", "kto") and not peft:
        roles.append(_Role("reference", config, "causal_lm", False, load, quantized=quantized))
        if settings.get("precompute_ref_log_probs"):
            notes.append("precompute_ref_log_probs: the reference still loads for the precomputation")
    if stage in ("grpo", "rloo"):
        if settings.get("beta") and not peft:
            roles.append(_Role("reference", config, "causal_lm", False, load, quantized=quantized))
        if settings.get("reward_model_path"):
            if reward_config is None:
                reward_config = config
                notes.append("reward model: its config was not given; assumed the policy's architecture")
            reward_bytes = dtype_bytes(None, reward_config, notes, "reward model")
            roles.append(_Role("reward", reward_config, "sequence_classification", False, reward_bytes, prepared=False))
            notes.append("reward model: whole on every device (a reward function, not prepared by accelerate)")
    if stage == "ppo":
        if settings.get("reward_model_path") and reward_config is None:
            reward_config = config
            notes.append("reward model: its config was not given; assumed the policy's architecture")
        source = value_config or reward_config
        value = source if source is not None else config
        value_role = _Role("value", value, "sequence_classification", True, load)
        roles.append(value_role)
        if not peft:
            roles.append(_Role("reference", config, "causal_lm", False, load))
        if reward_config is not None:
            roles.append(_Role("reward", reward_config, "sequence_classification", False, load, prepared=False))
        notes.append("PPO: policy, value and reference prepared (sharded by FSDP); reward model whole on each device")
    if stage == "distill":
        if teacher_config is None:
            notes.append("teacher config not available offline: no estimate")
            return None
        teacher_bytes = dtype_bytes(settings.get("teacher_dtype"), teacher_config, notes, "teacher")
        roles.append(_Role("teacher", teacher_config, "causal_lm", False, teacher_bytes))
    if peft and stage in ("dpo", "kto", "grpo", "rloo", "ppo"):
        notes.append("LoRA: the reference is the policy with its adapter disabled (no copy)")
    return roles


def _stage_activations(stage, settings, roles, mixed, launch, notes) -> dict[str, float] | None:
    policy = roles[0]
    dims = block_dimensions(policy.config)
    if dims is None:
        notes.append(f"activations: no formula for {policy.config.model_type} (transformer blocks only)")
        return None
    checkpointing = checkpointing_on(settings)
    eager = settings.get("attn_implementation") == "eager"
    notes.append(f"activations: gradient checkpointing {'on' if checkpointing else 'off'}")
    trainable_adapter = bool(settings.get("use_peft"))
    precision = precision_for(policy.load_bytes, trainable_adapter, mixed, launch)
    if trainable_adapter:  # the frozen base's dtype sets the compute precision, not the fp32 adapters
        precision = precision_for(policy.load_bytes, False, mixed, launch)
    batch = int(settings.get("per_device_train_batch_size") or 1)
    result: dict[str, float] = {}
    if stage == "pretrain":
        seq = int(settings.get("block_size") or 512)
        positions = getattr(policy.config, "max_position_embeddings", None)
        seq = min(seq, positions) if isinstance(positions, int) and positions > 0 else seq
    elif stage == "prune":
        seq = int(settings.get("recovery_block_size") or 256)
    elif stage in ("grpo", "rloo"):
        seq = int(settings.get("max_completion_length") or 256)
        notes.append("activations: completions only (TRL sets no prompt length bound); generation KV cache not counted")
    elif stage == "ppo":
        micro = max(int(settings["mini_batch_size"]) // int(settings.get("gradient_accumulation_steps") or 1), 1)
        prompt, response = int(settings["max_prompt_length"]), int(settings["response_length"])
        return _ppo_activations(settings, roles, dims, precision, micro, prompt, response, checkpointing, eager)
    else:
        seq = int(settings.get("max_length") or 1024)
        if stage in ("sft", "distill") and not settings.get("packing"):
            notes.append(f"activations: rows at max_length {seq} (the worst case; batches pad to their longest)")
    if stage in ("reward", "dpo"):
        batch *= 2  # chosen and rejected in one forward pass
    result["activations"] = micro_batch_activations(dims, precision, batch, seq, checkpointing, policy.head, eager)
    if stage == "distill":
        teacher = roles[1]
        teacher_dims = block_dimensions(teacher.config) or dims
        # the teacher's logits (its dtype) and the fp32 log-probabilities the KD loss keeps for the backward pass
        result["teacher logits"] = batch * seq * teacher_dims["V"] * (min(teacher.load_bytes, 4) + 8)
    return result


def _ppo_activations(settings, roles, dims, precision, micro, prompt, response, checkpointing, eager):
    """Training step: policy (logits over the whole sequence, fp32 for the response) and value model; rollout:
    the KV cache of generation and the scoring passes' logits. The peak is the larger phase."""
    seq = prompt + response
    policy_act = micro_batch_activations(
        dims, precision, micro, seq, checkpointing, "causal_lm", eager, logit_positions=response
    )
    policy_act += micro * (seq - response) * dims["V"] * (2 if precision.compute16 else 4)
    value = next(role for role in roles if role.name == "value")
    value_dims = block_dimensions(value.config) or dims
    value_act = micro_batch_activations(
        value_dims, precision, micro, seq, checkpointing, "sequence_classification", eager
    )
    forward_batch = int(settings.get("rollout_forward_batch_size") or 32)
    kv_cache = forward_batch * seq * dims["L"] * 2 * dims["h_kv"] * 2
    logit_bytes = 2 if precision.compute16 else 4
    scoring = forward_batch * (seq * dims["V"] * logit_bytes + response * dims["V"] * 4)
    training_step = policy_act + value_act
    rollout = max(kv_cache, scoring)
    if training_step >= rollout:
        return {"activations": training_step}
    return {"activations (rollout: KV cache / scoring logits)": rollout}


def _weights_only(stage, settings, config, head, estimate: StageEstimate, reward_config) -> None:
    notes = estimate.notes
    shape = model_shape(config, head)
    dtype = settings.get("dtype")
    if stage == "evaluate" and dtype is None:
        notes.append("evaluate: weights at their saved dtype (the default on a GPU)")
    if stage in ("quantize", "prune"):
        dtype = "auto"  # loaded as saved; quantize's `dtype` only applies to an adapter merge
    load = dtype_bytes(dtype, config, notes)
    breakdown: dict[str, float] = {"weights": shape.parameters * load}
    if stage == "quantize":
        breakdown["quantized copy"] = _quantized_bytes(settings, shape, load, notes)
        notes.append("quantize: the source and the quantized model are both held for the comparison report")
    if stage == "evaluate" and reward_config is not None:
        reward_shape = model_shape(reward_config, "sequence_classification")
        breakdown["reward model"] = reward_shape.parameters * dtype_bytes(dtype, reward_config, notes, "reward model")
    elif stage == "evaluate" and settings.get("reward_model"):
        notes.append("reward model config not available offline: not counted")
    notes.append("weights only: activations of generation/perplexity batches not counted")
    estimate.breakdown = {key: int(value) for key, value in breakdown.items()}
    estimate.memory_per_device = sum(estimate.breakdown.values())


def _quantized_bytes(settings: dict, shape: ModelShape, load: int, notes: list[str]) -> float:
    method = settings.get("method", "bnb_int8")
    rest = (shape.parameters - shape.quantizable) * load
    if method == "bnb_4bit":
        per_weight = FOUR_BIT_NESTED_BYTES if settings.get("bnb_4bit_use_double_quant") else FOUR_BIT_BYTES
    elif method == "gptq":
        group = settings.get("gptq_group_size") or 128
        per_weight = settings.get("gptq_bits", 4) / 8 + (4 / group if group > 0 else 0)
    else:
        per_weight = 1.0
    return shape.quantizable * per_weight + rest
