"""Throughput arithmetic for config headers and plans: training FLOPs per token and the tokens per second they
imply at a given model FLOPs utilisation. An estimate, never a measurement.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from llm_recipes.pipeline.estimates.activations import block_dimensions
from llm_recipes.pipeline.estimates.shapes import model_shape


def flops_per_token(config: PretrainedConfig, seq_len: int) -> int | None:
    """Training FLOPs per token: 6 x the parameters that do matrix work (the LM head counts, the embedding lookup
    does not) + 12 x layers x hidden x seq_len for attention scores (Chowdhery et al. 2022, PaLM appendix B)."""
    dims = block_dimensions(config)
    if dims is None:
        return None
    shape = model_shape(config, "causal_lm")
    tied = getattr(config, "tie_word_embeddings", False)
    matmul_params = shape.parameters - (0 if tied else shape.embedding)
    return int(6 * matmul_params + 12 * dims["L"] * dims["h"] * seq_len)


def throughput_tokens_per_second(
    config: PretrainedConfig, seq_len: int, *, mfu: float, peak_flops: float = 989e12
) -> float | None:
    """Tokens/s per GPU at a model FLOPs utilisation `mfu` (H100 SXM dense bf16 peak by default)."""
    per_token = flops_per_token(config, seq_len)
    return None if per_token is None else mfu * peak_flops / per_token
