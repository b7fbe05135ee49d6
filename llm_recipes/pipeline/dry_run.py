"""The plan a dry run prints: each stage, what it reads and writes, how it is launched, and what it will need.

Estimates follow the model through the chain: a stage that trains the output of an earlier one has that stage's
architecture, so a pipeline can be sized before any of it exists (see llm_recipes.pipeline.estimates.memory for the
memory model).
"""

from __future__ import annotations

import os
from typing import Any

from llm_recipes.pipeline.estimates import (
    as_saved,
    estimate_stage,
    format_bytes,
    format_count,
    model_config_for,
    related_model_configs,
)
from llm_recipes.pipeline.plan import PipelineSettings, StagePlan
from llm_recipes.pipeline.report import format_table
from llm_recipes.pipeline.state import StageStatus
from llm_recipes.tokenizer.config import TrainTokenizerArguments

ACTIONS = {
    "done": "done, unchanged",
    "resume": "resume",
    "changed": "run (changed)",
    "new": "run",
}


def _normalized(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def estimate_plan(plan: list[StagePlan], settings: PipelineSettings) -> dict[str, Any]:
    """slot -> StageEstimate for every stage that runs, each model followed from the stage that writes it."""
    known: dict[str, Any] = {}  # output folder -> the architecture it will hold
    tokenizer_output, vocab_size = None, None
    estimates = {}
    for step in plan:
        if step.action == "existing":
            config = model_config_for(
                step.stage, {"model_name_or_path": step.output}, model_configs=settings.model_configs
            )
            if config is not None:
                known[_normalized(step.output)] = config
        if step.action != "run":
            continue
        section = step.config
        if step.stage == "train-tokenizer":
            tokenizer_output = _normalized(step.output)
            vocab_size = section.get("vocab_size", TrainTokenizerArguments.vocab_size)
        tokenizer = section.get("tokenizer_name_or_path")
        trained_vocab = vocab_size if tokenizer and _normalized(tokenizer) == tokenizer_output else None
        lookup = {"model_configs": settings.model_configs, "earlier_outputs": known}
        config = model_config_for(step.stage, section, vocab_size=trained_vocab, **lookup)
        related = related_model_configs(step.stage, section, **lookup)
        estimates[step.slot] = estimate_stage(
            step.stage, section, model_config=config, launch_args=step.launch_args, **related
        )
        if config is not None:
            known[_normalized(step.output)] = as_saved(step.stage, section, config)
    return estimates


def describe_plan(plan: list[StagePlan], settings: PipelineSettings, statuses: list[StageStatus | None]) -> str:
    estimates = estimate_plan(plan, settings)
    rows, notes = [], []
    for number, (step, status) in enumerate(zip(plan, statuses, strict=True), start=1):
        if step.action == "skip":
            rows.append([str(number), step.stage, "skip", "", "", "", "", "", ""])
            continue
        if step.action == "existing":
            rows.append([str(number), step.stage, "existing", "", step.output, "", "", "", ""])
            continue
        estimate = estimates[step.slot]
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
                format_count(estimate.parameters),
                format_count(estimate.trainable_parameters),
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
        "every stage config checked (a real run writes each stage's resolved config to "
        f"{settings.run_dir / 'configs'})",
    ]
    if notes:
        lines += ["", "estimates assume:", *(f"  {note}" for note in notes)]
    code = code_references(plan)
    if code:
        lines += ["", "code a real run will import and run (checked to exist; this dry run ran none of it):"]
        lines += [f"  {reference}" for reference in code]
    return "\n".join(lines)


def code_references(plan: list[StagePlan]) -> list[str]:
    """The code the running stages will execute, from the config fields that name it: a `reward_function`, the
    `callable` filter steps of clean-corpus, and a model's own Python where `trust_remote_code` is on."""
    references = []
    for step in plan:
        if step.action != "run":
            continue
        section = step.config
        if section.get("reward_function"):
            references.append(f"{step.stage}: reward_function {_located(section['reward_function'])}")
        if step.stage == "clean-corpus":
            references += [f"{step.stage}: callable filter {_located(spec)}" for spec in _callable_filters(section)]
        if section.get("trust_remote_code"):
            references.append(f"{step.stage}: trust_remote_code: true (the Python files its model folders carry)")
    return references


def _located(spec: str) -> str:
    """`file.py:function` with the file's full path (the one that will run); a module spec as it is."""
    module = str(spec).rpartition(":")[0]
    if module.endswith(".py") and _normalized(module) != module:
        return f"{spec} ({_normalized(module)})"
    return str(spec)


def _callable_filters(value: Any) -> list[str]:
    """Every `callable: {fn: module:function}` in a clean-corpus section, at any depth (a step, or a filter list)."""
    if isinstance(value, list):
        return [spec for item in value for spec in _callable_filters(item)]
    if not isinstance(value, dict):
        return []
    found = []
    for key, item in value.items():
        if key == "callable" and isinstance(item, dict) and isinstance(item.get("fn"), str):
            found.append(item["fn"])
        elif key == "callable" and isinstance(item, str):
            found.append(item)
        else:
            found += _callable_filters(item)
    return found
