"""The export stage's config checks: everything a user can get wrong fails here, before a model is loaded -- the
source folder and what can be done with its kind (full, quantized, adapter), shard size, GGUF support, the
evaluation report, the Hub repo id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub.utils import validate_repo_id

from llm_recipes.configs import check_model_path, is_planned, looks_local
from llm_recipes.errors import UserError
from llm_recipes.export.config import ExportArguments
from llm_recipes.export.source import (
    check_gguf_supported,
    inspect_source,
    merge_refusal,
    parse_shard_size,
    quantization_of,
    read_json,
)
from llm_recipes.hub import read_eval_results


def check_export_arguments(args: ExportArguments) -> None:
    """The whole config; a source an earlier pipeline stage will write is checked when it exists."""

    check_model_path(args.model_name_or_path)
    if not looks_local(args.model_name_or_path):
        raise UserError(f"model_name_or_path: {args.model_name_or_path} must be a local stage output folder")
    parse_shard_size(args.max_shard_size)
    if Path(args.output_dir).expanduser().resolve() == Path(args.model_name_or_path).expanduser().resolve():
        raise UserError("output_dir must differ from model_name_or_path: the export is a new folder")
    if not is_planned(args.model_name_or_path):
        check_source(args, inspect_source(args.model_name_or_path, args.base_model_name_or_path))
    if args.gguf_type != "none" and not is_planned(args.model_name_or_path):
        model_folder = Path(args.model_name_or_path).expanduser()
        tokenizer_file = model_folder / "tokenizer.json"
        source = inspect_source(args.model_name_or_path, args.base_model_name_or_path)
        check_gguf_supported(source.config, read_json(tokenizer_file) if tokenizer_file.is_file() else None)
    if args.eval_results_path and not is_planned(args.eval_results_path):
        read_eval_results(args.eval_results_path, args.model_name_or_path)
    if args.push_to_hub and args.hub_model_id:
        try:
            validate_repo_id(args.hub_model_id)
        except ValueError as err:
            raise UserError(f"hub_model_id: {str(err).splitlines()[0]}") from None


def check_source(args: ExportArguments, source: Any) -> None:
    """What can be done with this kind of input: adapters merge into a full-precision base; quantized weights and
    unmerged adapters are exported as they are."""

    weights_change = args.quantization != "none" or args.gguf_type != "none" or args.dtype != "auto"
    if source.kind == "adapter":
        if args.merge_adapter:
            check_model_path(source.base_model, "base_model_name_or_path")
            if source.config is not None and quantization_of(source.config):
                raise merge_refusal(source.base_model, quantization_of(source.config))
        elif weights_change:
            raise UserError("quantization, gguf_type and dtype change merged weights: set merge_adapter: true")
    if source.kind == "quantized" and weights_change:
        raise UserError(
            f"{args.model_name_or_path} is already quantized ({source.quantization}): quantization, gguf_type and "
            "dtype need the full-precision model"
        )
