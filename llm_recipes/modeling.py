"""Loading, creating and partially freezing models.

Loading goes through the Auto classes with the safe defaults the project promises: safetensors only and no
remote code unless the config asks for it. Quantized (QLoRA) loading uses TRL's `get_quantization_config`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from llm_recipes.errors import UserError

# Llama-style decoder sizes. "llama-tiny" is for tests and the CPU demo; the others are real starting points.
DECODER_PRESETS: dict[str, dict[str, Any]] = {
    "llama-tiny": dict(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ),
    "llama-small": dict(
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=1024,
    ),
}


def init_decoder(preset: str, tokenizer: PreTrainedTokenizerBase, **overrides: Any) -> LlamaForCausalLM:
    """A randomly initialised Llama-style decoder sized by `preset`, its vocabulary matching `tokenizer`."""
    if preset not in DECODER_PRESETS:
        raise UserError(f"unknown model preset '{preset}'; choose from {', '.join(DECODER_PRESETS)}")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **{**DECODER_PRESETS[preset], **overrides},
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


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
    from accelerate import PartialState
    from trl import get_quantization_config

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
