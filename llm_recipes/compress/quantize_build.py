"""The quantize stage's steps around `quantize_folder`: the report's data read before any model loads, the source in
full precision (an adapter merged into its base first), and the report comparing the quantized model with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_recipes.compress.config import QuantizeArguments
from llm_recipes.compress.quantize import QuantizationSpec, compare_with_source, sample_inputs
from llm_recipes.compress.report import protocol_from_fields
from llm_recipes.evaluation.data import load_eval_data
from llm_recipes.evaluation.protocol import Protocol
from llm_recipes.export.folder import load_full_model, merge_adapter, save_model_folder
from llm_recipes.export.source import parse_shard_size


def load_report_data(args: QuantizeArguments) -> dict[str, Any]:
    """The evaluation protocol with its data read (the report's); calibration texts for GPTQ."""
    data: dict[str, Any] = {"protocol": Protocol(protocol_from_fields(args)).load()}
    if args.calibration_dataset_path and args.method == "gptq":
        calibration = load_eval_data(
            args.calibration_dataset_path,
            data_format=args.data_format,
            text_field=args.text_field,
            max_samples=args.calibration_samples,
        )
        data["calibration"] = calibration.texts
    return data


def load_full_precision(args: QuantizeArguments, source: Any, tokenizer: Any, staging: Path) -> tuple[Any, Path]:
    """(the source model in full precision, the folder it is saved in). An adapter is merged into its base and the
    merged model saved beside the output first: quantization loads a saved folder."""
    if source.kind != "adapter":
        return load_full_model(source, "auto", args.trust_remote_code), Path(args.model_name_or_path).expanduser()
    merged = merge_adapter(source, tokenizer, args.dtype, args.trust_remote_code)
    folder = staging / ".full-precision"
    save_model_folder(merged, tokenizer, folder, parse_shard_size(args.max_shard_size))
    return merged, folder


def quantization_report(
    args: QuantizeArguments,
    spec: QuantizationSpec,
    source_model: Any,
    quantized: Any,
    tokenizer: Any,
    data: dict[str, Any],
    source_dir: Path,
    quantized_dir: Path,
) -> dict[str, Any]:
    """The comparison with the source on the protocol, the logit difference and the reload check (closes the
    protocol `load_report_data` loaded)."""
    protocol = data["protocol"]
    texts = protocol.corpus_texts or []
    positions = getattr(source_model.config, "max_position_embeddings", None) or args.compare_length
    samples = sample_inputs(
        tokenizer, texts, count=args.compare_samples, length=min(args.compare_length, positions), seed=args.seed
    )
    report = {"stage": "quantize", "method": spec.describe()}
    report.update(
        compare_with_source(
            protocol,
            source_model,
            quantized,
            tokenizer,
            samples,
            source_dir=source_dir,
            quantized_dir=quantized_dir,
            source_name=args.model_name_or_path,
        )
    )
    protocol.close()
    return report
