"""What a model costs to keep and to run: size on disk, parameters in memory, zero weights, generation latency.

These are protocol measures (`llm_recipes.evaluation.protocol`) like perplexity is, so they live here beside it;
the compression stages read them through the protocol and never time or weigh a model on their own.

Latency is timed where the model is (a model given as a folder is loaded on the protocol's device), greedy, batch 1,
exactly `max_new_tokens` new tokens (end-of-text does not stop it early, so every model generates the same
amount), the median of a few runs after one warm-up.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from time import perf_counter
from typing import Any

import torch

from llm_recipes.errors import UserError

# a fixed prompt so every model's latency is timed on the same input
LATENCY_PROMPT = "The history of the city begins in the early middle ages, when"


def safetensors_bytes(folder: str | os.PathLike[str]) -> int:
    """Total bytes of the *.safetensors files in `folder` (sharded checkpoints included)."""
    path = Path(os.path.expanduser(folder))
    if not path.is_dir():
        raise UserError(f"model folder not found: {folder}")
    files = list(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder} has no .safetensors file to measure")
    return sum(file.stat().st_size for file in files)


def size_on_disk(folder: str | os.PathLike[str]) -> int:
    """Bytes of the weights a model folder loads: its *.safetensors files, plus its base model's for a PEFT adapter
    (an adapter alone is not a model anyone can run)."""
    path = Path(os.path.expanduser(folder))
    total = safetensors_bytes(path)
    adapter_config = path / "adapter_config.json"
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if not base or not Path(os.path.expanduser(base)).is_dir():
            raise UserError(f"{folder} is an adapter whose base model folder ({base}) is not here to measure")
        total += safetensors_bytes(base)
    return total


def in_memory_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers as held now (tied weights once; packed k-bit weights at their
    packed size)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
    return total


def weight_sparsity(model: torch.nn.Module) -> float:
    """Fraction of exactly-zero entries in the floating-point weight matrices (what pruning produces)."""
    zeros = total = 0
    for param in model.parameters():
        if param.dim() < 2 or not param.is_floating_point() or type(param.data) is not torch.Tensor:
            continue  # quantized tensor subclasses (torchao's Int8Tensor) are not pruned and cannot be compared
        zeros += int((param == 0).sum())
        total += param.numel()
    return zeros / total if total else 0.0


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generation_ms_per_token(
    model: Any, tokenizer: Any, *, prompt: str = LATENCY_PROMPT, max_new_tokens: int = 16, repeats: int = 3
) -> float:
    """Median milliseconds per generated token: greedy, batch 1, exactly `max_new_tokens` tokens, one untimed
    warm-up run first."""
    if max_new_tokens < 1 or repeats < 1:
        raise UserError("latency: max_new_tokens and repeats must be >= 1")
    device = model_device(model)
    inputs = tokenizer(prompt, return_tensors="pt").to(device)
    prompt_length = inputs["input_ids"].shape[1]
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = dict(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # sampling settings a saved generation config may carry mean nothing for greedy search
        temperature=None,
        top_p=None,
        top_k=None,
    )
    was_training = model.training
    model.eval()
    model.generate(**inputs, **kwargs)  # warm-up: first-call allocations and kernel selection
    timings = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = perf_counter()
        output = model.generate(**inputs, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        generated = output.shape[1] - prompt_length
        timings.append((perf_counter() - start) * 1000 / max(generated, 1))
    model.train(was_training)
    return statistics.median(timings)
