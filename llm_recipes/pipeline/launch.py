"""How a stage will be launched, read from its `accelerate launch` flags and the `--config_file` YAML they name
(and a training config's own `deepspeed` / `fsdp` fields): processes, machines, mixed precision, and what DDP, FSDP
or DeepSpeed ZeRO shards and offloads. `check_ppo_launch` refuses the launches our PPO trainer cannot run under.

The dry run's estimates (llm_recipes.pipeline.estimates) size a stage from this; it lives beside them, not inside,
because `llm-recipes ppo` checks its launch with it before `accelerate launch` starts, and the estimates import the
model stack (seconds) that this check does not need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llm_recipes.errors import UserError
from llm_recipes.rl.ppo.launch import unsupported_launch


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


def training_config_sharding(plan: LaunchPlan, settings: dict[str, Any], notes: list[str]) -> LaunchPlan:
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
    the recipe refuses it when launched (llm_recipes.rl.ppo.launch)."""
    quantized = bool(settings.get("load_in_4bit") or settings.get("load_in_8bit"))
    reason = unsupported_launch(launch.zero_stage is not None, launch.fsdp_version if launch.fsdp else None, quantized)
    if reason:
        raise UserError(reason)
