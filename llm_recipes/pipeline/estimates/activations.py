"""Activation bytes of one forward and backward pass of a micro-batch, per the formulas in the MEMORY MODEL
(memory.py): Korthikanti et al.'s per-layer accounting re-derived for Llama-style blocks, gradient checkpointing,
eager attention, and the LM head's logits.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from llm_recipes.pipeline.estimates.precision import Precision


def block_dimensions(config: PretrainedConfig) -> dict[str, int] | None:
    """h (hidden), L (layers), a (heads), h_kv (total KV width), i (MLP width), V (vocabulary); None for
    architectures that are not transformer blocks."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(text, "hidden_size", None)
    layers = getattr(text, "num_hidden_layers", None)
    heads = getattr(text, "num_attention_heads", None)
    if not (hidden and layers and heads):
        return None
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    intermediate = getattr(text, "intermediate_size", None) or 4 * hidden
    vocab = getattr(text, "vocab_size", 0) or 0
    return dict(h=hidden, L=layers, a=heads, h_kv=kv_heads * head_dim, i=intermediate, V=vocab)


def _layer_bytes_per_token(dims: dict[str, int], precision: Precision, seq: int, eager: bool) -> int:
    h, h_kv, i, a = dims["h"], dims["h_kv"], dims["i"], dims["a"]
    if precision.compute16 and precision.residual_bytes == 2:
        per_token = 20 * h + 4 * h_kv + 8 * i
    elif precision.compute16:
        per_token = 30 * h + 4 * h_kv + 8 * i
    else:
        per_token = 32 * h + 8 * h_kv + 16 * i
    if eager:
        per_token += (6 if precision.compute16 else 5) * a * seq
    return per_token


def activation_bytes(
    config: PretrainedConfig,
    *,
    batch: int,
    seq_len: int,
    checkpointing: bool,
    compute16: bool,
    fp32_residual: bool = False,
    head: str = "causal_lm",
    eager_attention: bool = False,
    logit_positions: int | None = None,
) -> int | None:
    """Activation bytes of one forward + backward of a micro-batch (see the MEMORY MODEL in memory.py); None for
    architectures without hidden_size / num_hidden_layers / num_attention_heads."""
    dims = block_dimensions(config)
    if dims is None:
        return None
    precision = Precision(0, 0, None, 0, False, compute16, 4 if fp32_residual or not compute16 else 2)
    return micro_batch_activations(
        dims, precision, batch, seq_len, checkpointing, head, eager_attention, logit_positions
    )


def micro_batch_activations(
    dims: dict[str, int],
    precision: Precision,
    batch: int,
    seq: int,
    checkpointing: bool,
    head: str,
    eager: bool,
    logit_positions: int | None = None,
) -> int:
    """`activation_bytes` for dimensions and a precision already worked out (`logit_positions`: the positions
    whose logits are kept, when fewer than the sequence)."""
    tokens = batch * seq
    layer = _layer_bytes_per_token(dims, precision, seq, eager)
    if checkpointing:
        blocks = tokens * (dims["L"] * dims["h"] * precision.residual_bytes + layer)
    else:
        blocks = tokens * dims["L"] * layer
    logits = 0
    if head != "sequence_classification":
        logit_bytes = (2 if precision.compute16 else 4) + 12
        logits = batch * (logit_positions if logit_positions is not None else seq) * dims["V"] * logit_bytes
    return int(blocks + logits)
