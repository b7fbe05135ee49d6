"""Loading, creating and partially freezing models.

Loading goes through the Auto classes with the safe defaults the project promises: safetensors only and no
remote code unless the config asks for it. Quantized (QLoRA) loading uses TRL's `get_quantization_config`.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import PartialState
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from trl import get_quantization_config

import llm_recipes.models  # noqa: F401  (registers our recurrent baseline with the Auto classes)
from llm_recipes.errors import UserError
from llm_recipes.models import RECURRENT_PRESETS, RecurrentLMConfig

# Llama-style decoder sizes. "llama-tiny" is for tests and the CPU demo; the larger ones are real starting points
# (llama-1b has Llama-3.2-1B's shape). Parameter counts below exclude the (tied) embeddings.
DECODER_PRESETS: dict[str, dict[str, Any]] = {
    "llama-tiny": dict(  # ~0.1M
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ),
    # ~0.4M: the CPU demo's size. Two layers learn to copy from the context (the asked animal, the asked numbers)
    # within the demo's pretraining budget; four took longer to get there (measured)
    "llama-demo": dict(
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ),
    "llama-small": dict(  # ~3M
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
    ),
    "llama-30m": dict(
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    ),
    "llama-125m": dict(
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=4,
        max_position_embeddings=2048,
    ),
    "llama-350m": dict(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=8,
        max_position_embeddings=2048,
    ),
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        rope_theta=500000.0,
    ),
}

# BERT-style encoders for masked-LM pretraining.
ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "bert-tiny": dict(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=512
    ),
    "bert-small": dict(
        hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=512
    ),
    "bert-base": dict(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=512,
    ),
}

OBJECTIVES = ("clm", "mlm")


def preset_names() -> list[str]:
    return [*DECODER_PRESETS, *ENCODER_PRESETS, *RECURRENT_PRESETS]


def _special_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    return dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_config(
    tokenizer: PreTrainedTokenizerBase,
    *,
    preset: str | None = None,
    config_name: str | None = None,
    objective: str = "clm",
    overrides: dict[str, Any] | None = None,
) -> PretrainedConfig:
    """The architecture of a from-scratch model: a named preset, or any `AutoConfig` (a folder or Hub id), with
    `overrides` applied on top. The vocabulary and special token ids always follow the tokenizer."""
    if objective not in OBJECTIVES:
        raise UserError(f"objective: unknown '{objective}'; choose from {', '.join(OBJECTIVES)}")
    if (preset is None) == (config_name is None):
        raise UserError("set exactly one of preset (a named size) or config_name (an AutoConfig folder or Hub id)")
    fields = {**_special_token_ids(tokenizer), **(overrides or {})}
    if config_name is not None:
        config = AutoConfig.from_pretrained(config_name)
        for key, value in fields.items():
            setattr(config, key, value)
    elif preset in DECODER_PRESETS:
        config = LlamaConfig(tie_word_embeddings=True, **{**DECODER_PRESETS[preset], **fields})
    elif preset in ENCODER_PRESETS:
        config = BertConfig(**{**ENCODER_PRESETS[preset], **fields})
    elif preset in RECURRENT_PRESETS:
        config = RecurrentLMConfig(**{**RECURRENT_PRESETS[preset], **fields})
    else:
        raise UserError(f"preset: unknown '{preset}'; choose from {', '.join(preset_names())}")
    encoder = config.model_type in ENCODER_MODEL_TYPES
    if objective == "clm" and encoder:
        raise UserError(f"a {config.model_type} encoder trains with objective: mlm, not clm")
    if objective == "mlm" and not encoder:
        raise UserError(f"a {config.model_type} model is a decoder; masked LM needs an encoder such as bert-tiny")
    return config


# Architectures whose natural objective is masked LM
ENCODER_MODEL_TYPES = ("bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "modernbert", "xlm-roberta")


def init_model(config: PretrainedConfig, objective: str = "clm") -> PreTrainedModel:
    """A randomly initialised model for `config`: a causal LM, or a masked LM for objective mlm."""
    auto_class = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    model = auto_class.from_config(config)
    if objective == "clm" and getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = config.eos_token_id
        model.generation_config.pad_token_id = config.pad_token_id
    return model


def resize_for_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """Grow (never shrink) the embeddings when the tokenizer has more tokens than the model; returns rows added."""
    current = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= current:
        return 0
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return len(tokenizer) - current


def init_decoder(preset: str, tokenizer: PreTrainedTokenizerBase, **overrides: Any) -> PreTrainedModel:
    """A randomly initialised Llama-style decoder sized by `preset`, its vocabulary matching `tokenizer`."""
    if preset not in DECODER_PRESETS:
        raise UserError(f"unknown model preset '{preset}'; choose from {', '.join(DECODER_PRESETS)}")
    return init_model(build_config(tokenizer, preset=preset, overrides=overrides))


def torch_dtype(name: str | None) -> torch.dtype | str | None:
    if name in (None, "auto"):
        return name
    return getattr(torch, name)


def load_tokenizer(model_args: Any, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=trust_remote_code
    )


def load_causal_lm(model_args: Any, trust_remote_code: bool = False) -> PreTrainedModel:
    """Load the model named by TRL's `ModelConfig`, quantized when it asks for 4-bit or 8-bit."""
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None and model_args.load_in_4bit:
        # bitsandbytes computes in this dtype; float32 is the safe choice on CPU when none is given
        quantization_config.bnb_4bit_compute_dtype = (
            torch_dtype(model_args.dtype) if model_args.dtype not in (None, "auto") else torch.float32
        )
    return AutoModelForCausalLM.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        dtype=torch_dtype(model_args.dtype),
        attn_implementation=model_args.attn_implementation,
        quantization_config=quantization_config,
        # a quantized model is placed at load time: on this process's GPU, or left on the CPU
        device_map=_kbit_device_map(PartialState()) if quantization_config is not None else None,
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )


def _kbit_device_map(state: Any) -> dict[str, Any] | None:
    return {"": state.local_process_index} if state.device.type == "cuda" else None


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks, whatever the architecture calls it (layers, h, layer, blocks)."""
    num_layers = getattr(model.config, "num_hidden_layers", None)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    for module_list in candidates:
        if num_layers is None or len(module_list) == num_layers:
            return module_list
    raise UserError(f"could not find the transformer blocks of {type(model).__name__} to freeze")


def freeze_for_partial_finetuning(model: PreTrainedModel, top_layers: int | None, embeddings: bool) -> None:
    """Freeze everything, then unfreeze the top `top_layers` blocks (with final norm and LM head) and/or embeddings.

    The classic partial fine-tuning: lower layers hold general features, so only the top is adapted. Where the
    LM head is tied to the input embeddings (most small models), training the head trains the embeddings too.
    """
    blocks = transformer_blocks(model)
    if top_layers is not None and top_layers > len(blocks):
        raise UserError(f"trainable_top_layers: {top_layers} but the model has only {len(blocks)} layers")
    model.requires_grad_(False)
    if top_layers:
        for block in blocks[len(blocks) - top_layers :]:
            block.requires_grad_(True)
        output = model.get_output_embeddings()
        if output is not None:
            output.requires_grad_(True)
        for name, module in model.named_modules():
            # the norm after the last block belongs with the head it feeds
            if name.endswith(("model.norm", "final_layernorm", "ln_f", "norm_f")):
                module.requires_grad_(True)
    if embeddings:
        model.get_input_embeddings().requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError(
            "partial fine-tuning left nothing to train: set trainable_top_layers > 0 or trainable_embeddings"
        )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        count = param.numel()
        if hasattr(param, "quant_state") or param.__class__.__name__ == "Params4bit":
            count *= 2  # 4-bit weights pack two values per stored byte
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total
