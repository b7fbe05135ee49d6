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

from llm_recipes.compress.config import QuantizeArguments
from llm_recipes.compress.quantize import (
    check_report_fields,
    check_source,
    check_spec,
    format_extras,
    quantization_spec,
    quantize_folder,
    report_rows,
)
from llm_recipes.compress.quantize_build import load_full_precision, load_report_data, quantization_report
from llm_recipes.compress.report import COMPRESSION_REPORT, comparison_summary, format_comparison
from llm_recipes.compress.summaries import QuantizeSummary
from llm_recipes.configs import check_dataset_path, check_model_path, is_planned, looks_local, parse_config, run_recipe
from llm_recipes.errors import UserError
from llm_recipes.export.folder import load_tokenizer
from llm_recipes.export.source import inspect_source, parse_shard_size
from llm_recipes.runs.manifest import StageRun, write_json_atomically
from llm_recipes.runs.outputs import stage_main, written_in_place
from llm_recipes.runs.summary import format_summary


def parse_args(argv: Sequence[str] | None = None) -> tuple[QuantizeArguments]:
    """Parse and check the config: everything a user can get wrong fails here, before a model is loaded."""

    (args,) = parse_config((QuantizeArguments,), argv)
    check_model_path(args.model_name_or_path)
    if not looks_local(args.model_name_or_path):
        raise UserError(f"model_name_or_path: {args.model_name_or_path} must be a local model or adapter folder")
    if Path(args.output_dir).expanduser().resolve() == Path(args.model_name_or_path).expanduser().resolve():
        raise UserError("output_dir must differ from model_name_or_path: the quantized model is a new folder")
    parse_shard_size(args.max_shard_size)

    if not is_planned(args.model_name_or_path):
        check_source(args, inspect_source(args.model_name_or_path, args.base_model_name_or_path))
    spec = quantization_spec(args)
    check_spec(spec)
    if args.calibration_dataset_path:
        check_dataset_path(args.calibration_dataset_path, "calibration")
    if spec.method == "gptq" and not args.calibration_dataset_path:
        raise UserError("method gptq calibrates on text: set calibration_dataset_path")
    check_report_fields(args)
    return (args,)


@stage_main
def main(args: QuantizeArguments) -> dict:
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
        summary = QuantizeSummary.of_report(args.model_name_or_path, spec.describe(), report, run.seconds).as_summary()
        run.write({"script": args}, {**summary, "protocol measures": comparison_summary(report["comparison"])})
    print(format_summary(f"quantization finished: {output}", summary))
    print(format_comparison(report["comparison"], f"{spec.describe()} vs source"))
    if rows := report_rows(report):
        print(format_extras(rows))
    for note in report["notes"]:
        print(f"note: {note}")
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args, first_process_only=True)
