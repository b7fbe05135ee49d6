"""Turning a stage's output into a deployable folder.

Adapters are merged into their full-precision base with PEFT's `merge_and_unload`; weights are written by
transformers' `save_pretrained` as safetensors shards; the tokenizer goes with its chat template, and the
generation config is made to stop at the tokenizer's EOS. Optionally the weights are saved quantized with
bitsandbytes (transformers' own bnb serialization, so `from_pretrained`/`pipeline` load them unchanged).

The GGUF writer is ours: llama.cpp's converter (`convert_hf_to_gguf.py`) is a script in the llama.cpp repository,
not part of the `gguf` package, and pulls in the whole repository. We write the file with the package's own
`GGUFWriter` and `TensorNameMap`, following the converter's conventions for Llama: Q/K rows permuted into its
rotary layout, norms kept in f32, a byte-level BPE vocabulary stored as tokenizer model `gpt2`. transformers
reads the file back with `from_pretrained(..., gguf_file=...)`, which is how the tests check it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, GenerationConfig

from llm_recipes.errors import UserError
from llm_recipes.export.source import (
    ADAPTER_CONFIG,
    GGUF_FILE_TYPES,
    ModelSource,
    check_gguf_supported,
    gguf_pre_tokenizer,
    merge_refusal,
    quantization_of,
    read_json,
    saved_dtype,
)

# Files that make up a saved model or adapter besides the tokenizer (which is loaded and saved again instead)
WEIGHT_FILE_PATTERNS = ("*.safetensors", "*.safetensors.index.json")
MODEL_FILES = ("config.json", "generation_config.json", ADAPTER_CONFIG)
# bitsandbytes 0.50's CPU 4-bit inference kernel packs output rows in blocks of this many (see `nf4_cpu_problems`)
BNB_CPU_BLOCK_N = 32


def refuse_quantized_base(model: Any, name: str) -> None:
    """A loaded base model must be in full precision before an adapter is merged into it."""
    quantization = quantization_of(model.config)
    if quantization is None and getattr(model, "is_loaded_in_4bit", False):
        quantization = "4bit"
    if quantization is None and getattr(model, "is_loaded_in_8bit", False):
        quantization = "int8"
    if quantization is not None:
        raise merge_refusal(name, quantization)


# --------------------------------------------------------------------------------------------------------------
# Loading and merging


def torch_dtype_for(name: str, fallback: Any = None) -> Any:
    if name == "auto":
        return fallback
    return getattr(torch, name)


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def load_full_model(source: ModelSource, dtype: str, trust_remote_code: bool = False) -> Any:
    """A full-precision model in the dtype asked for (auto: as saved)."""

    return AutoModelForCausalLM.from_pretrained(
        source.path,
        dtype=torch_dtype_for(dtype, "auto"),
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )


def merge_adapter(source: ModelSource, tokenizer: Any, dtype: str, trust_remote_code: bool = False) -> Any:
    """The base model with the adapter merged into its weights, in `dtype` (auto: the base's saved dtype).

    The merge runs in float32 whatever the target dtype, so the low-rank update is added at full precision and
    rounded once. The base gets the adapter's vocabulary first: SFT may have added chat tokens, whose embedding
    and LM-head rows travel with the adapter.
    """

    base_quantization = quantization_of(source.config) if source.config else None
    if base_quantization:
        raise merge_refusal(source.base_model, base_quantization)
    base = AutoModelForCausalLM.from_pretrained(
        source.base_model, dtype=torch.float32, trust_remote_code=trust_remote_code, use_safetensors=True
    )
    refuse_quantized_base(base, source.base_model)
    if len(tokenizer) > base.get_input_embeddings().num_embeddings:
        base.resize_token_embeddings(len(tokenizer))
    merged = PeftModel.from_pretrained(base, source.path).merge_and_unload()
    target = dtype if dtype != "auto" else saved_dtype(source.config)
    return merged.to(torch_dtype_for(target))


# --------------------------------------------------------------------------------------------------------------
# Writing the folder


def ensure_stop_tokens(generation_config: Any, tokenizer: Any) -> list[int]:
    """Make generation stop at the tokenizer's EOS (keeping any stop tokens already set) and pad with a known id.

    Returns the EOS ids. Without an EOS a deployed model would always run to max_new_tokens.
    """
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token, so generation could never stop; give it one (eos_token)")
    existing = generation_config.eos_token_id
    existing = list(existing) if isinstance(existing, (list, tuple)) else [existing]
    eos_ids = list(dict.fromkeys([tokenizer.eos_token_id, *(i for i in existing if i is not None)]))
    generation_config.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else generation_config.pad_token_id
    generation_config.pad_token_id = pad if pad is not None else eos_ids[0]
    return eos_ids


def save_model_folder(model: Any, tokenizer: Any, folder: Path, max_shard_size: int) -> list[str]:
    """Weights as safetensors shards, config, generation config and tokenizer; returns the weight file names."""
    ensure_stop_tokens(model.generation_config, tokenizer)
    model.config.eos_token_id = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(folder)
    return weight_files(folder)


def weight_files(folder: Path) -> list[str]:
    return sorted(p.name for pattern in WEIGHT_FILE_PATTERNS for p in folder.glob(pattern))


def copy_saved_model(source: ModelSource, tokenizer: Any, folder: Path) -> list[str]:
    """Copy a folder whose weights must not be re-saved (an adapter, or already quantized weights) as it is,
    with the tokenizer saved again and the generation config made to stop. Returns the weight file names.

    Quantized weights are copied rather than loaded and saved: transformers 5.24 cannot save a model it loaded
    pre-quantized (the bitsandbytes weight conversion has no reverse), and copying loses nothing.
    """

    src = Path(source.path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, folder / name)
    for pattern in WEIGHT_FILE_PATTERNS:
        for path in src.glob(pattern):
            shutil.copy2(path, folder / path.name)
    tokenizer.save_pretrained(folder)
    generation = GenerationConfig.from_pretrained(src) if (src / "generation_config.json").is_file() else None
    generation = generation or GenerationConfig()
    ensure_stop_tokens(generation, tokenizer)
    generation.save_pretrained(folder)
    return weight_files(folder)


def bnb_config(method: str, compute_dtype: Any) -> Any:
    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if method == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    raise UserError(f"quantization: unknown method '{method}'; choose int8 or nf4")


def save_quantized(
    full_precision: Path, folder: Path, method: str | None, max_shard_size: int, quantization_config: Any = None
) -> Any:
    """Load the saved full-precision folder quantized with bitsandbytes `method` (or with any transformers
    `quantization_config`: torchao, GPTQ, other bitsandbytes settings) and save it in that backend's serialization."""

    dtype = torch_dtype_for(saved_dtype(read_json(full_precision / "config.json")))
    model = AutoModelForCausalLM.from_pretrained(
        full_precision,
        quantization_config=quantization_config if quantization_config is not None else bnb_config(method, dtype),
        dtype=dtype,
        device_map={"": 0} if torch.cuda.is_available() else None,
        use_safetensors=True,
    )
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    return model


def nf4_cpu_problems(model: Any) -> list[str]:
    """Linear layers that bitsandbytes 0.50 cannot run in 4-bit on a CPU with AVX512-BF16.

    Its CPU inference kernel repacks each 4-bit weight in blocks of 32 output rows and asserts that the output
    width divides evenly; the export itself is valid and runs on GPUs and on other CPUs.
    """

    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module.out_features % BNB_CPU_BLOCK_N and not name.endswith("lm_head")
    ]


# --------------------------------------------------------------------------------------------------------------
# GGUF


@dataclass
class GGUFReport:
    path: Path
    tensors: int
    tensor_types: dict[str, int]
    bytes: int


def write_gguf(model: Any, tokenizer: Any, path: Path, file_type: str = "f16", name: str | None = None) -> GGUFReport:
    """Write a Llama-architecture causal LM and its byte-level BPE tokenizer as one GGUF file for llama.cpp.

    `file_type`: f32, f16 (matrices in f16) or q8_0 (matrices whose rows split into 32-value blocks in Q8_0, the
    others in f16). One-dimensional tensors (norms) stay f32, as llama.cpp's converter keeps them.
    """
    import gguf

    if file_type not in GGUF_FILE_TYPES:
        raise UserError(f"gguf_type: unknown '{file_type}'; choose from {', '.join(GGUF_FILE_TYPES)}")
    config = model.config
    check_gguf_supported(config.to_dict(), json.loads(tokenizer.backend_tokenizer.to_str()))
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _gguf_hyperparameters(writer, config, file_type, name or Path(path).stem)
    _gguf_vocabulary(writer, tokenizer, config.vocab_size)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    types: dict[str, int] = {}
    count = 0
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp ties the output to token_embd when output.weight is absent
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise UserError(f"gguf_type: no GGUF name for tensor {hf_name}; cannot write this model as GGUF")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = _rotary_permute(data, config.num_attention_heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = _rotary_permute(data, config.num_key_value_heads)
        data, qtype = _gguf_encode(data, file_type, gguf, np)
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)
        types[qtype.name] = types.get(qtype.name, 0) + 1
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GGUFReport(path=Path(path), tensors=count, tensor_types=types, bytes=Path(path).stat().st_size)


def _gguf_hyperparameters(writer: Any, config: Any, file_type: str, name: str) -> None:
    import gguf

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    writer.add_file_type(file_types[file_type])
    if file_type == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _gguf_vocabulary(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """The byte-level BPE vocabulary as llama.cpp's `gpt2` tokenizer model: tokens by id, their types, merges,
    special token ids and the chat template."""
    import gguf

    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if len(by_id) > vocab_size:
        raise UserError(f"the tokenizer has {len(by_id)} tokens but the model only {vocab_size} embedding rows")
    added = {entry["id"]: entry for entry in backend.get("added_tokens", [])}
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:  # rows the model has beyond the vocabulary (padded embeddings)
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(by_id[index])
        entry = added.get(index)
        if entry is None:
            types.append(gguf.TokenType.NORMAL)
        else:
            types.append(gguf.TokenType.CONTROL if entry.get("special") else gguf.TokenType.USER_DEFINED)
    merges = [" ".join(m) if isinstance(m, (list, tuple)) else m for m in backend["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(gguf_pre_tokenizer(backend))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for token_id, add in (
        (tokenizer.bos_token_id, writer.add_bos_token_id),
        (tokenizer.eos_token_id, writer.add_eos_token_id),
        (tokenizer.unk_token_id, writer.add_unk_token_id),
        (tokenizer.pad_token_id, writer.add_pad_token_id),
    ):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    writer.add_add_eos_token(bool(getattr(tokenizer, "add_eos_token", False)))
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _rotary_permute(weights: Any, heads: int) -> Any:
    """llama.cpp applies rotary embeddings to interleaved pairs, transformers to the two halves of each head:
    reorder each head's rows the way its converter does (transformers' GGUF loader undoes exactly this)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _gguf_encode(data: Any, file_type: str, gguf: Any, np: Any) -> tuple[Any, Any]:
    types = gguf.GGMLQuantizationType
    if data.ndim == 1 or file_type == "f32":
        return data.astype(np.float32), types.F32
    block = gguf.GGML_QUANT_SIZES[types.Q8_0][0]
    if file_type == "q8_0" and data.shape[-1] % block == 0:
        return gguf.quants.quantize(data, types.Q8_0), types.Q8_0
    return data.astype(np.float16), types.F16
