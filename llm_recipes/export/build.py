"""The export folder's model files, written into a staging folder from what the source is (an adapter merged or
copied, quantized weights copied, a full model resharded, requantized or converted to GGUF), and the table the
stage ends with (`ExportSummary`). The card and the manifest are the recipe's, written after these."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_recipes.export.config import ExportArguments
from llm_recipes.export.folder import (
    copy_saved_model,
    load_full_model,
    load_tokenizer,
    merge_adapter,
    nf4_cpu_problems,
    save_model_folder,
    save_quantized,
    weight_files,
    write_gguf,
)
from llm_recipes.export.source import parse_shard_size
from llm_recipes.models.loading import count_parameters


@dataclass
class ExportSummary:
    """What was exported and how: a copied adapter or quantized model has its weight files only; a loaded model
    also its size, dtype, shards and stop tokens (and quantization, GGUF file); the run adds seconds and the push."""

    source: str
    exported: str
    weight_files: int = 0
    parameters: int | None = None
    dtype: str | None = None
    quantization: str | None = None
    max_shard_size: str | int | None = None
    gguf_file: str | None = None
    generation_stops_at: str | None = None
    seconds: float | None = None
    pushed_to: str | None = None

    def as_summary(self) -> dict[str, Any]:
        rows: dict[str, Any] = {
            "source": self.source,
            "exported": self.exported,
            "parameters": self.parameters,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "weight files": self.weight_files,
            "max shard size": self.max_shard_size,
            "gguf file": self.gguf_file,
            "generation stops at": self.generation_stops_at,
            "seconds": None if self.seconds is None else round(self.seconds, 1),
            "pushed to": self.pushed_to,
        }
        return {name: value for name, value in rows.items() if value is not None}


def export_folder(args: ExportArguments, source: Any, staging: Path) -> ExportSummary:
    """Write the model files into `staging`; returns what was exported."""
    shard_size = parse_shard_size(args.max_shard_size)
    tokenizer = load_tokenizer(args.model_name_or_path, args.trust_remote_code)
    described = f"{source.kind} {args.model_name_or_path}"
    if source.kind == "adapter" and not args.merge_adapter:
        files = copy_saved_model(source, tokenizer, staging)
        exported = f"{source.adapter_method} adapter for {source.base_model} (not merged)"
        return ExportSummary(described, exported, weight_files=len(files))
    if source.kind == "quantized":
        files = copy_saved_model(source, tokenizer, staging)
        exported = f"{source.quantization} model (weights copied as saved)"
        return ExportSummary(described, exported, weight_files=len(files))

    if source.kind == "adapter":
        model = merge_adapter(source, tokenizer, args.dtype, args.trust_remote_code)
        summary = ExportSummary(described, f"{source.adapter_method} adapter merged into {source.base_model}")
    else:
        model = load_full_model(source, args.dtype, args.trust_remote_code)
        summary = ExportSummary(described, "full model")
    _, summary.parameters = count_parameters(model)
    summary.dtype = str(model.dtype).replace("torch.", "")

    if args.quantization == "none":
        files = save_model_folder(model, tokenizer, staging, shard_size)
    else:
        full_precision = staging / ".full-precision"
        save_model_folder(model, tokenizer, full_precision, shard_size)
        quantized = save_quantized(full_precision, staging, args.quantization, shard_size)
        shutil.rmtree(full_precision)
        tokenizer.save_pretrained(staging)
        files = weight_files(staging)
        summary.quantization = f"{args.quantization} (bitsandbytes)"
        if args.quantization == "nf4" and (problems := nf4_cpu_problems(quantized)):
            print(
                f"note: bitsandbytes' CPU 4-bit kernel needs output widths divisible by 32; {len(problems)} layers "
                f"(e.g. {problems[0]}) are not, so this nf4 export runs on GPU (or CPUs without AVX512-BF16) only"
            )
    summary.weight_files = len(files)
    summary.max_shard_size = args.max_shard_size
    if args.gguf_type != "none":
        report = write_gguf(model, tokenizer, staging / f"model-{args.gguf_type}.gguf", args.gguf_type)
        summary.gguf_file = f"{report.path.name} ({report.bytes:,} bytes, {report.tensors} tensors)"
    eos = model.generation_config.eos_token_id
    summary.generation_stops_at = ", ".join(
        tokenizer.convert_ids_to_tokens(i) for i in (eos if isinstance(eos, list) else [eos])
    )
    return summary
