"""Perplexity over a set of texts with a sliding window, per token and per byte.

Texts longer than the model's context are scored in overlapping windows (Hugging Face's "perplexity of
fixed-length models" recipe): each window sees `context_length` tokens, moves on by `stride`, and only the tokens
it has not scored before count, so every token is scored exactly once and with at least
`context_length - stride` tokens of context. With a window that covers the whole text this is the full computation.

Every text starts from the tokenizer's BOS (or EOS, lm-evaluation-harness's convention) so its first real token is
predicted too: all of a text's bytes are scored, which is what makes bits per byte comparable between models with
different tokenizers (perplexity per token is not -- a tokenizer with longer tokens has fewer, harder tokens).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.nn import functional as F

from llm_recipes.errors import UserError
from llm_recipes.evaluation.loading import model_device

DEFAULT_MAX_CONTEXT = 2048  # a default window for models that declare no (or an effectively infinite) limit


@dataclass
class PerplexityResult:
    perplexity: float  # exp(mean negative log-likelihood per token)
    bits_per_byte: float  # total negative log-likelihood in bits / UTF-8 bytes scored
    loss: float  # mean negative log-likelihood per token, in nats
    tokens: int  # tokens scored
    bytes: int  # UTF-8 bytes of the texts scored
    texts: int  # texts scored (empty ones are skipped)
    context_length: int
    stride: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Window:
    input_ids: list[int]
    targets: int  # the last `targets` tokens of input_ids are scored


def default_context_length(model: Any, tokenizer: Any | None = None) -> int:
    limits = [getattr(model.config, "max_position_embeddings", None)]
    if tokenizer is not None:
        limits.append(getattr(tokenizer, "model_max_length", None))
    usable = [int(limit) for limit in limits if isinstance(limit, int) and 1 < limit < 1_000_000]
    return min([*usable, DEFAULT_MAX_CONTEXT])


def sliding_windows(ids: Sequence[int], context_length: int, stride: int) -> list[Window]:
    """Windows over `ids` that score tokens 1..len-1 once each; token 0 (the start token) is context only."""
    if context_length < 2:
        raise UserError(f"context_length: {context_length} must be >= 2")
    if not 1 <= stride < context_length:
        raise UserError(f"stride: {stride} must be >= 1 and below context_length ({context_length})")
    windows = []
    scored_until = 1  # the first token has nothing to be predicted from
    end = min(context_length, len(ids))
    while scored_until < len(ids):
        start = max(0, end - context_length)
        windows.append(Window(list(ids[start:end]), end - scored_until))
        scored_until = end
        end = min(end + stride, len(ids))
    return windows


def start_token_id(tokenizer: Any) -> int | None:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def encode_for_scoring(tokenizer: Any, text: str) -> tuple[list[int], int]:
    """(token ids with the start token in front, bytes those ids score). Without a start token the first text
    token is context only, so its bytes are not counted."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n_bytes = len(text.encode("utf-8"))
    start = start_token_id(tokenizer)
    if start is not None:
        return [start, *ids], n_bytes
    if ids:
        n_bytes -= len(tokenizer.decode(ids[:1]).encode("utf-8"))
    return ids, max(n_bytes, 0)


@torch.no_grad()
def window_nll(model: Any, windows: Sequence[Window], pad_token_id: int) -> float:
    """Summed negative log-likelihood (nats) of the scored tokens of a batch of windows, right-padded."""
    device = model_device(model)
    width = max(len(w.input_ids) for w in windows)
    input_ids = torch.full((len(windows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(windows), width), dtype=torch.long)
    # scored[i, j]: logits at position j predict token j+1, which is scored
    scored = torch.zeros((len(windows), width - 1), dtype=torch.bool)
    for row, window in enumerate(windows):
        length = len(window.input_ids)
        input_ids[row, :length] = torch.tensor(window.input_ids)
        attention_mask[row, :length] = 1
        scored[row, length - 1 - window.targets : length - 1] = True
    input_ids, attention_mask, scored = input_ids.to(device), attention_mask.to(device), scored.to(device)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    nll = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")
    return float(nll[scored].sum())


def perplexity(
    model: Any,
    tokenizer: Any,
    texts: Iterable[str],
    *,
    context_length: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
) -> PerplexityResult:
    """Corpus perplexity and bits per byte of `texts` under a causal LM (texts are scored independently).

    `context_length` defaults to the model's maximum positions (at most 2048); `stride` to half of it.
    """
    context_length = context_length or default_context_length(model, tokenizer)
    stride = stride or max(1, context_length // 2)
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total_nll, total_tokens, total_bytes, n_texts = 0.0, 0, 0, 0
    pending: list[Window] = []
    for text in texts:
        if not text:
            continue
        ids, n_bytes = encode_for_scoring(tokenizer, text)
        windows = sliding_windows(ids, context_length, stride)
        if not windows:
            continue
        n_texts += 1
        total_bytes += n_bytes
        total_tokens += sum(w.targets for w in windows)
        pending += windows
        while len(pending) >= batch_size:
            total_nll += window_nll(model, pending[:batch_size], pad_token_id)
            pending = pending[batch_size:]
    if pending:
        total_nll += window_nll(model, pending, pad_token_id)
    if total_tokens == 0:
        raise UserError("perplexity: no text to score (every text is empty)")
    loss = total_nll / total_tokens
    return PerplexityResult(
        perplexity=math.exp(loss),
        bits_per_byte=total_nll / math.log(2) / total_bytes if total_bytes else float("nan"),
        loss=loss,
        tokens=total_tokens,
        bytes=total_bytes,
        texts=n_texts,
        context_length=context_length,
        stride=stride,
    )
