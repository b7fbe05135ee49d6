"""The model card: huggingface_hub's `ModelCard`/`ModelCardData` (metadata, `model-index` eval results), checked with
huggingface_hub's own parser before anything is written. Its content is ours: the stages that produced the model
with their configuration and metrics, the evaluation results, and a usage snippet for what the folder holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCard, ModelCardData

from llm_recipes.errors import UserError
from llm_recipes.hub.folder import FolderFacts, folder_facts, task_errors, task_name, usage_snippet
from llm_recipes.hub.history import StageRecord, hub_datasets, hub_models, is_hub_id, stage_history
from llm_recipes.hub.results import (
    EVAL_REPORT_EXTRAS,
    EVAL_RESULTS_NAME,
    EvalReport,
    copy_eval_results,
    read_eval_results,
)
from llm_recipes.runs.manifest import SECRET_FIELDS, library_versions
from llm_recipes.runs.summary import format_number

CARD_NAME = "README.md"
DEFAULT_INTENDED_USE = (
    "{use}: research, experiments and as a starting point for further fine-tuning. Check the training data and the "
    "evaluation results below before relying on it for anything else."
)
DEFAULT_LIMITATIONS = (
    "The model knows only what its base model and the data listed below taught it; {errs}, and it has not been "
    "evaluated for safety. Small models and short training runs (see the training procedure) give results of "
    "limited quality."
)


@dataclass
class CardOptions:
    """What the user says about the model; everything else on the card is read from the folder and manifests."""

    model_name: str | None = None
    license: str | None = None
    language: list[str] | None = None
    tags: list[str] | None = None
    datasets: list[str] | None = None
    base_model: str | None = None
    eval_results_path: str | None = None
    intended_use: str | None = None
    limitations: str | None = None
    extra_tags: list[str] = field(default_factory=list)  # added by the stage (e.g. quantization)


def build_model_card(
    folder: str | Path,
    model_id: str,
    options: CardOptions | None = None,
    *,
    evaluated_model: str | Path | None = None,
    stages: Sequence[StageRecord] | None = None,
) -> ModelCard:
    """The model card of the model (or adapter) in `folder`, to be loaded as `model_id` (a Hub id or a path).

    `evaluated_model` is the path the evaluation results were recorded under (default: `folder`); `stages`
    default to the manifest chain starting at `folder`.
    """
    folder = Path(folder)
    options = options or CardOptions()
    facts = folder_facts(folder)
    stages = list(stage_history(folder) if stages is None else stages)
    evaluation = (
        read_eval_results(options.eval_results_path, evaluated_model or folder) if options.eval_results_path else None
    )
    base_models = [options.base_model] if options.base_model else hub_models(stages)
    if facts.kind == "adapter" and facts.base_model and is_hub_id(facts.base_model):
        base_models = [facts.base_model]
    base_model = base_models[0] if base_models else None
    datasets = list(dict.fromkeys([*(options.datasets or []), *hub_datasets(stages)]))
    model_name = options.model_name or model_id.rstrip("/").split("/")[-1]

    data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        datasets=datasets or None,
        license=options.license,
        language=options.language,
        library_name="peft" if facts.kind == "adapter" else "transformers",
        pipeline_tag=facts.task,
        tags=card_tags(stages, facts, [*(options.tags or []), *options.extra_tags]),
        eval_results=(evaluation.results or None) if evaluation else None,
    )
    card = ModelCard.from_template(
        data,
        template_str=CARD_TEMPLATE,
        model_name=model_name,
        summary=_summary(facts, stages, base_model),
        usage=usage_snippet(model_id, facts),
        evaluation=_evaluation_section(evaluation),
        training=_training_section(stages),
        intended_use=options.intended_use or DEFAULT_INTENDED_USE.format(use=task_name(facts)[1]),
        limitations=options.limitations or DEFAULT_LIMITATIONS.format(errs=task_errors(facts)),
        versions=_versions(stages),
    )
    check_card(card)
    return card


def write_model_card(
    folder: str | Path,
    model_id: str,
    options: CardOptions | None = None,
    *,
    evaluated_model: str | Path | None = None,
) -> ModelCard:
    """Build the card, check it, and save it as the folder's README.md (the evaluation report copied beside it)."""
    folder = Path(folder)
    options = options or CardOptions()
    card = build_model_card(folder, model_id, options, evaluated_model=evaluated_model)
    if options.eval_results_path:
        copy_eval_results(options.eval_results_path, folder)
    card.save(folder / CARD_NAME)
    return card


def check_card(card: ModelCard) -> None:
    """huggingface_hub's own checks, offline: the card's text parses back into ModelCardData (YAML metadata,
    model-index -> eval results) and says what we put in it. The Hub re-validates the metadata on upload."""
    try:
        parsed = ModelCard(str(card))
    except ValueError as err:
        raise UserError(f"the model card does not validate: {str(err).splitlines()[0]}") from None
    expected = card.data.to_dict()
    if parsed.data.to_dict() != expected:
        raise UserError("the model card's metadata does not survive a round trip through huggingface_hub's parser")


def card_tags(stages: Sequence[StageRecord], facts: FolderFacts, extra: Sequence[str]) -> list[str]:
    tags = ["llm-recipes", *(record.stage for record in stages)]
    for record in stages:
        model_config = record.config.get("model") or {}
        if model_config.get("use_peft"):
            tags.append("dora" if model_config.get("use_dora") else "lora")
    if facts.adapter_method:
        tags.append(facts.adapter_method.lower())
    if facts.quantization:
        tags += ["bitsandbytes", "4-bit" if facts.quantization in ("nf4", "fp4", "4bit") else "8-bit"]
    if facts.gguf_files:
        tags.append("gguf")
    tags += list(extra)
    return list(dict.fromkeys(tags))


CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ summary }}

## Usage

{{ usage }}

## Evaluation

{{ evaluation }}

## Intended use

{{ intended_use }}

## Limitations

{{ limitations }}

## Training procedure

{{ training }}

## Framework versions

{{ versions }}
"""


def _summary(facts: FolderFacts, stages: Sequence[StageRecord], base_model: str | None) -> str:
    what = f"A {facts.adapter_method} adapter" if facts.kind == "adapter" else task_name(facts)[0]
    if facts.quantization:
        what += f" with {facts.quantization} weights (bitsandbytes)"
    base = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else None
    if facts.kind == "adapter":
        start = f" for {base or facts.base_model}"
    else:
        start = f" fine-tuned from {base}" if base else ""
    chain = " -> ".join(record.stage for record in stages)
    made = f" through the stages {chain}" if chain else ""
    return f"{what}{start}, made with llm-recipes{made}."


def _evaluation_section(evaluation: EvalReport | None) -> str:
    if evaluation is None:
        return "No evaluation results were recorded for this model."
    lines = []
    dataset = evaluation.summary.get("dataset") or {}
    if dataset:
        lines.append("Dataset: " + ", ".join(f"{key} `{value}`" for key, value in dataset.items()) + "\n")
    metrics = evaluation.summary.get("metrics") or {}
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {_cell(name)} | {_cell(_format(value))} |" for name, value in metrics.items()]
    elif evaluation.results:
        lines += ["| metric | dataset | value |", "|---|---|---|"]
        lines += [
            f"| {_cell(r.metric_name or r.metric_type)} | {_cell(r.dataset_name)} | {_cell(_format(r.metric_value))} |"
            for r in evaluation.results
        ]
    extras = [name for name in EVAL_REPORT_EXTRAS if name.endswith(".md") and (evaluation.file.parent / name).is_file()]
    files = " and ".join(f"`{name}`" for name in [EVAL_RESULTS_NAME, *extras])
    lines.append(f"\nThe full evaluation report is {files} in this repository.")
    return "\n".join(lines)


def _training_section(stages: Sequence[StageRecord]) -> str:
    if not stages:
        return "No stage manifests were found for this model."
    parts = []
    for number, record in enumerate(stages, start=1):
        lines = [f"### {number}. {record.stage}"]
        inputs = {key: value for key, value in record.inputs.items() if value}
        if inputs:
            lines.append("")
            lines += [f"- {key}: {_inline(value)}" for key, value in inputs.items()]
        if record.metrics:
            lines += ["", "| result | value |", "|---|---|"]
            lines += [f"| {_cell(key)} | {_cell(_format(value))} |" for key, value in record.metrics.items()]
        config = _clean_config(record.config)
        if config:
            dumped = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000).rstrip()
            lines += ["", "<details><summary>configuration</summary>", "", "```yaml", dumped, "```", "", "</details>"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _clean_config(config: dict[str, Any]) -> dict[str, Any]:
    """A manifest's config without unset values and secrets (the manifest already redacted them)."""
    clean: dict[str, Any] = {}
    for name, section in config.items():
        if isinstance(section, dict):
            kept = {k: v for k, v in section.items() if k not in SECRET_FIELDS and v not in (None, [], {}, "")}
            if kept:
                clean[name] = kept
        elif section not in (None, [], {}, ""):
            clean[name] = section
    return clean


def _versions(stages: Sequence[StageRecord]) -> str:
    versions = stages[-1].versions if stages else {}
    if not versions:
        versions = library_versions()
    return "\n".join(f"- {name}: {version}" for name, version in versions.items())


def _inline(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{item}`" for item in value)
    return f"`{value}`"


def _cell(text: Any) -> str:
    """Table cell text: a `|` would end the cell and `<...>` would be read as HTML, so both are escaped."""
    return str(text).replace("|", "\\|").replace("<", "&lt;")


def _format(value: Any) -> str:
    return format_number(value)
