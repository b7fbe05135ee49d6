"""The prune recipe's config checks, run before a model loads: a local full-precision source (or an adapter whose
base is one), data that exists, a method with its matching settings, a structured plan the architecture allows."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig

from llm_recipes.compress.config import PruneArguments
from llm_recipes.compress.prune import StructuredPlan, check_structured_plan, parse_pattern
from llm_recipes.configs import check_dataset_path, check_model_path, is_planned, looks_local
from llm_recipes.configs.code import imports_code
from llm_recipes.data.config import DatasetSpec, dataset_specs
from llm_recipes.errors import UserError
from llm_recipes.export.source import ModelSource, inspect_source, merge_refusal, quantization_of
from llm_recipes.sft.config import SFTScriptArguments

PRUNE_REMEDY = (
    "merge the adapter into the full-precision base first (base_model_name_or_path: the unquantized model), "
    "then prune the merged model"
)


def check_source(script_args: PruneArguments, output_dir: str) -> ModelSource | None:
    """The model to prune, checked: a local folder apart from output_dir, full precision (an adapter's base too).
    None while a pipeline's earlier stage has yet to make it (nothing to look at)."""
    check_model_path(script_args.model_name_or_path)
    if not looks_local(script_args.model_name_or_path):
        raise UserError(f"model_name_or_path: {script_args.model_name_or_path} must be a local model or adapter folder")
    output = Path(output_dir).expanduser().resolve()
    if output == Path(script_args.model_name_or_path).expanduser().resolve():
        raise UserError("output_dir must differ from model_name_or_path: the pruned model is a new folder")
    if is_planned(script_args.model_name_or_path):
        return None
    source = inspect_source(script_args.model_name_or_path, script_args.base_model_name_or_path)
    if source.kind == "quantized":
        raise UserError(
            f"{script_args.model_name_or_path} is quantized ({source.quantization}); prune the full-precision model"
        )
    if source.kind == "adapter":
        check_model_path(source.base_model, "base_model_name_or_path")
        if source.config is not None and quantization_of(source.config):
            raise merge_refusal(source.base_model, quantization_of(source.config), PRUNE_REMEDY)
    return source


def check_data(script_args: PruneArguments) -> None:
    """Calibration and recovery data exist (one kind of recovery data, at most)."""
    for path, what in (
        (script_args.calibration_dataset_path, "calibration"),
        (script_args.recovery_dataset_path, "recovery dataset"),
    ):
        if path:
            check_dataset_path(path, what)
    for spec in recovery_specs(script_args):
        check_dataset_path(spec.path, "recovery dataset")


def recovery_specs(script_args: PruneArguments) -> list[DatasetSpec]:
    """The recovery_datasets mixture, checked as SFT checks its `datasets` (none without one)."""
    if not script_args.recovery_datasets:
        return []
    if script_args.recovery_dataset_path:
        raise UserError("set recovery_dataset_path (text) or recovery_datasets (chats), not both")
    try:
        return dataset_specs(SFTScriptArguments(datasets=script_args.recovery_datasets))
    except UserError as error:
        raise UserError(f"recovery_{error}") from None


def check_method(script_args: PruneArguments, source: ModelSource | None) -> None:
    """Each method's settings, and none of another's; a structured plan checked against the source's config."""
    if script_args.method == "structured":
        if source is not None:
            _check_structured(script_args, source)
        return
    parse_pattern(script_args.sparsity_pattern)
    if script_args.heads_to_prune or script_args.mlp_channels_to_prune:
        raise UserError("heads_to_prune and mlp_channels_to_prune are for method: structured")
    if script_args.method == "wanda" and not script_args.calibration_dataset_path:
        raise UserError("method wanda weighs weights by input activations: set calibration_dataset_path")


def _check_structured(script_args: PruneArguments, source: ModelSource) -> None:
    if script_args.sparsity_pattern != "unstructured" or script_args.sparsity_group != "auto":
        raise UserError(
            "sparsity_pattern and sparsity_group are for magnitude and wanda; structured removes whole heads and "
            "channels"
        )
    path = source.base_model if source.kind == "adapter" else source.path
    if script_args.trust_remote_code and not imports_code():
        return  # reading the config would run the folder's code: a dry run checks the rest only
    config = AutoConfig.from_pretrained(path, trust_remote_code=script_args.trust_remote_code)
    check_structured_plan(config, structured_plan(script_args))


def structured_plan(script_args: PruneArguments) -> StructuredPlan:
    """What a structured pruning with these arguments removes."""
    return StructuredPlan(
        heads_to_prune=script_args.heads_to_prune,
        prune_kv_heads=script_args.prune_kv_heads,
        mlp_channels_to_prune=script_args.mlp_channels_to_prune,
    )
