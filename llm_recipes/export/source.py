"""What is being exported, read from a stage output's JSON files only: the kind of folder (full model, quantized
model or PEFT adapter), its base and quantization, the shard size and what the GGUF writer handles.

The export and quantize stages check their configs with these before anything is loaded, so this module imports
no torch (export/folder.py, which loads and writes the weights, does).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.utils.hub import convert_file_size_to_int

try:  # transformers' table of llama.cpp's pre-tokenizer names and their split regexes (absent in older versions)
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
except ImportError:
    GGUF_PRE_TOKENIZER_SPLITS = {}

from llm_recipes.configs.paths import locate_recorded_path
from llm_recipes.errors import UserError

ADAPTER_CONFIG = "adapter_config.json"


GGUF_FILE_TYPES = ("f32", "f16", "q8_0")


@dataclass
class ModelSource:
    """A stage output as found on disk, before anything is loaded."""

    path: str
    kind: str  # "model" (full precision), "quantized" (a saved bnb/other quantized model) or "adapter"
    base_model: str | None = None  # adapters: the model they were trained on
    adapter_method: str | None = None  # adapters: "LoRA", "DoRA", ...
    quantization: str | None = None  # quantized models: "int8", "nf4", ...
    config: dict[str, Any] | None = None  # config.json of the model (of the base, for adapters), when local


def read_json(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None


def local_config(model: str) -> dict[str, Any] | None:
    """config.json of a local model folder; None for a Hub id (it cannot be read without the network)."""
    path = Path(model).expanduser() / "config.json"
    return read_json(path) if path.is_file() else None


def quantization_of(config: Any) -> str | None:
    """How a model's weights are quantized, from its config (a dict or a PretrainedConfig); None if they are not."""
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    if quantization is None and not isinstance(config, dict):
        quantization = getattr(config, "quantization_config", None)
    if not quantization:
        return None
    if not isinstance(quantization, dict):
        quantization = quantization.to_dict()
    if quantization.get("load_in_4bit"):
        return quantization.get("bnb_4bit_quant_type") or "4bit"
    if quantization.get("load_in_8bit"):
        return "int8"
    return str(quantization.get("quant_method") or "quantized")


def inspect_source(path: str, base_override: str | None = None) -> ModelSource:
    """Classify a stage output folder (full model, quantized model or PEFT adapter) from its JSON files only."""
    folder = Path(path).expanduser()
    if (folder / ADAPTER_CONFIG).is_file():
        adapter = read_json(folder / ADAPTER_CONFIG)
        base = base_override or adapter.get("base_model_name_or_path")
        if not base:
            raise UserError(f"{folder / ADAPTER_CONFIG} names no base model: set base_model_name_or_path")
        if not base_override:
            located = locate_recorded_path(base, folder)
            base = str(located) if located.exists() else base
        method = "DoRA" if adapter.get("use_dora") else str(adapter.get("peft_type", "adapter")).replace("LORA", "LoRA")
        return ModelSource(str(path), "adapter", base_model=base, adapter_method=method, config=local_config(base))
    config = local_config(str(folder))
    if config is None:
        raise UserError(f"model_name_or_path: {path} has no config.json or adapter_config.json")
    quantization = quantization_of(config)
    return ModelSource(str(path), "quantized" if quantization else "model", quantization=quantization, config=config)


EXPORT_REMEDY = (
    "export from the full-precision base instead (base_model_name_or_path: the unquantized model), or set "
    "merge_adapter: false"
)


def merge_refusal(base: str, quantization: str, remedy: str = EXPORT_REMEDY) -> UserError:
    """The refusal to merge an adapter into quantized weights; `remedy` says what to do instead in this stage."""
    return UserError(
        f"cannot merge the adapter into {base}: its weights are quantized ({quantization}), and merging into "
        f"quantized weights rounds the adapter's update away (precision is lost); {remedy}"
    )


def parse_shard_size(value: str | int) -> int:
    """'500MB', '5GB', '2GiB' or a byte count -> bytes."""

    text = str(value).strip()
    try:
        size = int(text) if text.isdigit() else convert_file_size_to_int(text)
    except ValueError:
        raise UserError(f"max_shard_size: {value!r} is not a size; write e.g. 500MB, 5GB or 2GiB") from None
    if size <= 0:
        raise UserError(f"max_shard_size: {value!r} must be > 0")
    return size


def saved_dtype(config: dict[str, Any] | None) -> str:
    """The dtype a model was saved in, from its config.json (float32 when it does not say)."""
    if not config:
        return "float32"
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return name if name in ("float32", "float16", "bfloat16") else "float32"


def gguf_installed() -> bool:

    return importlib.util.find_spec("gguf") is not None


def check_gguf_supported(config: dict[str, Any] | None, tokenizer_json: dict[str, Any] | None) -> None:
    """What the GGUF writer handles, checked on the JSON files before any weights are loaded."""
    if not gguf_installed():
        raise UserError("gguf_type needs the `gguf` package: pip install gguf")
    if config is not None:
        if config.get("model_type") != "llama":
            raise UserError(
                f"gguf_type: the GGUF writer handles Llama-architecture models; this one is "
                f"'{config.get('model_type')}' (use llama.cpp's convert_hf_to_gguf.py for it)"
            )
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        if rope.get("rope_type", "default") != "default":
            raise UserError(f"gguf_type: rope scaling '{rope['rope_type']}' is not supported by the GGUF writer")
    if tokenizer_json is not None:
        gguf_pre_tokenizer(tokenizer_json)


def gguf_pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name (`tokenizer.ggml.pre`) for how a byte-level BPE tokenizer splits text before merging."""
    model_type = (tokenizer_json.get("model") or {}).get("type")
    if model_type != "BPE":
        raise UserError(
            f"gguf_type: the GGUF writer handles byte-level BPE tokenizers; this one is {model_type or 'unknown'}"
        )
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers") or []
    if pre.get("type") == "Sequence" and len(steps) == 2 and steps[0].get("type") == "Split":
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
            if regex == pattern:
                return name
    raise UserError("gguf_type: the tokenizer's pre-tokenizer is not one llama.cpp knows; cannot write its GGUF")
