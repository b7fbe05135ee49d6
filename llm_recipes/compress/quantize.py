"""Quantizing a full-precision model into a folder `from_pretrained` loads, and measuring what it cost.

Every backend is transformers' own quantization integration, so the folder written is a plain Hugging Face model
folder with a `quantization_config` in its config.json: bitsandbytes (8-bit LLM.int8(), 4-bit NF4/FP4 with optional
double quantization and a chosen compute dtype), torchao (int8 weight-only, and dynamic int8 activations with int8
weights, the CPU deployment choices) and GPTQ (through optimum + gptqmodel, calibrated on text, CUDA only). Loading
and saving go through `llm_recipes.export.folder.save_quantized`, the export stage's path. What is ours is choosing and
checking the backend before any weights load, and the measurements beside the evaluation protocol's comparison
(`llm_recipes.compress.report`): the logit difference against the source on sample inputs and the check that
the folder, reloaded, gives the outputs the quantized model gave before saving.

Where each backend runs (bitsandbytes 0.50, torchao 0.18, transformers 5.24):

- bitsandbytes int8: CPU and CUDA.
- bitsandbytes 4-bit: CUDA; on a CPU only where every quantized layer's output width is a multiple of 32 (its CPU
  kernel packs rows in blocks of 32 -- `llm_recipes.export.folder.nf4_cpu_problems`). Otherwise the folder is still
  written and valid, but the report cannot measure it on the CPU and says so.
- torchao int8 weight-only and dynamic int8: CPU and CUDA. torchao's int4 weight-only needs CUDA kernels (tinygemm)
  and is not offered.
- GPTQ: CUDA with `pip install optimum gptqmodel`; refused on a CPU before anything loads.

A reloaded bitsandbytes or torchao folder gives the same outputs bit for bit (the quantized tensors are stored as
they are). GPTQ reloads through whichever gptqmodel kernel suits the device, which may round differently from the
kernel used right after quantizing, so the report gives the difference rather than expecting none. Already
quantized folders cannot be quantized again, nor re-saved: transformers 5.24 cannot save a model it loaded
pre-quantized.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, GPTQConfig, TorchAoConfig

from llm_recipes.compress.config import QuantizeArguments
from llm_recipes.compress.prune import token_windows
from llm_recipes.compress.report import compare_on_protocol, protocol_from_fields
from llm_recipes.configs import check_model_path
from llm_recipes.errors import UserError
from llm_recipes.evaluation.protocol import check_protocol_paths
from llm_recipes.export.folder import nf4_cpu_problems, save_quantized
from llm_recipes.export.source import merge_refusal, quantization_of, read_json, saved_dtype
from llm_recipes.runs.summary import format_number

QUANTIZATION_METHODS = ("bnb_int8", "bnb_4bit", "torchao_int8_weight_only", "torchao_int8_dynamic", "gptq")
BNB_4BIT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")
GPTQ_BITS = (2, 3, 4, 8)
# the assertion bitsandbytes' CPU 4-bit kernel raises for output widths it cannot pack
BNB_CPU_KERNEL_ASSERTION = "divisible by block_n"


@dataclass
class QuantizationSpec:
    """A quantization method and its settings, as the quantize stage's config names them."""

    method: str
    bnb_4bit_quant_type: str = "nf4"
    bnb_4bit_use_double_quant: bool = False
    bnb_4bit_compute_dtype: str = "auto"
    gptq_bits: int = 4
    gptq_group_size: int = 128

    def describe(self) -> str:
        if self.method == "bnb_int8":
            return "bitsandbytes int8 (LLM.int8)"
        if self.method == "bnb_4bit":
            double = ", double quantization" if self.bnb_4bit_use_double_quant else ""
            dtype = "the saved dtype" if self.bnb_4bit_compute_dtype == "auto" else self.bnb_4bit_compute_dtype
            return f"bitsandbytes 4-bit {self.bnb_4bit_quant_type}{double}, computing in {dtype}"
        if self.method == "torchao_int8_weight_only":
            return "torchao int8 weight-only"
        if self.method == "torchao_int8_dynamic":
            return "torchao dynamic int8 activations, int8 weights"
        return f"GPTQ {self.gptq_bits}-bit, group size {self.gptq_group_size}"


def quantization_spec(args: QuantizeArguments) -> QuantizationSpec:
    """The spec a quantize config names."""
    return QuantizationSpec(
        method=args.method,
        bnb_4bit_quant_type=args.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=args.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=args.bnb_4bit_compute_dtype,
        gptq_bits=args.gptq_bits,
        gptq_group_size=args.gptq_group_size,
    )


def check_spec(spec: QuantizationSpec) -> None:
    """The settings, and whether this machine has what the backend needs. Raises UserError, one line."""
    if spec.method not in QUANTIZATION_METHODS:
        raise UserError(f"method: unknown '{spec.method}'; choose from {', '.join(QUANTIZATION_METHODS)}")
    if spec.bnb_4bit_quant_type not in BNB_4BIT_TYPES:
        raise UserError(f"bnb_4bit_quant_type: '{spec.bnb_4bit_quant_type}'; choose nf4 or fp4")
    if spec.bnb_4bit_compute_dtype not in COMPUTE_DTYPES:
        raise UserError(f"bnb_4bit_compute_dtype: '{spec.bnb_4bit_compute_dtype}'; choose {', '.join(COMPUTE_DTYPES)}")
    if spec.method.startswith("bnb") and not _installed("bitsandbytes"):
        raise UserError(f"method {spec.method} needs bitsandbytes: pip install bitsandbytes")
    if spec.method.startswith("torchao") and not _installed("torchao"):
        raise UserError(f"method {spec.method} needs torchao: pip install torchao")
    if spec.method == "gptq":
        if spec.gptq_bits not in GPTQ_BITS:
            raise UserError(f"gptq_bits: {spec.gptq_bits}; choose from {', '.join(map(str, GPTQ_BITS))}")
        if spec.gptq_group_size != -1 and spec.gptq_group_size < 1:
            raise UserError(f"gptq_group_size: {spec.gptq_group_size} must be >= 1 (or -1 for one group per row)")
        if not torch.cuda.is_available():
            raise UserError(
                "method gptq quantizes on a CUDA GPU and none is available here; on a CPU use bnb_int8 or "
                "torchao_int8_dynamic"
            )
        missing = [name for name in ("optimum", "gptqmodel") if not _installed(name)]
        if missing:
            raise UserError(f"method gptq needs {' and '.join(missing)}: pip install {' '.join(missing)}")


# what to do instead of merging into quantized weights, in this stage's terms
QUANTIZE_REMEDY = (
    "merge the adapter into the full-precision base first (base_model_name_or_path: the unquantized model), "
    "then quantize the merged model"
)


def check_source(args: QuantizeArguments, source: Any) -> None:
    """The folder to quantize (`export.source.inspect_source`) holds full-precision weights: not a model quantized
    already, nor an adapter trained on a quantized base (merging into quantized weights loses them)."""

    if source.kind == "quantized":
        raise UserError(
            f"{args.model_name_or_path} is already quantized ({source.quantization}); quantize the full-precision "
            "model it came from"
        )
    if source.kind == "adapter":
        check_model_path(source.base_model, "base_model_name_or_path")
        if source.config is not None and quantization_of(source.config):
            raise merge_refusal(source.base_model, quantization_of(source.config), QUANTIZE_REMEDY)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def compute_dtype(spec: QuantizationSpec, saved_dtype: str) -> torch.dtype:
    """The dtype 4-bit layers compute in: the one asked for, or the model's saved dtype for auto."""
    name = saved_dtype if spec.bnb_4bit_compute_dtype == "auto" else spec.bnb_4bit_compute_dtype
    return getattr(torch, name)


def quantization_config(
    spec: QuantizationSpec,
    *,
    saved_dtype: str = "float32",
    calibration_texts: Sequence[str] | None = None,
    tokenizer: Any = None,
) -> Any:
    """The transformers quantization config for `spec` (GPTQ calibrates on `calibration_texts` with `tokenizer`)."""

    check_spec(spec)
    if spec.method == "bnb_int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if spec.method == "bnb_4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=spec.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=spec.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=compute_dtype(spec, saved_dtype),
        )
    if spec.method.startswith("torchao"):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

        weights = Int8WeightOnlyConfig() if spec.method == "torchao_int8_weight_only" else None
        return TorchAoConfig(weights or Int8DynamicActivationInt8WeightConfig())

    if not calibration_texts:
        raise UserError("method gptq calibrates on text: set calibration_dataset_path")
    return GPTQConfig(
        bits=spec.gptq_bits, group_size=spec.gptq_group_size, dataset=list(calibration_texts), tokenizer=tokenizer
    )


def quantize_folder(
    full_precision: str | Path,
    output: str | Path,
    spec: QuantizationSpec,
    *,
    max_shard_size: int | str = "5GB",
    calibration_texts: Sequence[str] | None = None,
    tokenizer: Any = None,
) -> Any:
    """Load a saved full-precision model folder quantized as `spec` says, save it to `output` in the backend's
    serialization (safetensors), and return the quantized model (on the GPU when there is one)."""

    full_precision = Path(full_precision)
    config = quantization_config(
        spec,
        saved_dtype=saved_dtype(read_json(full_precision / "config.json")),
        calibration_texts=calibration_texts,
        tokenizer=tokenizer,
    )
    with quiet_backend_warnings():
        return save_quantized(full_precision, Path(output), None, max_shard_size, quantization_config=config)


@contextmanager
def quiet_backend_warnings() -> Iterator[None]:
    """bitsandbytes' int8 layers log on every call that float32 inputs are cast to float16 for the matmul: true,
    expected, and hundreds of lines in a report."""
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# --------------------------------------------------------------------------------------------------------------
# Measurements beside the comparison report


def cannot_run_reason(model: Any, sample: torch.Tensor) -> str | None:
    """Why the quantized model cannot run on this machine (None when it can): tried on a tiny input. Only the
    known limit of bitsandbytes' CPU 4-bit kernel is turned into a reason; anything else is a real error."""

    try:
        with torch.no_grad(), quiet_backend_warnings():
            model(input_ids=sample[:1, :4].to(_device(model)))
    except AssertionError as err:
        problems = nf4_cpu_problems(model)
        if BNB_CPU_KERNEL_ASSERTION not in str(err) or not problems:
            raise
        return (
            f"bitsandbytes' CPU 4-bit kernel needs output widths divisible by 32 and {len(problems)} layers (e.g. "
            f"{problems[0]}) are not: the folder is valid and runs on a GPU, but cannot be measured on this CPU"
        )
    return None


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _logits(model: Any, input_ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    with quiet_backend_warnings():
        parts = [
            model(input_ids=input_ids[begin : begin + batch_size].to(_device(model))).logits.float().cpu()
            for begin in range(0, len(input_ids), batch_size)
        ]
    return torch.cat(parts)


@dataclass
class LogitDifference:
    max: float  # largest |difference| of any logit
    mean: float  # mean |difference| over every logit of every position
    top1_agreement: float  # share of positions where both models predict the same next token

    def as_dict(self) -> dict[str, float]:
        return {"max": self.max, "mean": self.mean, "top1_agreement": self.top1_agreement}


def logit_difference(reference: Any, candidate: Any, input_ids: torch.Tensor, batch_size: int = 8) -> LogitDifference:
    """How far `candidate`'s logits are from `reference`'s on the same inputs (each model on its own device)."""
    modes = [(model, model.training) for model in (reference, candidate)]
    for model, _ in modes:
        model.eval()
    expected, actual = _logits(reference, input_ids, batch_size), _logits(candidate, input_ids, batch_size)
    for model, training in modes:
        model.train(training)
    difference = (expected - actual).abs()
    agreement = (expected.argmax(-1) == actual.argmax(-1)).float().mean()
    return LogitDifference(float(difference.max()), float(difference.mean()), float(agreement))


def reload_check(model: Any, folder: str | Path, input_ids: torch.Tensor, batch_size: int = 8) -> dict[str, Any]:
    """Load the saved folder with `from_pretrained` and compare its outputs with the model's before saving."""

    device = _device(model)
    with quiet_backend_warnings():
        reloaded = AutoModelForCausalLM.from_pretrained(
            folder, device_map={"": device.index or 0} if device.type == "cuda" else None, use_safetensors=True
        )
    difference = logit_difference(model, reloaded, input_ids, batch_size)
    return {
        "reloaded_with": f"AutoModelForCausalLM.from_pretrained ({type(reloaded).__name__})",
        "identical_outputs": difference.max == 0.0,
        "max_logit_difference": difference.max,
    }


def sample_inputs(tokenizer: Any, texts: Sequence[str], *, count: int, length: int, seed: int = 0) -> torch.Tensor:
    """[count, length] token ids for the logit comparison: windows of the eval texts, or seeded random ids when
    there are too few texts for one window."""

    if texts:
        try:
            return token_windows(tokenizer, texts, count=count, length=length, seed=seed)
        except UserError:
            pass  # too little text for one window
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, len(tokenizer), (count, length), generator=generator)


def compare_with_source(
    protocol: Any,
    source: Any,
    quantized: Any,
    tokenizer: Any,
    samples: torch.Tensor,
    *,
    source_dir: str | Path,
    quantized_dir: str | Path,
    source_name: str | None = None,
) -> dict[str, Any]:
    """Both models on the evaluation protocol (`compression_report.compare_on_protocol`: the evaluate stage's
    measures), plus the logit difference against the source on `samples` and the reload check of `quantized_dir`.
    Where the quantized model cannot run on this machine, only what needs no forward pass is measured, and a note
    says why.

    Returns {"comparison": {"protocol", "source", "compressed"}, "logit_difference", "reload", "notes"}.
    """

    reason = cannot_run_reason(quantized, samples)
    with quiet_backend_warnings():
        comparison = compare_on_protocol(
            protocol,
            source,
            quantized,
            tokenizer,
            source_dir=source_dir,
            compressed_dir=quantized_dir,
            source_name=source_name,
            compressed_cannot_run=reason,
        )
    report: dict[str, Any] = {"comparison": comparison, "notes": [reason] if reason else []}
    if reason:
        return report
    report["logit_difference"] = logit_difference(source, quantized, samples).as_dict()
    report["reload"] = reload_check(quantized, quantized_dir, samples)
    if not report["reload"]["identical_outputs"] and quantization_method_of(quantized) == "gptq":
        report["notes"].append(
            "GPTQ reloads through the kernel gptqmodel picks for the device, which may round differently"
        )
    return report


def quantization_method_of(model: Any) -> str | None:
    return quantization_of(model.config)


def report_rows(report: dict[str, Any]) -> dict[str, Any]:
    """The quantization-specific lines printed under the comparison table."""
    rows: dict[str, Any] = {}
    if "logit_difference" in report:
        difference = report["logit_difference"]
        rows["max |logit difference| vs source"] = difference["max"]
        rows["mean |logit difference| vs source"] = difference["mean"]
        rows["same next token as source (share)"] = difference["top1_agreement"]
    if "reload" in report:
        reload = report["reload"]
        rows["reloaded from disk"] = (
            "same outputs as before saving"
            if reload["identical_outputs"]
            else f"outputs differ by up to {reload['max_logit_difference']:.3g}"
        )
    return rows


def check_report_fields(args: Any) -> None:
    """The config check of a quantize or prune report (`CompressionEvalArguments`): its protocol, or the report fields
    read as one, with their data and reward model there (or made by a pipeline stage before)."""

    check_protocol_paths(protocol_from_fields(args))


def format_extras(rows: dict[str, Any]) -> str:
    """Extra report lines (label -> value), aligned like the comparison table."""

    width = max((len(label) for label in rows), default=0)
    return "\n".join(f"{label:<{width}}  {format_number(value)}" for label, value in rows.items())
