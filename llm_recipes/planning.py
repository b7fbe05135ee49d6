"""Dry-run estimates for a stage: parameter counts and peak memory per device, from the config alone.

`llm-recipes pipeline --dry_run` prints, per stage, what it will train or load and roughly how much accelerator
memory each process needs. Nothing here loads weights: parameters are counted on a model built on the meta device
(exact, tied weights once), configs come from local folders, a `model_configs` mapping or the local HF cache (never
the network), and the launch settings from the `accelerate launch` flags and the `--config_file` YAML they name.
Accelerate's own `estimate-memory` command covers inference weights only, and DeepSpeed's estimators cover the model
states only; a stage needs both plus activations, frozen companion models (reference, reward, teacher) and the
way each of our trainers places them, hence this module.

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

Use: `model_config_for` (the architecture a stage trains) and `related_model_configs` (its teacher / reward / value
model), both taking `earlier_outputs` (output folder -> architecture of the stages before it), then
`estimate_stage`; `as_saved` is what a stage hands on. The pipeline's dry run (llm_recipes.pipeline.dry_run) walks a
plan that way.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from llm_recipes.errors import UserError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

TRAINING_STAGES = ("pretrain", "sft", "reward", "ppo", "grpo", "rloo", "dpo", "distill")
WEIGHTS_ONLY_STAGES = ("evaluate", "quantize", "prune", "export")
DATA_STAGES = ("clean-corpus", "train-tokenizer")
RL_STAGES = ("ppo", "grpo", "rloo", "dpo")
HEADS = ("causal_lm", "masked_lm", "sequence_classification")

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
class StageEstimate:
    parameters: int | None  # total parameters of the model the stage trains or serves (None if unknown)
    trainable_parameters: int | None  # LoRA / partial fine-tuning aware
    processes: int  # from the launch flags / accelerate config file (1 when none)
    strategy: str  # "single" | "ddp" | "fsdp" | "zero2" | "zero3" | "multi-node ddp" ...
    memory_per_device: int | None  # bytes, peak estimate per device
    breakdown: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------
# Launch settings


@dataclass
class LaunchPlan:
    processes: int = 1
    machines: int = 1
    strategy: str = "single"
    mixed_precision: str = "no"
    zero_stage: int | None = None
    shard_weights: bool = False
    shard_gradients: bool = False
    shard_optimizer: bool = False
    shard_group: int = 1  # processes a shard is spread over
    gathers_whole_model: bool = False  # FSDP SHARD_GRAD_OP: parameters stay gathered from forward to backward
    fsdp: bool = False
    fsdp_version: int | None = None
    offload_optimizer: bool = False
    offload_params: bool = False
    cpu: bool = False
    notes: list[str] = field(default_factory=list)


def launch_plan(launch_args: list[str] | None) -> tuple[int, str, str]:
    """(processes, strategy, mixed_precision) from accelerate flags, reading --config_file YAMLs
    (distributed_type, num_processes, num_machines, deepspeed zero_stage, fsdp sharding strategy)."""
    plan = resolve_launch(launch_args)
    return plan.processes, plan.strategy, plan.mixed_precision


def _flag_values(launch_args: Sequence[str]) -> dict[str, Any]:
    """`--flag value`, `--flag=value` and bare switches -> {flag_name: value or True}."""
    values: dict[str, Any] = {}
    index = 0
    while index < len(launch_args):
        token = str(launch_args[index])
        if token.startswith("--"):
            name, has_value, value = token[2:].partition("=")
            name = name.replace("-", "_")
            following = str(launch_args[index + 1]) if index + 1 < len(launch_args) else None
            if has_value:
                values[name] = value
            elif following is not None and not following.startswith("--"):
                values[name] = following
                index += 1
            else:
                values[name] = True
        index += 1
    return values


def _read_yaml_or_json(path: str, what: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        content = yaml.safe_load(file.read_text(encoding="utf-8"))  # JSON is YAML too
    except yaml.YAMLError:
        raise UserError(f"{what} {path} is not valid YAML/JSON") from None
    if not isinstance(content, dict):
        raise UserError(f"{what} {path} must be a mapping of settings")
    return content


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1", "yes")


def resolve_launch(launch_args: list[str] | None) -> LaunchPlan:
    """Everything `launch_plan` reads, with what sharding it implies and notes on what it assumed."""
    flags = _flag_values(list(launch_args or []))
    file_config: dict[str, Any] = {}
    config_file = flags.get("config_file")
    if isinstance(config_file, str):
        file_config = _read_yaml_or_json(config_file, "accelerate config file")
    fsdp_config = dict(file_config.get("fsdp_config") or {})
    deepspeed_config = dict(file_config.get("deepspeed_config") or {})

    def setting(name: str, default: Any = None) -> Any:
        return flags.get(name, file_config.get(name, default))

    plan = LaunchPlan()
    distributed = str(file_config.get("distributed_type", "NO")).upper()
    if flags.get("use_fsdp"):
        distributed = "FSDP"
    elif flags.get("use_deepspeed"):
        distributed = "DEEPSPEED"
    elif flags.get("multi_gpu"):
        distributed = "MULTI_GPU"
    plan.cpu = _truthy(setting("use_cpu", False)) or bool(flags.get("cpu")) or distributed == "MULTI_CPU"
    plan.machines = int(setting("num_machines", 1) or 1)
    processes = setting("num_processes")
    if processes is None:
        if distributed != "NO":
            plan.notes.append("num_processes not given: accelerate would use every GPU it finds; estimated for 1")
        processes = 1
    plan.processes = max(int(processes), 1)
    mixed = setting("mixed_precision", "no")
    plan.mixed_precision = "no" if mixed in (None, False) else str(mixed)

    if distributed == "FSDP":
        _fsdp_sharding(plan, {**fsdp_config, **{k: v for k, v in flags.items() if k.startswith("fsdp_")}})
    elif distributed == "DEEPSPEED":
        _deepspeed_sharding(plan, {**deepspeed_config, **flags})
    elif plan.processes > 1:
        plan.strategy = "ddp"
    if plan.cpu:
        plan.strategy = "cpu" if plan.processes == 1 else "cpu ddp"
        plan.notes.append("CPU run: memory is host RAM per process")
    if plan.machines > 1:
        plan.strategy = f"multi-node {plan.strategy}"
    return plan


def _fsdp_sharding(plan: LaunchPlan, fsdp: dict[str, Any]) -> None:
    """FSDP2 spells the strategy `fsdp_reshard_after_forward` (a bool, or FSDP1's names); FSDP1
    `fsdp_sharding_strategy`."""
    plan.fsdp = True
    plan.fsdp_version = int(fsdp.get("fsdp_version") or 1)
    raw = fsdp.get("fsdp_reshard_after_forward", fsdp.get("fsdp_sharding_strategy", True))
    names = {"1": "FULL_SHARD", "2": "SHARD_GRAD_OP", "3": "NO_SHARD", "4": "HYBRID_SHARD", "5": "HYBRID_SHARD_ZERO2"}
    strategy = str(raw).upper()
    strategy = names.get(strategy, strategy)
    if strategy in ("TRUE", "FULL_SHARD"):
        plan.strategy, plan.shard_weights = "fsdp", True
    elif strategy in ("FALSE", "SHARD_GRAD_OP"):
        plan.strategy, plan.shard_weights, plan.gathers_whole_model = "fsdp shard-grad-op", True, True
    elif strategy == "NO_SHARD":
        plan.strategy = "fsdp no-shard"
    elif strategy in ("HYBRID_SHARD", "HYBRID_SHARD_ZERO2"):
        plan.strategy = "fsdp hybrid" if strategy == "HYBRID_SHARD" else "fsdp hybrid-grad-op"
        plan.shard_weights, plan.gathers_whole_model = True, strategy == "HYBRID_SHARD_ZERO2"
    else:
        raise UserError(f"fsdp sharding strategy: unknown '{raw}' (FULL_SHARD, SHARD_GRAD_OP, HYBRID_SHARD, NO_SHARD)")
    sharded = strategy != "NO_SHARD"
    plan.shard_gradients = plan.shard_optimizer = sharded
    plan.shard_group = plan.processes // plan.machines if "HYBRID" in strategy else plan.processes
    if not sharded:
        plan.shard_group = 1
    plan.offload_params = _truthy(fsdp.get("fsdp_offload_params", False))
    if plan.offload_params:
        plan.offload_optimizer = True
        plan.notes.append("FSDP parameter offload: parameters, gradients and optimizer states live in CPU RAM")


def _deepspeed_sharding(plan: LaunchPlan, deepspeed: dict[str, Any]) -> None:
    stage = deepspeed.get("zero_stage")
    config_file = deepspeed.get("deepspeed_config_file")
    if isinstance(config_file, str) and config_file:
        ds_json = _read_yaml_or_json(config_file, "DeepSpeed config file")
        zero = ds_json.get("zero_optimization") or {}
        stage = zero.get("stage", stage)
        offload_optimizer = (zero.get("offload_optimizer") or {}).get("device")
        offload_param = (zero.get("offload_param") or {}).get("device")
    else:
        offload_optimizer = deepspeed.get("offload_optimizer_device")
        offload_param = deepspeed.get("offload_param_device")
    if stage in (None, "auto"):
        stage = 2  # accelerate's default when the file names none
        plan.notes.append("DeepSpeed zero_stage not given: assumed 2 (accelerate's default)")
    plan.zero_stage = int(stage)
    plan.strategy = f"zero{plan.zero_stage}"
    plan.shard_optimizer = plan.zero_stage >= 1
    plan.shard_gradients = plan.zero_stage >= 2
    plan.shard_weights = plan.zero_stage >= 3
    plan.shard_group = plan.processes
    plan.offload_optimizer = str(offload_optimizer or "none").lower() not in ("none", "")
    plan.offload_params = plan.zero_stage >= 3 and str(offload_param or "none").lower() not in ("none", "")
    if plan.offload_optimizer:
        plan.notes.append(f"DeepSpeed optimizer offload to {offload_optimizer}: optimizer states not on the device")
    if plan.offload_params:
        plan.notes.append(f"DeepSpeed parameter offload to {offload_param}: weights not on the device")


def _training_config_sharding(plan: LaunchPlan, settings: dict[str, Any], notes: list[str]) -> LaunchPlan:
    """TrainingArguments can turn on DeepSpeed (`deepspeed: ds.json`) or FSDP (`fsdp: full_shard`) themselves."""
    deepspeed, fsdp = settings.get("deepspeed"), settings.get("fsdp")
    if not deepspeed and not fsdp:
        return plan
    plan = dataclasses.replace(plan, notes=list(plan.notes))
    if deepspeed:
        if not isinstance(deepspeed, str):
            notes.append("deepspeed given inline in the training config: its ZeRO stage was not read")
            return plan
        _deepspeed_sharding(plan, {"deepspeed_config_file": deepspeed})
    else:
        text = " ".join(fsdp) if isinstance(fsdp, list) else str(fsdp)
        strategy = "SHARD_GRAD_OP" if "shard_grad_op" in text else "HYBRID_SHARD" if "hybrid" in text else "FULL_SHARD"
        _fsdp_sharding(plan, {"fsdp_reshard_after_forward": strategy})
    notes.append(f"sharding from the training config's {'deepspeed' if deepspeed else 'fsdp'} field")
    if plan.machines > 1:
        plan.strategy = f"multi-node {plan.strategy}"
    return plan


def check_ppo_launch(launch: LaunchPlan, settings: dict[str, Any]) -> None:
    """Our PPO trainer runs on one device, under DDP or under FSDP2: anything else is refused here (the dry run), as
    the recipe refuses it when launched (llm_recipes.trainers.ppo_launch)."""
    from llm_recipes.trainers.ppo_launch import unsupported_launch

    quantized = bool(settings.get("load_in_4bit") or settings.get("load_in_8bit"))
    reason = unsupported_launch(launch.zero_stage is not None, launch.fsdp_version if launch.fsdp else None, quantized)
    if reason:
        raise UserError(reason)


# --------------------------------------------------------------------------------------------------------------
# Model configs


def model_config_for(
    stage: str,
    section: dict,
    *,
    model_configs: dict[str, str] | None = None,
    vocab_size: int | None = None,
    earlier_outputs: dict[str, PretrainedConfig] | None = None,
) -> PretrainedConfig | None:
    """The architecture the stage trains/loads: pretrain from preset/config_name/model_name_or_path (vocab_size
    overrides when the tokenizer will be trained by an earlier stage), others from their model field
    (model_name_or_path; distill: the student from student preset/student_name_or_path, teacher too).
    A local folder -> AutoConfig from it; a Hub id -> model_configs mapping, else the local HF cache only
    (local_files_only=True; never the network); None when not resolvable. `earlier_outputs` maps the output
    folders of earlier pipeline stages (any spelling of the path) to the architecture they will hold."""
    known = {_normalized(path): config for path, config in (earlier_outputs or {}).items()}
    config, _ = _stage_model_config(stage, section, model_configs or {}, vocab_size, known)
    return config


def related_model_configs(
    stage: str,
    section: dict,
    *,
    model_configs: dict[str, str] | None = None,
    earlier_outputs: dict[str, PretrainedConfig] | None = None,
) -> dict[str, PretrainedConfig | None]:
    """The stage's other models, as `estimate_stage` keywords: distill's teacher; the reward model of PPO, GRPO,
    RLOO and evaluate, and PPO's value_model_path (the value model otherwise starts from the reward model)."""
    known = {_normalized(path): config for path, config in (earlier_outputs or {}).items()}
    return _related_configs(stage, section, model_configs or {}, known)


def _related_configs(
    stage: str, section: dict, model_configs: dict[str, str], known: dict[str, PretrainedConfig]
) -> dict[str, PretrainedConfig | None]:
    def resolve(name: str | None) -> PretrainedConfig | None:
        return _resolve_config(name, model_configs, known)[0] if name else None

    if stage == "distill":
        return {"teacher_config": resolve(section.get("teacher_name_or_path"))}
    if stage == "ppo":
        related = {"reward_config": resolve(section.get("reward_model_path"))}
        if section.get("value_model_path"):
            related["value_config"] = resolve(section["value_model_path"])
        return related
    if stage in ("grpo", "rloo"):
        return {"reward_config": resolve(section.get("reward_model_path"))}
    if stage == "evaluate":
        return {"reward_config": resolve(section.get("reward_model"))}
    return {}


def _normalized(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _resolve_config(
    name: str | None, model_configs: dict[str, str], known: dict[str, PretrainedConfig]
) -> tuple[PretrainedConfig | None, str]:
    """(config, where it came from); (None, why) when it cannot be had offline."""
    from transformers import AutoConfig

    import llm_recipes.models  # noqa: F401  (registers our recurrent baseline with AutoConfig)
    from llm_recipes.configs import looks_local

    if not name:
        return None, "no model named"
    if _normalized(name) in known:
        return known[_normalized(name)], f"{name} (written by an earlier stage)"
    folder = model_configs.get(name)
    if folder is None:
        folder = next(
            (v for k, v in model_configs.items() if looks_local(k) and _normalized(k) == _normalized(name)), None
        )
    if folder is not None:
        config = _config_from_folder(folder)
        if config is None:
            raise UserError(f"model_configs: {folder} (for {name}) has no readable config.json")
        return config, f"{name} via model_configs ({folder})"
    if os.path.isdir(os.path.expanduser(name)):
        config = _config_from_folder(name)
        return config, name if config is not None else f"{name} has no config.json"
    if looks_local(name):
        return None, f"{name} does not exist yet"
    # a Hub id: a file lookup in the local cache (even `local_files_only` downloads can reach the network for
    # their request headers)
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id
        cached = None
    if isinstance(cached, str):
        return AutoConfig.from_pretrained(os.path.dirname(cached)), f"{name} (local HF cache)"
    return None, f"{name}: not in model_configs nor the local HF cache"


def _config_from_folder(folder: str) -> PretrainedConfig | None:
    from transformers import AutoConfig

    path = Path(folder).expanduser()
    if (path / "config.json").is_file():
        try:
            return AutoConfig.from_pretrained(str(path))
        except (OSError, ValueError):
            return None
    adapter = path / "adapter_config.json"
    if adapter.is_file():  # a PEFT adapter: the architecture is its base model's
        base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base and os.path.isdir(os.path.expanduser(base)):
            return _config_from_folder(base)
    return None


def _tokenizer_length(path: str | None) -> int | None:
    """len(tokenizer) of a local tokenizer folder, without the network."""
    if not path or not os.path.isdir(os.path.expanduser(path)):
        return None
    from transformers import AutoTokenizer

    try:
        return len(AutoTokenizer.from_pretrained(os.path.expanduser(path), local_files_only=True))
    except (OSError, ValueError):
        return None


def _overrides(value: Any) -> dict[str, Any]:
    from llm_recipes.pretraining import parse_overrides

    return parse_overrides(value)


def _with_fields(config: PretrainedConfig, fields: dict[str, Any]) -> PretrainedConfig:
    config = config.__class__.from_dict(config.to_dict())
    for key, value in fields.items():
        setattr(config, key, value)
    return config


def _stage_model_config(
    stage: str,
    section: dict,
    model_configs: dict[str, str],
    vocab_size: int | None,
    known: dict[str, PretrainedConfig],
) -> tuple[PretrainedConfig | None, list[str]]:
    notes: list[str] = []
    if stage in DATA_STAGES:
        return None, notes
    if stage == "pretrain":
        return _pretrain_config(section, model_configs, vocab_size, known)
    if stage == "distill":
        return _student_config(section, model_configs, known)
    if stage == "evaluate":
        return _largest_evaluated(section, model_configs, known)
    config, source = _resolve_config(section.get("model_name_or_path"), model_configs, known)
    if config is None:
        notes.append(f"model config not available offline: {source}")
    return config, notes


def _pretrain_config(section, model_configs, vocab_size, known) -> tuple[PretrainedConfig | None, list[str]]:
    from transformers import BertConfig, LlamaConfig

    from llm_recipes.modeling import DECODER_PRESETS, ENCODER_PRESETS
    from llm_recipes.models import RECURRENT_PRESETS, RecurrentLMConfig

    notes: list[str] = []
    vocab = vocab_size or _tokenizer_length(section.get("tokenizer_name_or_path"))
    overrides = _overrides(section.get("config_overrides"))
    preset, config_name, model = section.get("preset"), section.get("config_name"), section.get("model_name_or_path")
    if model:
        config, source = _resolve_config(model, model_configs, known)
        if config is None:
            return None, [f"model config not available offline: {source}"]
        fields = dict(overrides)
        if vocab and vocab > config.vocab_size:  # the embeddings grow to a bigger tokenizer (never shrink)
            fields["vocab_size"] = vocab
        return _with_fields(config, fields), notes
    if vocab is None:
        notes.append("vocabulary size unknown (tokenizer not trained yet and no vocab_size given)")
    if config_name:
        config, source = _resolve_config(config_name, model_configs, known)
        if config is None:
            return None, [f"model config not available offline: {source}"]
        if vocab is None:
            notes.append(f"vocabulary taken from {config_name}: {config.vocab_size}")
        return _with_fields(config, {**({"vocab_size": vocab} if vocab else {}), **overrides}), notes
    if vocab is None:
        return None, notes
    fields = {"vocab_size": vocab, **overrides}
    if preset in DECODER_PRESETS:
        return LlamaConfig(tie_word_embeddings=True, **{**DECODER_PRESETS[preset], **fields}), notes
    if preset in ENCODER_PRESETS:
        return BertConfig(**{**ENCODER_PRESETS[preset], **fields}), notes
    if preset in RECURRENT_PRESETS:
        return RecurrentLMConfig(**{**RECURRENT_PRESETS[preset], **fields}), notes
    return None, notes + [f"unknown preset {preset!r}" if preset else "no model source (preset, config_name, model)"]


def _student_config(section, model_configs, known) -> tuple[PretrainedConfig | None, list[str]]:
    from transformers import LlamaConfig

    from llm_recipes.distillation import every_other_layer, student_config_from_teacher
    from llm_recipes.modeling import DECODER_PRESETS

    if section.get("student_name_or_path"):
        config, source = _resolve_config(section["student_name_or_path"], model_configs, known)
        return config, [] if config is not None else [f"student config not available offline: {source}"]
    teacher, source = _resolve_config(section.get("teacher_name_or_path"), model_configs, known)
    if teacher is None:
        return None, [f"teacher config not available offline (the student is built from it): {source}"]
    preset = section.get("student_preset")
    if preset:
        if preset not in DECODER_PRESETS:
            return None, [f"unknown student_preset {preset!r}"]
        fields = {
            "vocab_size": teacher.get_text_config().vocab_size,
            **_overrides(section.get("student_config_overrides")),
        }
        return LlamaConfig(tie_word_embeddings=True, **{**DECODER_PRESETS[preset], **fields}), []
    layers = section.get("student_layers") or every_other_layer(teacher.num_hidden_layers)
    return student_config_from_teacher(teacher, layers), []


def _largest_evaluated(section, model_configs, known) -> tuple[PretrainedConfig | None, list[str]]:
    """Evaluate loads its models one at a time: the largest sets the peak."""
    names = list(section.get("models") or []) or [section.get("model_name_or_path")]
    best, best_count, notes = None, -1, []
    for name in names:
        config, source = _resolve_config(name, model_configs, known)
        if config is None:
            notes.append(f"model config not available offline: {source}")
            continue
        count = parameter_count(config)
        if count > best_count:
            best, best_count = config, count
    return best, notes


# --------------------------------------------------------------------------------------------------------------
# Parameter counts (on the meta device: exact, no memory)


def parameter_count(config: PretrainedConfig, *, head: str = "causal_lm") -> int:
    """Exact count by instantiating on the meta device (no memory): head causal_lm | masked_lm |
    sequence_classification."""
    return _shape(_config_key(config), head).parameters


def _config_key(config: PretrainedConfig) -> str:
    return json.dumps({"__class__": type(config).__name__, **config.to_dict()}, sort_keys=True, default=str)


def _config_from_key(key: str) -> PretrainedConfig:
    from transformers import AutoConfig

    import llm_recipes.models  # noqa: F401

    fields = json.loads(key)
    fields.pop("__class__")
    return AutoConfig.for_model(**fields)


def _meta_model(config: PretrainedConfig, head: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification

    import llm_recipes.models  # noqa: F401  (our recurrent baseline registers with the Auto classes)

    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    auto_class = {
        "causal_lm": AutoModelForCausalLM,
        "masked_lm": AutoModelForMaskedLM,
        "sequence_classification": AutoModelForSequenceClassification,
    }[head]
    if head == "sequence_classification":
        config = _with_fields(config, {"num_labels": 1})
    with torch.device("meta"):
        return auto_class.from_config(config)


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need from a model, read once from its meta-device instance."""

    parameters: int
    embedding: int  # input embeddings
    largest_block: int  # one transformer block (the unit ZeRO-3/FSDP gathers)
    quantizable: int  # Linear weights bitsandbytes would quantize (all but the output head)
    matrices: tuple[tuple[int, int], ...]  # 2-D parameter shapes (Adafactor's factored moments)
    vectors: int  # parameters of 1-D (or 0-D) tensors


@functools.lru_cache(maxsize=64)
def _shape(config_key: str, head: str) -> ModelShape:
    from torch import nn

    from llm_recipes.modeling import transformer_blocks

    model = _meta_model(_config_from_key(config_key), head)
    parameters = sum(p.numel() for p in model.parameters())
    embeddings = model.get_input_embeddings()
    embedding = embeddings.weight.numel() if embeddings is not None else 0
    try:
        largest_block = max(sum(p.numel() for p in block.parameters()) for block in transformer_blocks(model))
    except UserError:
        largest_block = parameters
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    heads = {id(output)} if output is not None else set()
    score = getattr(model, "score", None) or getattr(model, "classifier", None)
    if score is not None:
        heads.add(id(score))
    quantizable = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in heads)
    matrices = tuple(tuple(p.shape) for p in model.parameters() if p.dim() == 2)
    vectors = sum(p.numel() for p in model.parameters() if p.dim() != 2)
    return ModelShape(parameters, embedding, largest_block, quantizable, matrices, vectors)


@dataclass(frozen=True)
class Trainable:
    count: int
    adapter: bool  # new (LoRA/DoRA) parameters, fp32, on top of a frozen base
    matrices: tuple[tuple[int, int], ...]
    vectors: int


def _trainable(config: PretrainedConfig, head: str, settings: dict[str, Any]) -> Trainable:
    shape = _shape(_config_key(config), head)
    if settings.get("use_peft"):
        return _lora_trainable(_config_key(config), head, _peft_key(settings, head))
    top, embeddings = settings.get("trainable_top_layers"), settings.get("trainable_embeddings")
    if top is not None or embeddings:
        return _partial_trainable(_config_key(config), head, top, bool(embeddings))
    return Trainable(shape.parameters, False, shape.matrices, shape.vectors)


def _peft_key(settings: dict[str, Any], head: str) -> str:
    from trl import ModelConfig

    names = {f.name for f in dataclasses.fields(ModelConfig)}
    fields = {k: v for k, v in settings.items() if k in names and k != "model_name_or_path"}
    if head == "sequence_classification":
        fields["lora_task_type"] = "SEQ_CLS"
    return json.dumps(fields, sort_keys=True, default=str)


@functools.lru_cache(maxsize=32)
def _lora_trainable(config_key: str, head: str, peft_key: str) -> Trainable:
    """The exact adapter size: TRL's own LoraConfig for these fields, applied by PEFT to a meta-device model."""
    import torch
    from peft import get_peft_model
    from trl import ModelConfig, get_peft_config

    fields = json.loads(peft_key)
    fields.update(use_peft=True, load_in_4bit=False, load_in_8bit=False)  # quantization leaves the adapter alone
    peft_config = get_peft_config(ModelConfig(**fields))
    model = _meta_model(_config_from_key(config_key), head)
    with torch.device("meta"):
        model = get_peft_model(model, peft_config)
    trained = [p for p in model.parameters() if p.requires_grad]
    return Trainable(
        sum(p.numel() for p in trained),
        True,
        tuple(tuple(p.shape) for p in trained if p.dim() == 2),
        sum(p.numel() for p in trained if p.dim() != 2),
    )


@functools.lru_cache(maxsize=32)
def _partial_trainable(config_key: str, head: str, top_layers: int | None, embeddings: bool) -> Trainable:
    from llm_recipes.modeling import freeze_for_partial_finetuning

    model = _meta_model(_config_from_key(config_key), head)
    freeze_for_partial_finetuning(model, top_layers, embeddings)
    trained = [p for p in model.parameters() if p.requires_grad]
    return Trainable(
        sum(p.numel() for p in trained),
        False,
        tuple(tuple(p.shape) for p in trained if p.dim() == 2),
        sum(p.numel() for p in trained if p.dim() != 2),
    )


# --------------------------------------------------------------------------------------------------------------
# Stage settings: the section over the stage's dataclass defaults (read, not parsed: the recipes check values)

_STAGE_TYPES: dict[str, tuple[str, ...]] = {
    "pretrain": ("llm_recipes.configs:PretrainScriptArguments", "transformers:TrainingArguments"),
    "sft": ("llm_recipes.configs:SFTScriptArguments", "trl:SFTConfig", "trl:ModelConfig"),
    "reward": ("llm_recipes.configs:RewardScriptArguments", "trl:RewardConfig", "trl:ModelConfig"),
    "dpo": ("llm_recipes.configs:DPOScriptArguments", "trl:DPOConfig", "trl:ModelConfig"),
    "grpo": ("llm_recipes.configs:RLScriptArguments", "trl:GRPOConfig", "trl:ModelConfig"),
    "rloo": ("llm_recipes.configs:RLScriptArguments", "trl:RLOOConfig", "trl:ModelConfig"),
    "ppo": ("llm_recipes.configs:PPOScriptArguments", "llm_recipes.configs:PPOConfig", "trl:ModelConfig"),
    "distill": ("llm_recipes.configs:DistillArguments", "transformers:TrainingArguments"),
    "prune": ("llm_recipes.configs:PruneArguments", "transformers:TrainingArguments"),
    "quantize": ("llm_recipes.configs:QuantizeArguments",),
    "export": ("llm_recipes.configs:ExportArguments",),
    "evaluate": ("llm_recipes.configs:EvaluateArguments",),
}
# the recipes' own defaults that change what is held in memory
_RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {"reward": {"lora_task_type": "SEQ_CLS"}, "prune": {"max_steps": 100}}
_TRL_STAGES = ("sft", "reward", "dpo", "grpo", "rloo")


@functools.cache
def _defaults(stage: str) -> dict[str, Any]:
    import importlib

    values: dict[str, Any] = {}
    for spec in reversed(_STAGE_TYPES.get(stage, ())):
        module, _, name = spec.partition(":")
        for item in dataclasses.fields(getattr(importlib.import_module(module), name)):
            if item.default is not dataclasses.MISSING:
                values[item.name] = item.default
            elif item.default_factory is not dataclasses.MISSING:
                values[item.name] = item.default_factory()
    return {**values, **_RECIPE_DEFAULTS.get(stage, {})}


def _settings(stage: str, section: dict) -> dict[str, Any]:
    settings = {**_defaults(stage), **section}
    if stage in _TRL_STAGES and settings.get("bf16") is None:
        settings["bf16"] = not settings.get("fp16")  # TRL's configs default to bf16 unless fp16 is set
    return settings


def _checkpointing(settings: dict[str, Any]) -> bool:
    value = settings.get("activation_checkpointing")
    if value is None:
        value = settings.get("gradient_checkpointing")
    return bool(value)


# --------------------------------------------------------------------------------------------------------------
# Estimates


@dataclass
class _Precision:
    """How a trained model's numbers are stored and computed under this stage's settings and launch."""

    weight_bytes: float  # trainable weights as stored
    grad_bytes: float
    state_bytes: float | None  # optimizer state element (None: the parameter's dtype)
    master_bytes: float  # DeepSpeed's fp32 master copy
    autocast_copy: bool  # fp32 trainable weights under 16-bit autocast
    compute16: bool  # activations in 16 bit
    residual_bytes: int  # the residual stream between blocks


def _dtype_bytes(name: Any, config: PretrainedConfig | None, notes: list[str], what: str = "weights") -> int:
    if name in (None, "auto"):
        saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        saved = str(saved).removeprefix("torch.") if saved is not None else None
        if saved in DTYPE_BYTES:
            return DTYPE_BYTES[saved]
        notes.append(f"{what}: dtype auto and none saved in the config: assumed float32")
        return 4
    return DTYPE_BYTES.get(str(name).removeprefix("torch."), 4)


def _precision(load_bytes: int, adapter: bool, mixed: str, launch: LaunchPlan) -> _Precision:
    autocast = mixed in ("bf16", "fp16")
    trained_bytes = 4 if adapter else load_bytes
    if launch.zero_stage is not None:
        sixteen = 2 if autocast else trained_bytes
        return _Precision(sixteen, sixteen, 4, 4 if sixteen < 4 else 0, False, sixteen == 2, sixteen)
    if launch.fsdp and autocast:
        return _Precision(4, 4, 4, 0, False, True, 2)
    compute16 = autocast or trained_bytes == 2
    return _Precision(trained_bytes, trained_bytes, None, 0, autocast and trained_bytes == 4, compute16, trained_bytes)


def _optimizer_bytes(optim: str, trainable: Trainable, precision: _Precision, settings: dict, notes: list[str]):
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


def _block_dimensions(config: PretrainedConfig) -> dict[str, int] | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(text, "hidden_size", None)
    layers = getattr(text, "num_hidden_layers", None)
    heads = getattr(text, "num_attention_heads", None)
    if not (hidden and layers and heads):
        return None
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    intermediate = getattr(text, "intermediate_size", None) or 4 * hidden
    vocab = getattr(text, "vocab_size", 0) or 0
    return dict(h=hidden, L=layers, a=heads, h_kv=kv_heads * head_dim, i=intermediate, V=vocab)


def _layer_bytes_per_token(dims: dict[str, int], precision: _Precision, seq: int, eager: bool) -> int:
    h, h_kv, i, a = dims["h"], dims["h_kv"], dims["i"], dims["a"]
    if precision.compute16 and precision.residual_bytes == 2:
        per_token = 20 * h + 4 * h_kv + 8 * i
    elif precision.compute16:
        per_token = 30 * h + 4 * h_kv + 8 * i
    else:
        per_token = 32 * h + 8 * h_kv + 16 * i
    if eager:
        per_token += (6 if precision.compute16 else 5) * a * seq
    return per_token


def activation_bytes(
    config: PretrainedConfig,
    *,
    batch: int,
    seq_len: int,
    checkpointing: bool,
    compute16: bool,
    fp32_residual: bool = False,
    head: str = "causal_lm",
    eager_attention: bool = False,
    logit_positions: int | None = None,
) -> int | None:
    """Activation bytes of one forward + backward of a micro-batch (see the module docstring); None for
    architectures without hidden_size / num_hidden_layers / num_attention_heads."""
    dims = _block_dimensions(config)
    if dims is None:
        return None
    precision = _Precision(0, 0, None, 0, False, compute16, 4 if fp32_residual or not compute16 else 2)
    return _activations(dims, precision, batch, seq_len, checkpointing, head, eager_attention, logit_positions)


def _activations(dims, precision, batch, seq, checkpointing, head, eager, logit_positions=None) -> int:
    tokens = batch * seq
    layer = _layer_bytes_per_token(dims, precision, seq, eager)
    if checkpointing:
        blocks = tokens * (dims["L"] * dims["h"] * precision.residual_bytes + layer)
    else:
        blocks = tokens * dims["L"] * layer
    logits = 0
    if head != "sequence_classification":
        logit_bytes = (2 if precision.compute16 else 4) + 12
        logits = batch * (logit_positions if logit_positions is not None else seq) * dims["V"] * logit_bytes
    return int(blocks + logits)


def _weights_bytes(shape: ModelShape, load_bytes: float, settings: dict[str, Any], quantized: bool) -> float:
    """Stored weights, with bitsandbytes' 4-/8-bit Linear layers when the model is loaded quantized."""
    if quantized and settings.get("load_in_4bit"):
        per_weight = FOUR_BIT_NESTED_BYTES if settings.get("use_bnb_nested_quant") else FOUR_BIT_BYTES
        return shape.quantizable * per_weight + (shape.parameters - shape.quantizable) * load_bytes
    if quantized and settings.get("load_in_8bit"):
        return shape.quantizable * 1 + (shape.parameters - shape.quantizable) * load_bytes
    return shape.parameters * load_bytes


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
    settings = _settings(stage, section)
    training = stage in TRAINING_STAGES or (stage == "prune" and bool(settings.get("recovery_dataset_path")))
    launch = resolve_launch(launch_args) if training else LaunchPlan()
    if stage == "ppo":
        check_ppo_launch(launch, settings)
    if not training and launch_args:
        notes.append("launch flags ignored: the stage runs in one process")
    notes.extend(launch.notes)
    if training:
        launch = _training_config_sharding(launch, settings, notes)
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
    mixed = _mixed_precision(stage, settings, launch)
    if mixed != "no":
        notes.append(f"mixed precision: {mixed}")
    breakdown: dict[str, float] = {}
    unknown = False
    for role in roles:
        shape = _shape(_config_key(role.config), role.head)
        if not role.trained:
            divisor = launch.shard_group if (role.prepared and launch.shard_weights) else 1
            # DeepSpeed casts what it prepares to 16 bit; FSDP2 upcasts trainable parameters only
            load = 2 if (role.prepared and launch.zero_stage is not None and mixed != "no") else role.load_bytes
            weights = _weights_bytes(shape, load, settings, role.quantized) / divisor
            if launch.offload_params and role.prepared:
                weights = 0
            breakdown[f"{role.name} model"] = breakdown.get(f"{role.name} model", 0) + weights
            continue
        trainable = _trainable(role.config, role.head, settings)
        if role.name == "policy":
            estimate.trainable_parameters = trainable.count
        precision = _precision(role.load_bytes, trainable.adapter, mixed, launch)
        if role.name == "policy":
            notes.append(_precision_note(role.load_bytes, trainable.adapter, mixed, launch))
        frozen = shape.parameters - (0 if trainable.adapter else trainable.count)
        frozen_bytes = 2 if (launch.zero_stage is not None and mixed != "no") else role.load_bytes
        weights = trainable.count * precision.weight_bytes
        if frozen:
            weights += _weights_bytes(shape, frozen_bytes, settings, role.quantized) * frozen / shape.parameters
        grads = trainable.count * precision.grad_bytes
        optim = "adamw_torch" if stage == "ppo" else settings.get("optim", "adamw_torch")  # PPO: torch AdamW
        optimizer = _optimizer_bytes(optim, trainable, precision, settings, notes)
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
        shapes = [_shape(_config_key(role.config), role.head) for role in roles if role.prepared]
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


def _precision_note(load_bytes: int, adapter: bool, mixed: str, launch: LaunchPlan) -> str:
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


def _main_head(stage: str, settings: dict) -> str:
    if stage == "reward":
        return "sequence_classification"
    if stage == "pretrain" and settings.get("objective") == "mlm":
        return "masked_lm"
    return "causal_lm"


def _mixed_precision(stage: str, settings: dict, launch: LaunchPlan) -> str:
    """The training config's bf16/fp16 win; without them accelerate's launch setting applies (its environment
    variable reaches the Trainer's Accelerator)."""
    if settings.get("bf16"):
        return "bf16"
    if settings.get("fp16"):
        return "fp16"
    if stage == "ppo":  # our PPO trainer's Accelerator is built from its bf16 field alone
        return "no"
    return launch.mixed_precision if launch.mixed_precision in ("bf16", "fp16") else "no"


def _load_bytes(stage: str, settings: dict, config: PretrainedConfig, notes: list[str]) -> int:
    if stage == "pretrain":
        return _dtype_bytes("auto", config, notes) if settings.get("model_name_or_path") else 4
    if stage == "distill":
        return 4  # the student trains in float32
    if stage == "prune":
        return _dtype_bytes("auto", config, notes)
    return _dtype_bytes(settings.get("dtype"), config, notes)


def _roles(stage, settings, config, head, teacher_config, reward_config, value_config, notes) -> list[_Role] | None:
    load = _load_bytes(stage, settings, config, notes)
    quantized = bool(settings.get("load_in_4bit") or settings.get("load_in_8bit"))
    roles = [_Role("policy", config, head, True, load, quantized=quantized)]
    peft = bool(settings.get("use_peft"))
    if stage == "dpo" and not peft:
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
            reward_bytes = _dtype_bytes(None, reward_config, notes, "reward model")
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
        teacher_bytes = _dtype_bytes(settings.get("teacher_dtype"), teacher_config, notes, "teacher")
        roles.append(_Role("teacher", teacher_config, "causal_lm", False, teacher_bytes))
    if peft and stage in ("dpo", "grpo", "rloo", "ppo"):
        notes.append("LoRA: the reference is the policy with its adapter disabled (no copy)")
    return roles


def _stage_activations(stage, settings, roles, mixed, launch, notes) -> dict[str, float] | None:
    policy = roles[0]
    dims = _block_dimensions(policy.config)
    if dims is None:
        notes.append(f"activations: no formula for {policy.config.model_type} (transformer blocks only)")
        return None
    checkpointing = _checkpointing(settings)
    eager = settings.get("attn_implementation") == "eager"
    notes.append(f"activations: gradient checkpointing {'on' if checkpointing else 'off'}")
    trainable_adapter = bool(settings.get("use_peft"))
    precision = _precision(policy.load_bytes, trainable_adapter, mixed, launch)
    if trainable_adapter:  # the frozen base's dtype sets the compute precision, not the fp32 adapters
        precision = _precision(policy.load_bytes, False, mixed, launch)
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
    result["activations"] = _activations(dims, precision, batch, seq, checkpointing, policy.head, eager)
    if stage == "distill":
        teacher = roles[1]
        teacher_dims = _block_dimensions(teacher.config) or dims
        # the teacher's logits (its dtype) and the fp32 log-probabilities the KD loss keeps for the backward pass
        result["teacher logits"] = batch * seq * teacher_dims["V"] * (min(teacher.load_bytes, 4) + 8)
    return result


def _ppo_activations(settings, roles, dims, precision, micro, prompt, response, checkpointing, eager):
    """Training step: policy (logits over the whole sequence, fp32 for the response) and value model; rollout:
    the KV cache of generation and the scoring passes' logits. The peak is the larger phase."""
    seq = prompt + response
    policy_act = _activations(dims, precision, micro, seq, checkpointing, "causal_lm", eager, logit_positions=response)
    policy_act += micro * (seq - response) * dims["V"] * (2 if precision.compute16 else 4)
    value = next(role for role in roles if role.name == "value")
    value_dims = _block_dimensions(value.config) or dims
    value_act = _activations(value_dims, precision, micro, seq, checkpointing, "sequence_classification", eager)
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
    shape = _shape(_config_key(config), head)
    dtype = settings.get("dtype")
    if stage == "evaluate" and dtype is None:
        notes.append("evaluate: weights at their saved dtype (the default on a GPU)")
    if stage in ("quantize", "prune"):
        dtype = "auto"  # loaded as saved; quantize's `dtype` only applies to an adapter merge
    load = _dtype_bytes(dtype, config, notes)
    breakdown: dict[str, float] = {"weights": shape.parameters * load}
    if stage == "quantize":
        breakdown["quantized copy"] = _quantized_bytes(settings, shape, load, notes)
        notes.append("quantize: the source and the quantized model are both held for the comparison report")
    if stage == "evaluate" and reward_config is not None:
        reward_shape = _shape(_config_key(reward_config), "sequence_classification")
        breakdown["reward model"] = reward_shape.parameters * _dtype_bytes(dtype, reward_config, notes, "reward model")
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


# --------------------------------------------------------------------------------------------------------------
# Throughput arithmetic (for config headers and plans; an estimate, never a measurement)


def flops_per_token(config: PretrainedConfig, seq_len: int) -> int | None:
    """Training FLOPs per token: 6 x the parameters that do matrix work (the LM head counts, the embedding lookup
    does not) + 12 x layers x hidden x seq_len for attention scores (Chowdhery et al. 2022, PaLM appendix B)."""
    dims = _block_dimensions(config)
    if dims is None:
        return None
    shape = _shape(_config_key(config), "causal_lm")
    tied = getattr(config, "tie_word_embeddings", False)
    matmul_params = shape.parameters - (0 if tied else shape.embedding)
    return int(6 * matmul_params + 12 * dims["L"] * dims["h"] * seq_len)


def format_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def format_count(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}" if unit == "B" else f"{n / size:.1f}{unit}"
    return str(n)


# --------------------------------------------------------------------------------------------------------------
# Along a pipeline


def as_saved(stage: str, section: dict, config: PretrainedConfig) -> PretrainedConfig:
    """The architecture a stage writes, with the dtype its weights are saved in (what `auto` reads next)."""
    settings = _settings(stage, section)
    if stage == "distill" or (stage == "pretrain" and not settings.get("model_name_or_path")):
        saved = "float32"
    elif stage in ("sft", "reward", "dpo", "grpo", "rloo", "ppo", "export"):
        saved = settings.get("dtype")
    else:
        return config
    if saved in (None, "auto"):
        return config
    return _with_fields(config, {"dtype": saved})


def throughput_tokens_per_second(
    config: PretrainedConfig, seq_len: int, *, mfu: float, peak_flops: float = 989e12
) -> float | None:
    """Tokens/s per GPU at a model FLOPs utilisation `mfu` (H100 SXM dense bf16 peak by default)."""
    per_token = flops_per_token(config, seq_len)
    return None if per_token is None else mfu * peak_flops / per_token
