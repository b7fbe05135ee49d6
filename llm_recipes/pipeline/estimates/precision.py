"""Bytes per number: weights at their load dtype (and 4-/8-bit bitsandbytes layers), gradients, optimizer states,
and how mixed precision, DeepSpeed and FSDP change each (see the MEMORY MODEL in memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig

from llm_recipes.pipeline.estimates.shapes import ModelShape, Trainable
from llm_recipes.pipeline.launch import LaunchPlan

DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}
# 4-bit weights: half a byte, plus one fp32 absmax per block of 64 (bitsandbytes' blocksize); nested quantization
# stores that absmax in 8 bits with one fp32 constant per 256 blocks
FOUR_BIT_BYTES = 0.5 + 4 / 64
FOUR_BIT_NESTED_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)

# Optimizer states per trainable parameter: (number of states, bytes per state or None = the parameter's dtype)
OPTIMIZER_STATES: dict[str, tuple[int, int | None]] = {
    "adamw_torch": (2, None),
    "adamw_torch_fused": (2, None),
    "adamw_torch_xla": (2, None),
    "adamw_torch_npu_fused": (2, None),
    "adamw_apex_fused": (2, None),
    "adamw_hf": (2, None),
    "adamw_anyprecision": (2, None),
    "schedule_free_adamw": (2, None),
    "adamw_bnb_8bit": (2, 1),
    "adamw_8bit": (2, 1),
    "paged_adamw_8bit": (2, 1),
    "adamw_torch_8bit": (2, 1),
    "paged_adamw_32bit": (2, 4),
    "paged_adamw": (2, None),
    "lion_32bit": (1, 4),
    "paged_lion_32bit": (1, 4),
    "lion_8bit": (1, 1),
    "paged_lion_8bit": (1, 1),
    "rmsprop": (1, None),
    "rmsprop_bnb": (1, None),
    "rmsprop_bnb_8bit": (1, 1),
    "rmsprop_bnb_32bit": (1, 4),
    "adagrad": (1, None),
}


@dataclass
class Precision:
    """How a trained model's numbers are stored and computed under this stage's settings and launch."""

    weight_bytes: float  # trainable weights as stored
    grad_bytes: float
    state_bytes: float | None  # optimizer state element (None: the parameter's dtype)
    master_bytes: float  # DeepSpeed's fp32 master copy
    autocast_copy: bool  # fp32 trainable weights under 16-bit autocast
    compute16: bool  # activations in 16 bit
    residual_bytes: int  # the residual stream between blocks


def dtype_bytes(name: Any, config: PretrainedConfig | None, notes: list[str], what: str = "weights") -> int:
    """Bytes per weight of a stage's `dtype` field; `auto` (or none) reads the dtype saved in the config."""
    if name in (None, "auto"):
        saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        saved = str(saved).removeprefix("torch.") if saved is not None else None
        if saved in DTYPE_BYTES:
            return DTYPE_BYTES[saved]
        notes.append(f"{what}: dtype auto and none saved in the config: assumed float32")
        return 4
    return DTYPE_BYTES.get(str(name).removeprefix("torch."), 4)


def precision_for(load_bytes: int, adapter: bool, mixed: str, launch: LaunchPlan) -> Precision:
    """A trained model loaded at `load_bytes` per weight (`adapter`: fp32 LoRA adapters on it), under mixed precision
    `mixed` and this launch."""
    autocast = mixed in ("bf16", "fp16")
    trained_bytes = 4 if adapter else load_bytes
    if launch.zero_stage is not None:
        sixteen = 2 if autocast else trained_bytes
        return Precision(sixteen, sixteen, 4, 4 if sixteen < 4 else 0, False, sixteen == 2, sixteen)
    if launch.fsdp and autocast:
        return Precision(4, 4, 4, 0, False, True, 2)
    compute16 = autocast or trained_bytes == 2
    return Precision(trained_bytes, trained_bytes, None, 0, autocast and trained_bytes == 4, compute16, trained_bytes)


def optimizer_bytes(
    optim: str, trainable: Trainable, precision: Precision, settings: dict, notes: list[str]
) -> float | None:
    """Optimizer state bytes for the trainable parameters (before sharding); None when the optimizer is unknown."""
    state_bytes = precision.state_bytes if precision.state_bytes is not None else precision.weight_bytes
    optim = str(getattr(optim, "value", optim))
    if optim == "adafactor" or optim.startswith("adafactor"):
        factored = sum((rows + cols) for rows, cols in trainable.matrices)
        return 4 * (factored + trainable.vectors) + precision.master_bytes * trainable.count
    if optim == "sgd":
        momentum = "momentum" in str(settings.get("optim_args") or "")
        return (state_bytes if momentum else 0) * trainable.count + precision.master_bytes * trainable.count
    if optim not in OPTIMIZER_STATES:
        notes.append(f"optimizer {optim}: state size unknown")
        return None
    count, size = OPTIMIZER_STATES[optim]
    if size == 1 and precision.state_bytes == 4:
        notes.append(f"{optim} under DeepSpeed: DeepSpeed's own fp32 optimizer states counted")
        size = 4
    return (count * (size or state_bytes) + precision.master_bytes) * trainable.count


def weights_bytes(shape: ModelShape, load_bytes: float, settings: dict[str, Any], quantized: bool) -> float:
    """Stored weights, with bitsandbytes' 4-/8-bit Linear layers when the model is loaded quantized."""
    if quantized and settings.get("load_in_4bit"):
        per_weight = FOUR_BIT_NESTED_BYTES if settings.get("use_bnb_nested_quant") else FOUR_BIT_BYTES
        return shape.quantizable * per_weight + (shape.parameters - shape.quantizable) * load_bytes
    if quantized and settings.get("load_in_8bit"):
        return shape.quantizable * 1 + (shape.parameters - shape.quantizable) * load_bytes
    return shape.parameters * load_bytes


def stage_mixed_precision(stage: str, settings: dict, launch: LaunchPlan) -> str:
    """The training config's bf16/fp16 win; without them accelerate's launch setting applies (its environment
    variable reaches the Trainer's Accelerator)."""
    if settings.get("bf16"):
        return "bf16"
    if settings.get("fp16"):
        return "fp16"
    if stage == "ppo":  # our PPO trainer's Accelerator is built from its bf16 field alone
        return "no"
    return launch.mixed_precision if launch.mixed_precision in ("bf16", "fp16") else "no"


def precision_note(load_bytes: int, adapter: bool, mixed: str, launch: LaunchPlan) -> str:
    """The line the plan prints on how the trained weights are held."""
    loaded = "fp32" if load_bytes == 4 else "16-bit"
    if launch.zero_stage is not None:
        if mixed != "no":
            return f"weights: DeepSpeed casts to {mixed} and keeps an fp32 master copy in the optimizer"
        return f"weights: {loaded} under DeepSpeed, no mixed precision"
    what = "LoRA adapters fp32 on a " + loaded + " base" if adapter else f"{loaded} weights"
    if launch.fsdp and mixed != "no":
        return f"weights: {what}; FSDP keeps trainable parameters in fp32, computes in {mixed}"
    if mixed != "no" and (load_bytes == 4 or adapter):
        return f"weights: {what} under {mixed} autocast"
    if load_bytes == 2 and not adapter:
        return "weights: pure 16-bit training (AdamW states in 16 bit too, no fp32 master copy)"
    return f"weights: {what}"
