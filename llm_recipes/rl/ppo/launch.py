"""Where PPO runs: one device, DDP or FSDP2 (accelerate's plugin), and the Accelerator of a run.

DeepSpeed is refused before anything loads: accelerate prepares a DeepSpeed model only with a dataloader to read
its micro-batch size from, and the PPO loop has none (its batches come from its own rollouts); FSDP2 shards the
same models with nothing to install. `unsupported_launch` is shared by the recipe's config check (what
`accelerate launch` exported) and the pipeline's dry run (the launch flags and config file).
"""

from __future__ import annotations

import os
from typing import Any

from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType

from llm_recipes.errors import UserError


def unsupported_launch(deepspeed: bool, fsdp_version: int | None, quantized: bool = False) -> str | None:
    """Why PPO cannot run under a launch (DeepSpeed; FSDP other than FSDP2; FSDP2 over a quantized base), or None."""
    if deepspeed:
        return (
            "ppo: our PPO trainer runs on one device, under DDP or under FSDP2, not under DeepSpeed (ZeRO): launch "
            "it with configs/accelerate/fsdp.yaml to shard its models, or ddp.yaml"
        )
    if fsdp_version is not None and fsdp_version != 2:
        return f"ppo: our PPO trainer shards with FSDP2 only, not fsdp_version {fsdp_version}: set fsdp_version: 2"
    if fsdp_version is not None and quantized:
        return "ppo: FSDP2 does not shard a quantized (load_in_4bit/8bit) base: run QLoRA PPO under DDP (ddp.yaml)"
    return None


def check_launch_environment(quantized: bool = False) -> None:
    """Refuse, before anything loads, a launch PPO cannot run under (what `accelerate launch` exported)."""
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    reason = unsupported_launch(deepspeed, int(os.environ.get("FSDP_VERSION", "1")) if fsdp else None, quantized)
    if reason:
        raise UserError(reason)


def make_accelerator(config: Any) -> Any:
    """The Accelerator of a PPO run (CPU or not, bf16 or not, FSDP2 when the launch asks for it). A Trainer that
    ran earlier in this process (a pipeline, a notebook) may have fixed other settings in accelerate's process-wide
    state; they are reset first, as `transformers.TrainingArguments` does, keeping the process group."""

    check_launch_environment()
    AcceleratorState._reset_state()
    plugin = None
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        # Every process loads every model whole (as under DDP) and FSDP shards them: with cpu_ram_efficient_loading
        # transformers would leave the weights of all but the first process empty, and the reward model, which
        # accelerate never sees, would score with them.
        plugin = FullyShardedDataParallelPlugin(cpu_ram_efficient_loading=False)
    mixed_precision = "bf16" if config.bf16 else "no"
    accelerator = Accelerator(cpu=config.use_cpu, mixed_precision=mixed_precision, fsdp_plugin=plugin)
    if plugin is not None and accelerator.distributed_type == DistributedType.MULTI_CPU:
        # accelerate picks FSDP only for accelerator devices (AcceleratorState); FSDP2 itself runs on CPU processes
        # under gloo, which is how the tests run it (configs/accelerate/fsdp_cpu.yaml)
        if mixed_precision != "no":
            plugin.set_mixed_precision(mixed_precision)
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin
    return accelerator


# --------------------------------------------------------------------------------------------------------------
# The trainer
