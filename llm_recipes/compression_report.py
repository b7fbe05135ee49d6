"""How a compressed model (distilled, quantized, pruned) compares with the model it came from.

The distill, quantize and prune stages all answer the same question -- what did we give up for what we saved? --
so they share one measurement: parameters, size on disk (bytes of the folder's *.safetensors), eval perplexity
(`llm_recipes.evaluation.perplexity`, so the numbers match the evaluate stage's), and generation latency (median
milliseconds per generated token for a fixed prompt, greedy, a few repeats after one warm-up run).

Latency is measured where the model is: a model given as a path is loaded on the CPU, which is the issue's
"latency on CPU" and the place where a smaller model pays off most visibly; a model already on a GPU (a 4-bit
bitsandbytes model cannot leave it) is timed there, and each entry records its device so the table says which.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llm_recipes.errors import UserError

# a fixed prompt so every model's latency is timed on the same input
LATENCY_PROMPT = "The history of the city begins in the early middle ages, when"

# the table's rows: report key, label
ROWS: list[tuple[str, str]] = [
    ("parameters", "parameters"),
    ("size_bytes", "size (bytes)"),
    ("perplexity", "eval perplexity"),
    # present when a training stage also scored the tokens it trained on (distill: assistant turns, completions)
    ("labelled_perplexity", "perplexity, trained tokens"),
    ("ms_per_token", "latency (ms/token)"),
    ("sparsity", "zero weights (fraction)"),
    # present when a stage also scored answers with a reward model (distill's report_reward_model)
    ("mean_reward", "mean reward"),
    ("win_rate", "win rate vs source"),
]


def safetensors_bytes(folder: str | os.PathLike[str]) -> int:
    """Total bytes of the *.safetensors files in `folder` (sharded checkpoints included)."""
    path = Path(os.path.expanduser(folder))
    if not path.is_dir():
        raise UserError(f"model folder not found: {folder}")
    files = list(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"{folder} has no .safetensors file to measure")
    return sum(file.stat().st_size for file in files)


def in_memory_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers as held now (tied weights once) -- the size when no folder is
    given. Packed k-bit weights count at their packed size."""
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


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def generation_ms_per_token(
    model: Any, tokenizer: Any, *, prompt: str = LATENCY_PROMPT, max_new_tokens: int = 16, repeats: int = 3
) -> float:
    """Median milliseconds per generated token: greedy, exactly `max_new_tokens` tokens (end-of-text does not stop
    it early, so every model generates the same amount), one untimed warm-up run first."""
    if max_new_tokens < 1 or repeats < 1:
        raise UserError("latency: max_new_tokens and repeats must be >= 1")
    device = _device(model)
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
        start = time.perf_counter()
        output = model.generate(**inputs, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        generated = output.shape[1] - prompt_length
        timings.append((time.perf_counter() - start) * 1000 / max(generated, 1))
    model.train(was_training)
    return statistics.median(timings)


def measure_model(
    model: Any,
    tokenizer: Any,
    eval_texts: Sequence[str],
    *,
    model_dir: str | os.PathLike[str] | None = None,
    max_new_tokens: int = 16,
    repeats: int = 3,
    context_length: int | None = None,
) -> dict[str, Any]:
    """One column of the comparison: parameters, size, perplexity on `eval_texts` (windows of `context_length`
    tokens, default the model's maximum positions), latency, sparsity."""
    from llm_recipes.evaluation.perplexity import perplexity
    from llm_recipes.modeling import count_parameters

    texts = [text for text in eval_texts if text]
    was_training = model.training
    model.eval()
    result = perplexity(model, tokenizer, texts, context_length=context_length) if texts else None
    model.train(was_training)
    return {
        "parameters": count_parameters(model)[1],
        "size_bytes": safetensors_bytes(model_dir) if model_dir is not None else in_memory_bytes(model),
        "size_measured": "safetensors" if model_dir is not None else "in_memory",
        "perplexity": result.perplexity if result else None,
        "bits_per_byte": result.bits_per_byte if result else None,
        "eval_tokens": result.tokens if result else 0,
        "ms_per_token": generation_ms_per_token(model, tokenizer, max_new_tokens=max_new_tokens, repeats=repeats),
        "latency_device": str(_device(model)),
        "sparsity": weight_sparsity(model),
    }


def _as_model(model_or_path: Any) -> tuple[Any, str | None]:
    """(model, its folder): a path is loaded on the CPU; a model is used as is."""
    if isinstance(model_or_path, str | os.PathLike):
        from llm_recipes.evaluation.loading import load_model

        path = os.fspath(model_or_path)
        folder = path if os.path.isdir(os.path.expanduser(path)) else None  # a Hub id has no folder to measure
        return load_model(path, device="cpu"), folder
    return model_or_path, None


def compare_models(
    source: Any,
    compressed: Any,
    tokenizer: Any,
    eval_texts: Sequence[str],
    *,
    source_dir: str | os.PathLike[str] | None = None,
    compressed_dir: str | os.PathLike[str] | None = None,
    max_new_tokens: int = 16,
    repeats: int = 3,
    context_length: int | None = None,
) -> dict[str, dict[str, Any]]:
    """{"source": {...}, "compressed": {...}}, each with parameters, size_bytes, perplexity, ms_per_token (and
    size_measured, bits_per_byte, eval_tokens, latency_device, sparsity).

    `source` and `compressed` are models or saved model folders (a folder is loaded on the CPU and is also where
    its size is measured). Size comes from `*_dir`'s safetensors files when given (or the path), else from the
    tensors in memory -- give the folders for the on-disk figure the issue asks for. `context_length` is the
    perplexity window for both (default: each model's maximum positions; pass the length the compressed model was
    trained on, so neither is scored beyond it).
    """
    source_model, source_path = _as_model(source)
    compressed_model, compressed_path = _as_model(compressed)
    source_dir = source_dir if source_dir is not None else source_path
    compressed_dir = compressed_dir if compressed_dir is not None else compressed_path
    settings = dict(max_new_tokens=max_new_tokens, repeats=repeats, context_length=context_length)
    return {
        "source": measure_model(source_model, tokenizer, eval_texts, model_dir=source_dir, **settings),
        "compressed": measure_model(compressed_model, tokenizer, eval_texts, model_dir=compressed_dir, **settings),
    }


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def _ratio(key: str, compressed: Any, source: Any) -> str:
    if (
        key == "sparsity"
        or not isinstance(compressed, int | float)
        or not isinstance(source, int | float)
        or not source
    ):
        return "-"
    return f"{compressed / source:.3g}x"


def format_comparison(report: dict[str, dict[str, Any]], title: str) -> str:
    """The report as an aligned table: metric, source, compressed, compressed/source."""
    from llm_recipes.evaluation.report import text_table

    source, compressed = report["source"], report["compressed"]
    rows = [
        [label, _cell(source.get(key)), _cell(compressed.get(key)), _ratio(key, compressed.get(key), source.get(key))]
        for key, label in ROWS
        if source.get(key) is not None or compressed.get(key) is not None
    ]
    sides = {"source": source, "compressed": compressed}
    in_memory = [name for name, entry in sides.items() if entry.get("size_measured") == "in_memory"]
    devices = {source.get("latency_device"), compressed.get("latency_device")} - {None}
    table = text_table(["", "source", "compressed", "compressed/source"], rows)
    notes = [f"latency: greedy generation on {', '.join(sorted(devices))}" if devices else ""]
    notes.append(f"size of {' and '.join(in_memory)}: tensors in memory (no folder given)" if in_memory else "")
    return "\n".join(line for line in [title, "=" * max(len(title), 20), table, *notes] if line)
