"""Dry-run estimates for a stage: parameter counts and peak memory per device, from the config alone.

`llm-recipes pipeline --dry_run` prints, per stage, what it will train or load and roughly how much accelerator
memory each process needs. Nothing here loads weights: parameters are counted on a model built on the meta device
(exact, tied weights once), configs come from local folders, a `model_configs` mapping or the local HF cache (never
the network), and the launch settings from the `accelerate launch` flags and the `--config_file` YAML they name.
Accelerate's own `estimate-memory` command covers inference weights only, and DeepSpeed's estimators cover the model
states only; a stage needs both plus activations, frozen companion models (reference, reward, teacher) and the
way each of our trainers places them, hence this package.

- model_configs.py   the architecture each stage trains or loads (offline), and what it hands on (`as_saved`)
- stage_settings.py  a stage's config section over its dataclasses' defaults
- shapes.py          parameter counts on the meta device; trainable parameters (full, LoRA, partial)
- precision.py       bytes per weight, gradient and optimizer state under each precision and launch
- activations.py     activation bytes of a micro-batch
- memory.py          the MEMORY MODEL (its docstring) and `estimate_stage`, which puts the above together
- throughput.py      FLOPs per token and tokens/s at a given utilisation
- formatting.py      bytes and counts as the plan prints them

How a stage is launched (processes, strategy, what is sharded) is read by llm_recipes.pipeline.launch, re-exported
here.

Use: `model_config_for` (the architecture a stage trains) and `related_model_configs` (its teacher / reward / value
model), both taking `earlier_outputs` (output folder -> architecture of the stages before it), then
`estimate_stage`; `as_saved` is what a stage hands on. The pipeline's dry run (llm_recipes.pipeline.dry_run) walks a
plan that way.
"""

from llm_recipes.pipeline.estimates.activations import activation_bytes
from llm_recipes.pipeline.estimates.formatting import format_bytes, format_count
from llm_recipes.pipeline.estimates.memory import StageEstimate, estimate_stage
from llm_recipes.pipeline.estimates.model_configs import as_saved, model_config_for, related_model_configs
from llm_recipes.pipeline.estimates.shapes import ModelShape, parameter_count
from llm_recipes.pipeline.estimates.throughput import flops_per_token, throughput_tokens_per_second
from llm_recipes.pipeline.launch import LaunchPlan, check_ppo_launch, launch_plan, resolve_launch

__all__ = [
    "LaunchPlan",
    "ModelShape",
    "StageEstimate",
    "activation_bytes",
    "as_saved",
    "check_ppo_launch",
    "estimate_stage",
    "flops_per_token",
    "format_bytes",
    "format_count",
    "launch_plan",
    "model_config_for",
    "parameter_count",
    "related_model_configs",
    "resolve_launch",
    "throughput_tokens_per_second",
]
