"""The prune stage's steps before any recovery: the source model in full precision (an adapter merged into its
base), calibration windows, the pruning itself, and each model measured on the evaluation protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_recipes.compress.config import PruneArguments
from llm_recipes.compress.prune import prune_structured, prune_unstructured, token_windows
from llm_recipes.compress.prune_checks import structured_plan
from llm_recipes.evaluation.data import load_eval_data
from llm_recipes.evaluation.footprint import weight_sparsity
from llm_recipes.evaluation.protocol import Protocol
from llm_recipes.export.folder import load_full_model, merge_adapter
from llm_recipes.export.source import ModelSource


def load_source_model(script_args: PruneArguments, source: ModelSource, tokenizer: Any) -> tuple[Any, str | None]:
    """(the model to prune in full precision, its folder -- None for an adapter merged in memory)."""
    if source.kind == "adapter":
        return merge_adapter(source, tokenizer, "auto", script_args.trust_remote_code), None
    return load_full_model(source, "auto", script_args.trust_remote_code), script_args.model_name_or_path


def load_calibration(script_args: PruneArguments, tokenizer: Any, model: Any, seed: int) -> Any:
    """Calibration windows [samples, length], or None."""
    if not script_args.calibration_dataset_path:
        return None
    texts = load_eval_data(
        script_args.calibration_dataset_path, data_format=script_args.data_format, text_field=script_args.text_field
    ).texts
    positions = getattr(model.config, "max_position_embeddings", None) or script_args.calibration_length
    return token_windows(
        tokenizer,
        texts,
        count=script_args.calibration_samples,
        length=min(script_args.calibration_length, positions),
        seed=seed,
    )


def prune_model(script_args: PruneArguments, model: Any, calibration: Any) -> Any:
    """The pruned model: `model` itself with zeros written in (unstructured, N:M), or a new smaller model."""
    if script_args.method == "structured":
        return prune_structured(model, structured_plan(script_args), calibration)
    prune_unstructured(
        model,
        script_args.method,
        sparsity=script_args.sparsity,
        pattern=script_args.sparsity_pattern,
        calibration=calibration if script_args.method == "wanda" else None,
        per_row={"auto": None, "row": True, "layer": False}[script_args.sparsity_group],
    )
    return model


def measure_model(
    protocol: Protocol | None, model: Any, tokenizer: Any, folder: str | Path, name: str
) -> dict[str, Any]:
    """The model on the protocol, with its share of zero weights; {} without a protocol (processes other than the
    main one measure nothing)."""
    if protocol is None:
        return {}
    measured = protocol.measure(model, tokenizer, model_dir=folder, name=name).as_dict()
    measured["details"]["weight_sparsity"] = weight_sparsity(model)
    return measured
