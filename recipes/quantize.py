"""Quantize a model: bitsandbytes int8/4-bit, torchao int8 or GPTQ, with a report comparing it with its source.

    llm-recipes quantize --config configs/demo/quantize.yaml [field overrides]
    python recipes/quantize.py --config configs/demo/quantize.yaml --method torchao_int8_dynamic

Reads a full-precision model folder (or a LoRA/DoRA adapter, merged into its full-precision base first), loads it
quantized through transformers' integration of the chosen backend and saves it, with its tokenizer, as a folder
`AutoModelForCausalLM.from_pretrained` loads. The report (printed, and written as compression_report.json) compares
it with the source on the evaluation protocol (`protocol`: the evaluate stage's measures -- held-out perplexity,
task scores, reward, latency, size; without one, the report fields make a small protocol of eval_dataset_path),
plus the max/mean logit difference on sample inputs and whether the folder reloaded gives the outputs the model gave
before saving. See llm_recipes/compress/quantize.py for which backend runs where.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm_recipes.compress.config import QuantizeArguments
from llm_recipes.configs import check_dataset_path, check_model_path, is_planned, looks_local, parse_config, run_recipe
from llm_recipes.errors import UserError
from llm_recipes.runs.outputs import stage_main

COMPRESSION_REPORT = "compression_report.json"
# what to do instead of merging into quantized weights, in this stage's terms
QUANTIZE_REMEDY = (
    "merge the adapter into the full-precision base first (base_model_name_or_path: the unquantized model), "
    "then quantize the merged model"
)


def parse_args(argv: Sequence[str] | None = None) -> tuple[QuantizeArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""
    from llm_recipes.export.folder import inspect_source, parse_shard_size

    (args,) = parse_config((QuantizeArguments,), argv)
    check_model_path(args.model_name_or_path)
    if not looks_local(args.model_name_or_path):
        raise UserError(f"model_name_or_path: {args.model_name_or_path} must be a local model or adapter folder")
    if Path(args.output_dir).expanduser().resolve() == Path(args.model_name_or_path).expanduser().resolve():
        raise UserError("output_dir must differ from model_name_or_path: the quantized model is a new folder")
    parse_shard_size(args.max_shard_size)
    if not is_planned(args.model_name_or_path):
        _check_source(args, inspect_source(args.model_name_or_path, args.base_model_name_or_path))
    spec = quantization_spec(args)
    from llm_recipes.compress.quantize import check_report_fields, check_spec

    check_spec(spec)
    if args.calibration_dataset_path:
        check_dataset_path(args.calibration_dataset_path, "calibration")
    if spec.method == "gptq" and not args.calibration_dataset_path:
        raise UserError("method gptq calibrates on text: set calibration_dataset_path")
    check_report_fields(args)
    return (args,)


def _check_source(args: QuantizeArguments, source) -> None:
    from llm_recipes.export.folder import merge_refusal, quantization_of

    if source.kind == "quantized":
        raise UserError(
            f"{args.model_name_or_path} is already quantized ({source.quantization}); quantize the full-precision "
            "model it came from"
        )
    if source.kind == "adapter":
        check_model_path(source.base_model, "base_model_name_or_path")
        if source.config is not None and quantization_of(source.config):
            raise merge_refusal(source.base_model, quantization_of(source.config), QUANTIZE_REMEDY)


def quantization_spec(args: QuantizeArguments):
    from llm_recipes.compress.quantize import QuantizationSpec

    return QuantizationSpec(
        method=args.method,
        bnb_4bit_quant_type=args.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=args.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=args.bnb_4bit_compute_dtype,
        gptq_bits=args.gptq_bits,
        gptq_group_size=args.gptq_group_size,
    )


@stage_main
def main(args: QuantizeArguments) -> dict:
    from llm_recipes.compress.quantize import format_extras, quantize_folder, report_rows
    from llm_recipes.compress.report import comparison_summary, format_comparison
    from llm_recipes.export.folder import inspect_source, load_tokenizer
    from llm_recipes.runs.manifest import StageRun, write_json_atomically
    from llm_recipes.runs.outputs import written_in_place
    from llm_recipes.runs.summary import format_summary

    output = Path(args.output_dir).expanduser()
    source = inspect_source(args.model_name_or_path, args.base_model_name_or_path)
    spec = quantization_spec(args)
    # written beside the output and renamed into place at the end: a crash never leaves a folder that looks whole
    run = StageRun.begin("quantize", output, {"script": args})
    with written_in_place(output) as staging:
        run.output_dir = staging
        run.inputs = {"model": args.model_name_or_path}
        tokenizer = load_tokenizer(args.model_name_or_path, args.trust_remote_code)
        data = load_report_data(args)  # the protocol's data and calibration text, before any model loads

        # Quantize: from the source folder itself, or from the adapter merged into its base and saved
        source_model, full_precision = load_full_precision(args, source, tokenizer, staging)
        if source.kind == "adapter":
            run.inputs["base_model"] = source.base_model
        quantized = quantize_folder(
            full_precision,
            staging,
            spec,
            max_shard_size=args.max_shard_size,
            calibration_texts=data.get("calibration"),
            tokenizer=tokenizer,
        )
        tokenizer.save_pretrained(staging)

        report = quantization_report(args, spec, source_model, quantized, tokenizer, data, full_precision, staging)
        if full_precision.parent == staging:
            shutil.rmtree(full_precision)
        write_json_atomically(staging / COMPRESSION_REPORT, report)
        summary = _summary(args, spec, report)
        summary["seconds"] = round(run.seconds, 1)
        run.write({"script": args}, {**summary, "protocol measures": comparison_summary(report["comparison"])})
    print(format_summary(f"quantization finished: {output}", summary))
    print(format_comparison(report["comparison"], f"{spec.describe()} vs source"))
    if rows := report_rows(report):
        print(format_extras(rows))
    for note in report["notes"]:
        print(f"note: {note}")
    return summary


def load_report_data(args: QuantizeArguments) -> dict[str, Any]:
    """The evaluation protocol with its data read (the report's); calibration texts for GPTQ."""
    from llm_recipes.compress.report import protocol_from_fields
    from llm_recipes.evaluation.data import load_eval_data
    from llm_recipes.evaluation.protocol import Protocol

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


def load_full_precision(args: QuantizeArguments, source, tokenizer, staging: Path) -> tuple[Any, Path]:
    """(the source model in full precision, the folder it is saved in). An adapter is merged into its base and the
    merged model saved beside the output first: quantization loads a saved folder."""
    from llm_recipes.export.folder import load_full_model, merge_adapter, parse_shard_size, save_model_folder

    if source.kind != "adapter":
        return load_full_model(source, "auto", args.trust_remote_code), Path(args.model_name_or_path).expanduser()
    merged = merge_adapter(source, tokenizer, args.dtype, args.trust_remote_code)
    folder = staging / ".full-precision"
    save_model_folder(merged, tokenizer, folder, parse_shard_size(args.max_shard_size))
    return merged, folder


def quantization_report(
    args: QuantizeArguments, spec, source_model, quantized, tokenizer, data, source_dir: Path, quantized_dir: Path
) -> dict[str, Any]:
    """The comparison with the source on the protocol, the logit difference and the reload check."""
    from llm_recipes.compress.quantize import compare_with_source, sample_inputs

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


def _summary(args: QuantizeArguments, spec, report: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"source": args.model_name_or_path, "method": spec.describe()}
    if "logit_difference" in report:
        summary["max |logit difference|"] = report["logit_difference"]["max"]
        summary["reload gives same outputs"] = report["reload"]["identical_outputs"]
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args, first_process_only=True)
