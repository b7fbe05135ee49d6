"""The plan a dry run prints: each stage, what it reads and writes, how it is launched, and what it will need.

Estimates follow the model through the chain: a stage that trains the output of an earlier one has that stage's
architecture, so a pipeline can be sized before any of it exists (see llm_recipes.planning for the memory model).
"""

from __future__ import annotations

import os
from typing import Any

from llm_recipes.pipeline.plan import PipelineSettings, StagePlan
from llm_recipes.pipeline.report import format_table
from llm_recipes.pipeline.state import StageStatus

# the field holding the model a stage starts from (pretrain and distill are resolved by the planning module)
MODEL_FIELDS = {
    "sft": "model_name_or_path",
    "reward": "model_name_or_path",
    "ppo": "model_name_or_path",
    "grpo": "model_name_or_path",
    "rloo": "model_name_or_path",
    "dpo": "model_name_or_path",
    "quantize": "model_name_or_path",
    "prune": "model_name_or_path",
    "export": "model_name_or_path",
}
ACTIONS = {
    "done": "done, unchanged",
    "resume": "resume",
    "changed": "run (changed)",
    "new": "run",
}


def _normalized(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def model_configs_along(plan: list[StagePlan], settings: PipelineSettings) -> dict[str, Any]:
    """slot -> the architecture its stage trains or loads (None where it cannot be known offline)."""
    from llm_recipes.planning import model_config_for

    by_output: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    vocab_size = None
    for step in plan:
        if step.action == "skip":
            continue
        if step.action == "existing":
            config = model_config_for(
                step.stage, {"model_name_or_path": step.output}, model_configs=settings.model_configs
            )
        elif step.stage == "train-tokenizer":
            vocab_size = step.config.get("vocab_size")
            config = None
        elif step.stage in MODEL_FIELDS and step.config.get(MODEL_FIELDS[step.stage]):
            source = _normalized(str(step.config[MODEL_FIELDS[step.stage]]))
            config = by_output.get(source) or model_config_for(
                step.stage, step.config, model_configs=settings.model_configs
            )
        elif step.stage == "pretrain":
            tokenizer_is_planned = "tokenizer_name_or_path" in step.chained or vocab_size is not None
            config = model_config_for(
                step.stage,
                step.config,
                model_configs=settings.model_configs,
                vocab_size=vocab_size if tokenizer_is_planned else None,
            )
        else:
            config = model_config_for(step.stage, step.config, model_configs=settings.model_configs)
        configs[step.slot] = config
        if step.output and config is not None:
            by_output[_normalized(step.output)] = config
    return configs


def describe_plan(
    plan: list[StagePlan], settings: PipelineSettings, statuses: list[StageStatus | None], config_dir: str
) -> str:
    from llm_recipes.planning import estimate_stage, format_bytes

    architectures = model_configs_along(plan, settings)
    rows, notes = [], []
    for number, (step, status) in enumerate(zip(plan, statuses, strict=True), start=1):
        if step.action == "skip":
            rows.append([str(number), step.stage, "skip", "", "", "", "", "", ""])
            continue
        if step.action == "existing":
            rows.append([str(number), step.stage, "existing", "", step.output, "", "", "", ""])
            continue
        estimate = estimate_stage(
            step.stage, step.config, model_config=architectures.get(step.slot), launch_args=step.launch_args
        )
        inputs = ", ".join(f"{name} <- {source}" for name, source in step.chained.items())
        launch = f"{estimate.processes} x {estimate.strategy}" if step.launch_args else "in-process"
        rows.append(
            [
                str(number),
                step.stage,
                ACTIONS[status.kind],
                inputs,
                step.output,
                launch,
                _count(estimate.parameters),
                _count(estimate.trainable_parameters),
                format_bytes(estimate.memory_per_device),
            ]
        )
        notes += [f"{step.stage}: {note}" for note in estimate.notes]
    headers = ["#", "stage", "action", "inputs from earlier stages", "output", "launch", "params", "trainable"]
    table = format_table([*headers, "memory/device"], rows)
    lines = [
        f"pipeline plan (rl_algorithm: {settings.rl_algorithm}; state in {settings.run_dir})",
        "",
        table,
        "",
        f"every stage config checked; resolved stage configs written to {config_dir}",
    ]
    if notes:
        lines += ["", "estimates assume:", *(f"  {note}" for note in notes)]
    return "\n".join(lines)


def _count(value: int | None) -> str:
    if value is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)
