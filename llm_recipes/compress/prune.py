"""Pruning a causal LM: unstructured (magnitude, Wanda), N:M semi-structured, and structured (attention heads, MLP
channels), plus the per-layer sparsity report and the mask keeper for a recovery fine-tune.

Written with torch directly, not taken from a library: PyTorch's `torch.nn.utils.prune` keeps a mask and a copy of
each weight as a reparametrisation (the saved checkpoint no longer loads with `from_pretrained` until it is removed)
and knows nothing of calibration activations, heads or GQA; the pruning libraries that do (Wanda's and SparseGPT's
research code, LLM-Pruner) are scripts tied to particular model versions. What is here is small:

- unstructured: a mask per `nn.Linear` inside the transformer blocks (embeddings and LM head are left dense, as in
  the Wanda and SparseGPT papers). Magnitude ranks |W| over the whole matrix; Wanda ranks |W| * ||X_j||_2 (the L2
  norm of input feature j over calibration tokens) within each output row, which is the comparison group the
  paper found works best for LLMs. Wanda runs block by block: each block's input norms are collected from the
  calibration set passed through the blocks already pruned, as in the paper's code.
- N:M (2:4 by default): in every group of M consecutive input weights of a row, the N with the lowest score are
  zeroed -- the pattern sparse tensor cores accelerate on Ampere and newer GPUs.
- Zeros are written into the weights themselves, so the saved safetensors carry the sparsity and load anywhere.
- structured: whole attention heads (GQA-aware: either whole KV groups, or the same number of query heads in every
  group) and MLP channels are removed, the same number in every layer (Hugging Face configs hold one size for all
  layers), and a new, smaller model is built from the rewritten config, so `AutoModelForCausalLM.from_pretrained`
  loads it. Importance is activation-weighted when calibration data is given, weight-only otherwise.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, TrainerCallback

from llm_recipes.errors import UserError
from llm_recipes.evaluation.report import text_table
from llm_recipes.models.loading import transformer_blocks

# --------------------------------------------------------------------------------------------------------------
# Which layers, and calibration data


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every `nn.Linear` inside the transformer blocks, by qualified name (embeddings and LM head are outside)."""

    blocks = transformer_blocks(model)
    linears: dict[str, nn.Linear] = {}
    for prefix, block in zip(block_prefixes(model, blocks), blocks, strict=True):
        for name, module in block.named_modules():
            if type(module) is nn.Linear:  # exactly Linear: quantized or LoRA-wrapped layers are not pruned here
                linears[f"{prefix}.{name}"] = module
    return linears


def block_prefixes(model: nn.Module, blocks: nn.ModuleList) -> list[str]:
    """The qualified names of the transformer blocks (e.g. model.layers.0)."""
    names = {id(module): name for name, module in model.named_modules()}
    return [names[id(block)] for block in blocks]


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """'unstructured' -> None; 'N:M' -> (N, M): N of every M consecutive weights are zeroed."""
    if pattern == "unstructured":
        return None
    parts = pattern.split(":")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise UserError(f"sparsity_pattern: '{pattern}' is not 'unstructured' or N:M such as 2:4")
    zeros, group = (int(part) for part in parts)
    if not 0 < zeros < group:
        raise UserError(f"sparsity_pattern: '{pattern}' must have 0 < N < M (2:4 zeroes 2 of every 4)")
    return zeros, group


def token_windows(
    tokenizer: Any, texts: Iterable[str], *, count: int, length: int, seed: int = 0, add_eos: bool = True
) -> torch.Tensor:
    """`count` windows of `length` tokens (a [count, length] tensor) cut from the texts joined end to end (EOS
    between them), chosen at random without overlap: calibration and comparison inputs without any padding."""
    ids: list[int] = []
    for text in texts:
        if text:
            ids += tokenizer(text, add_special_tokens=False)["input_ids"]
            if add_eos and tokenizer.eos_token_id is not None:
                ids.append(tokenizer.eos_token_id)
        if len(ids) >= count * length * 4:  # enough to choose from; no need to tokenize a whole corpus
            break
    available = len(ids) // length
    if available == 0:
        raise UserError(f"calibration: the texts hold {len(ids)} tokens, fewer than one window of {length}")
    starts = sorted(random.Random(seed).sample(range(available), min(count, available)))
    return torch.tensor([ids[start * length : (start + 1) * length] for start in starts], dtype=torch.long)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------------------------------
# Masks (True = keep)


def magnitude_scores(layer: nn.Linear) -> torch.Tensor:
    return layer.weight.detach().abs().float()


def wanda_scores(layer: nn.Linear, input_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||X_j||_2: a weight matters as much as it is large and its input feature is active."""
    return layer.weight.detach().abs().float() * input_norm.to(layer.weight.device).float()[None, :]


def unstructured_mask(scores: torch.Tensor, sparsity: float, *, per_row: bool) -> torch.Tensor:
    """Keep-mask zeroing the `sparsity` share of lowest scores: in each row (per_row) or in the whole matrix."""
    if not 0 <= sparsity < 1:
        raise UserError(f"sparsity: {sparsity} must be in [0, 1)")
    mask = torch.ones_like(scores, dtype=torch.bool)
    if per_row:
        prune = int(scores.shape[1] * sparsity)
        if prune:
            lowest = torch.topk(scores, prune, dim=1, largest=False).indices
            mask.scatter_(1, lowest, False)
        return mask
    prune = int(scores.numel() * sparsity)
    if prune:
        lowest = torch.topk(scores.flatten(), prune, largest=False).indices
        mask.view(-1)[lowest] = False
    return mask


def n_m_mask(scores: torch.Tensor, zeros: int = 2, group: int = 4) -> torch.Tensor:
    """Keep-mask zeroing the `zeros` lowest scores of every `group` consecutive weights along each row."""
    rows, columns = scores.shape
    if columns % group:
        raise UserError(f"sparsity_pattern {zeros}:{group}: a layer has {columns} inputs, not divisible by {group}")
    grouped = scores.reshape(rows, columns // group, group)
    lowest = torch.topk(grouped, zeros, dim=2, largest=False).indices
    mask = torch.ones_like(grouped, dtype=torch.bool)
    mask.scatter_(2, lowest, False)
    return mask.reshape(rows, columns)


def layer_mask(
    layer: nn.Linear,
    sparsity: float,
    pattern: tuple[int, int] | None,
    input_norm: torch.Tensor | None = None,
    *,
    per_row: bool | None = None,
) -> torch.Tensor:
    """The keep-mask of one layer: Wanda scores when input norms are given, magnitude otherwise; N:M groups when a
    pattern is given. `per_row` says where scores are compared (None: each paper's choice -- Wanda within each
    output row, magnitude over the whole matrix)."""
    scores = wanda_scores(layer, input_norm) if input_norm is not None else magnitude_scores(layer)
    if pattern is not None:
        return n_m_mask(scores, *pattern)
    return unstructured_mask(scores, sparsity, per_row=input_norm is not None if per_row is None else per_row)


@torch.no_grad()
def apply_mask(layer: nn.Linear, mask: torch.Tensor) -> None:
    layer.weight.mul_(mask.to(layer.weight.device, layer.weight.dtype))


# --------------------------------------------------------------------------------------------------------------
# Calibration activations


class _Captured(Exception):
    """Raised by a hook to stop a forward pass once the input of the first block is known."""

    def __init__(self, args: tuple, kwargs: dict):
        self.args, self.kwargs = args, kwargs


def _first_block_inputs(model: nn.Module, windows: torch.Tensor, batch_size: int) -> list[tuple[tuple, dict]]:
    """The (args, kwargs) the first transformer block is called with, one per calibration batch: the embeddings
    plus whatever the model passes every block (position embeddings, masks)."""

    first = transformer_blocks(model)[0]

    def capture(_module, args, kwargs):
        raise _Captured(args, kwargs)

    handle = first.register_forward_pre_hook(capture, with_kwargs=True)
    captured = []
    try:
        for begin in range(0, len(windows), batch_size):
            batch = windows[begin : begin + batch_size].to(_device(model))
            try:
                model(input_ids=batch, use_cache=False)
            except _Captured as stop:
                captured.append((stop.args, stop.kwargs))
    finally:
        handle.remove()
    return captured


def _with_hidden_states(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


class InputNorms:
    """Accumulates, per layer, the sum of squares of each input feature over every token it sees."""

    def __init__(self, layers: dict[str, nn.Linear]):
        self.squares = {
            name: torch.zeros(layer.in_features, dtype=torch.float64, device=layer.weight.device)
            for name, layer in layers.items()
        }
        self.handles = [layer.register_forward_hook(self._hook(name)) for name, layer in layers.items()]

    def _hook(self, name: str):
        def accumulate(_module, inputs, _output):
            features = inputs[0].detach().reshape(-1, inputs[0].shape[-1])
            self.squares[name] += features.double().pow(2).sum(dim=0).to(self.squares[name].device)

        return accumulate

    def remove(self) -> dict[str, torch.Tensor]:
        """Stop collecting; the norms per layer (float32, on the layer's device)."""
        for handle in self.handles:
            handle.remove()
        return {name: squares.sqrt().float() for name, squares in self.squares.items()}


@torch.no_grad()
def input_norms(model: nn.Module, windows: torch.Tensor, layers: dict[str, nn.Linear], batch_size: int = 8):
    """||X_j||_2 of every input feature j of `layers` over the calibration windows, from one pass of the model."""
    collector = InputNorms(layers)
    try:
        for begin in range(0, len(windows), batch_size):
            model(input_ids=windows[begin : begin + batch_size].to(_device(model)), use_cache=False)
    finally:
        norms = collector.remove()
    return norms


# --------------------------------------------------------------------------------------------------------------
# Unstructured and N:M pruning of a whole model


@dataclass
class PruneResult:
    masks: dict[str, torch.Tensor]  # layer name -> keep-mask (the pruned weights are already zero)
    method: str
    pattern: str


@torch.no_grad()
def prune_unstructured(
    model: nn.Module,
    method: str,
    *,
    sparsity: float = 0.5,
    pattern: str = "unstructured",
    calibration: torch.Tensor | None = None,
    batch_size: int = 8,
    per_row: bool | None = None,
) -> PruneResult:
    """Zero weights of every prunable layer in place, by `magnitude` or `wanda` (which needs `calibration`, a
    [samples, length] tensor of token ids), to `sparsity` or to an N:M `pattern`; `per_row`: see `layer_mask`."""
    n_m = parse_pattern(pattern)
    layers = prunable_linears(model)
    if method == "magnitude":
        masks = {name: layer_mask(layer, sparsity, n_m, per_row=per_row) for name, layer in layers.items()}
        for name, layer in layers.items():
            apply_mask(layer, masks[name])
        return PruneResult(masks, method, pattern)
    if method != "wanda":
        raise UserError(f"method: '{method}' is not an unstructured method; choose magnitude or wanda")
    if calibration is None or len(calibration) == 0:
        raise UserError("method wanda needs calibration data (calibration_dataset_path)")
    masks = _prune_wanda_by_block(model, layers, sparsity, n_m, calibration, batch_size, per_row)
    return PruneResult(masks, method, pattern)


def _prune_wanda_by_block(
    model: nn.Module,
    layers: dict[str, nn.Linear],
    sparsity: float,
    n_m: tuple[int, int] | None,
    calibration: torch.Tensor,
    batch_size: int,
    per_row: bool | None,
) -> dict[str, torch.Tensor]:
    """Block by block: the input norms of a block's layers come from the calibration set passed through the
    blocks pruned before it; its outputs, recomputed after pruning, are the next block's inputs."""

    was_training = model.training
    model.eval()
    inputs = _first_block_inputs(model, calibration, batch_size)
    masks: dict[str, torch.Tensor] = {}
    for block in transformer_blocks(model):
        block_layers = {name: layer for name, layer in layers.items() if _contains(block, layer)}
        collector = InputNorms(block_layers)
        try:
            for args, kwargs in inputs:
                block(*args, **kwargs)
        finally:
            norms = collector.remove()
        for name, layer in block_layers.items():
            masks[name] = layer_mask(layer, sparsity, n_m, norms[name], per_row=per_row)
            apply_mask(layer, masks[name])
        inputs = [_with_hidden_states(args, kwargs, _block_output(block(*args, **kwargs))) for args, kwargs in inputs]
    model.train(was_training)
    return masks


def _contains(block: nn.Module, layer: nn.Module) -> bool:
    return any(module is layer for module in block.modules())


def _block_output(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) else output


# --------------------------------------------------------------------------------------------------------------
# Sparsity report


@dataclass
class LayerSparsity:
    name: str
    zeros: int
    total: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.total if self.total else 0.0


def layer_sparsity(model: nn.Module) -> list[LayerSparsity]:
    """The share of exactly-zero weights in each prunable layer."""
    return [
        LayerSparsity(name, int((layer.weight == 0).sum()), layer.weight.numel())
        for name, layer in prunable_linears(model).items()
    ]


def overall_sparsity(rows: Sequence[LayerSparsity]) -> float:
    total = sum(row.total for row in rows)
    return sum(row.zeros for row in rows) / total if total else 0.0


def format_layer_sparsity(rows: Sequence[LayerSparsity]) -> str:
    table = [[row.name, f"{row.total:,}", f"{row.sparsity:.3f}"] for row in rows]
    table.append(["all pruned layers", f"{sum(row.total for row in rows):,}", f"{overall_sparsity(rows):.3f}"])
    return text_table(["layer", "weights", "sparsity"], table)


def is_n_m_sparse(weight: torch.Tensor, zeros: int = 2, group: int = 4) -> bool:
    """Whether every group of `group` consecutive weights along each row has at least `zeros` zeros."""
    rows, columns = weight.shape
    if columns % group:
        return False
    return bool(((weight.reshape(rows, columns // group, group) == 0).sum(dim=2) >= zeros).all())


# --------------------------------------------------------------------------------------------------------------
# Keeping pruned weights at zero while fine-tuning


class MaskKeeper(TrainerCallback):
    """A `TrainerCallback` that keeps pruned weights at zero during a recovery fine-tune.

    The masks are read from the model when training begins (a zero weight in a prunable layer is a pruned one),
    so a run resumed from a checkpoint finds the same masks; after every optimizer step the masked weights are
    zeroed again (the optimizer's momentum would otherwise move them).
    """

    def __init__(self) -> None:
        self.masks: dict[str, torch.Tensor] = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.masks = {name: layer.weight != 0 for name, layer in prunable_linears(model).items()}

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name, mask in self.masks.items():
                layer = modules.get(name) or modules.get(f"module.{name}")
                if layer is not None:
                    layer.weight.mul_(mask.to(layer.weight.device, layer.weight.dtype))


# --------------------------------------------------------------------------------------------------------------
# Structured pruning: attention heads and MLP channels


@dataclass
class StructuredPlan:
    """What a structured pruning removes, the same amount in every layer."""

    heads_to_prune: int = 0  # query heads removed per layer
    prune_kv_heads: bool = True  # True: whole KV groups (their query heads with them); False: query heads per group
    mlp_channels_to_prune: int = 0  # MLP intermediate channels removed per layer


def attention_shape(config: Any) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dim) of a decoder config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, kv_heads, head_dim


def check_structured_plan(config: Any, plan: StructuredPlan) -> None:
    """Everything wrong with a plan that the config alone shows (before any weights load). Raises UserError."""
    for name in ("num_attention_heads", "intermediate_size", "hidden_size"):
        if not isinstance(getattr(config, name, None), int):
            raise UserError(
                f"structured pruning needs a Llama-style decoder config with {name} (one size for all layers); "
                f"this {getattr(config, 'model_type', 'model')} has none"
            )
    heads, kv_heads, _ = attention_shape(config)
    group = heads // kv_heads
    if plan.heads_to_prune < 0 or plan.mlp_channels_to_prune < 0:
        raise UserError("heads_to_prune and mlp_channels_to_prune must be >= 0")
    if plan.heads_to_prune == 0 and plan.mlp_channels_to_prune == 0:
        raise UserError("method structured: set heads_to_prune and/or mlp_channels_to_prune (per layer)")
    if plan.heads_to_prune >= heads:
        raise UserError(f"heads_to_prune: {plan.heads_to_prune} would leave none of the {heads} heads per layer")
    if plan.prune_kv_heads and plan.heads_to_prune % group:
        raise UserError(
            f"heads_to_prune: {plan.heads_to_prune} is not a multiple of {group}, the query heads per KV head "
            f"({heads} heads, {kv_heads} KV heads): whole KV groups are removed (or set prune_kv_heads: false)"
        )
    if not plan.prune_kv_heads and plan.heads_to_prune % kv_heads:
        raise UserError(
            f"heads_to_prune: {plan.heads_to_prune} is not a multiple of {kv_heads}, the KV heads: with "
            "prune_kv_heads false every KV group loses the same number of query heads"
        )
    if plan.mlp_channels_to_prune >= config.intermediate_size:
        raise UserError(
            f"mlp_channels_to_prune: {plan.mlp_channels_to_prune} would leave none of the {config.intermediate_size}"
        )


def _projection(block: nn.Module, path: str, name: str) -> nn.Linear:
    module = getattr(getattr(block, path, None), name, None)
    if not isinstance(module, nn.Linear):
        raise UserError(
            f"structured pruning supports Llama-style decoders ({path}.{name} as a Linear layer); "
            f"{type(block).__name__} has no such layer"
        )
    return module


def structured_importance(
    model: nn.Module, calibration: torch.Tensor | None = None, batch_size: int = 8
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, the importance of each query head and of each MLP channel.

    A head's (channel's) importance is the sum over its input columns c of o_proj (down_proj) of
    ||W[:, c]||_2 * ||X_c||_2 -- how far it can move the residual stream. ||X_c|| comes from the calibration
    windows when given; without them it is approximated by the weights that produce X_c: the v_proj row a head's
    column reads (shared by the query heads of a KV group), and the gate and up rows of an MLP channel.
    """

    blocks = transformer_blocks(model)
    heads, kv_heads, head_dim = attention_shape(model.config)
    outputs: dict[str, nn.Linear] = {}
    for index, block in enumerate(blocks):
        outputs[f"{index}.o_proj"] = _projection(block, "self_attn", "o_proj")
        outputs[f"{index}.down_proj"] = _projection(block, "mlp", "down_proj")
    norms = input_norms(model, calibration, outputs, batch_size) if calibration is not None else None
    head_scores, channel_scores = [], []
    for index, block in enumerate(blocks):
        o_proj, down = outputs[f"{index}.o_proj"], outputs[f"{index}.down_proj"]
        if norms is not None:
            o_input, down_input = norms[f"{index}.o_proj"], norms[f"{index}.down_proj"]
        else:
            value_rows = _row_norms(_projection(block, "self_attn", "v_proj")).reshape(kv_heads, head_dim)
            o_input = value_rows.repeat_interleave(heads // kv_heads, dim=0).flatten()
            down_input = _row_norms(_projection(block, "mlp", "gate_proj")) * _row_norms(
                _projection(block, "mlp", "up_proj")
            )
        column_scores = o_proj.weight.detach().float().norm(dim=0) * o_input.to(o_proj.weight.device)
        head_scores.append(column_scores.reshape(heads, head_dim).sum(dim=1).cpu())
        channel_scores.append((down.weight.detach().float().norm(dim=0) * down_input.to(down.weight.device)).cpu())
    return head_scores, channel_scores


def _row_norms(layer: nn.Linear) -> torch.Tensor:
    return layer.weight.detach().float().norm(dim=1)


def heads_to_keep(scores: torch.Tensor, kv_heads: int, plan: StructuredPlan) -> tuple[list[int], list[int]]:
    """(query heads kept, KV heads kept) of one layer, in their original order, from per-query-head scores."""
    heads = scores.numel()
    group = heads // kv_heads
    by_group = scores.reshape(kv_heads, group)
    if plan.heads_to_prune == 0:
        return list(range(heads)), list(range(kv_heads))
    if plan.prune_kv_heads:
        drop = plan.heads_to_prune // group
        kept_kv = sorted(torch.topk(by_group.sum(dim=1), kv_heads - drop).indices.tolist())
        return [kv * group + offset for kv in kept_kv for offset in range(group)], kept_kv
    drop = plan.heads_to_prune // kv_heads
    kept = []
    for kv in range(kv_heads):
        kept += sorted(kv * group + offset for offset in torch.topk(by_group[kv], group - drop).indices.tolist())
    return kept, list(range(kv_heads))


def _rows(indices: list[int], width: int) -> torch.Tensor:
    """The weight rows of heads `indices`, each `width` rows wide."""
    return torch.tensor([index * width + offset for index in indices for offset in range(width)], dtype=torch.long)


def _slice_linear(state: dict[str, torch.Tensor], prefix: str, rows: torch.Tensor | None, cols: torch.Tensor | None):
    weight = state[f"{prefix}.weight"]
    if rows is not None:
        weight = weight.index_select(0, rows.to(weight.device))
        if f"{prefix}.bias" in state:
            state[f"{prefix}.bias"] = state[f"{prefix}.bias"].index_select(0, rows.to(weight.device))
    if cols is not None:
        weight = weight.index_select(1, cols.to(weight.device))
    state[f"{prefix}.weight"] = weight


@torch.no_grad()
def prune_structured(
    model: nn.Module, plan: StructuredPlan, calibration: torch.Tensor | None = None, batch_size: int = 8
) -> nn.Module:
    """A new, smaller model without the least important heads and MLP channels of every layer; its config says
    the new sizes, so it saves and loads with the Auto classes. `model` itself is left unchanged."""

    config = model.config
    check_structured_plan(config, plan)
    heads, kv_heads, head_dim = attention_shape(config)
    was_training = model.training
    model.eval()
    head_scores, channel_scores = structured_importance(model, calibration, batch_size)
    model.train(was_training)

    state = dict(model.state_dict())  # sliced entries are replaced; the rest are copied into the new model
    block_names = block_prefixes(model, transformer_blocks(model))
    kept_heads, kept_kv = list(range(heads)), list(range(kv_heads))
    for prefix, scores, channels in zip(block_names, head_scores, channel_scores, strict=True):
        kept_heads, kept_kv = heads_to_keep(scores, kv_heads, plan)
        query_rows, kv_rows = _rows(kept_heads, head_dim), _rows(kept_kv, head_dim)
        _slice_linear(state, f"{prefix}.self_attn.q_proj", query_rows, None)
        _slice_linear(state, f"{prefix}.self_attn.k_proj", kv_rows, None)
        _slice_linear(state, f"{prefix}.self_attn.v_proj", kv_rows, None)
        _slice_linear(state, f"{prefix}.self_attn.o_proj", None, query_rows)
        keep_channels = config.intermediate_size - plan.mlp_channels_to_prune
        channel_index = torch.topk(channels, keep_channels).indices.sort().values
        _slice_linear(state, f"{prefix}.mlp.gate_proj", channel_index, None)
        _slice_linear(state, f"{prefix}.mlp.up_proj", channel_index, None)
        _slice_linear(state, f"{prefix}.mlp.down_proj", None, channel_index)

    new_config = copy.deepcopy(config)
    new_config.num_attention_heads = len(kept_heads)
    new_config.num_key_value_heads = len(kept_kv)
    new_config.head_dim = head_dim  # otherwise derived from hidden_size / heads, which no longer holds
    new_config.intermediate_size = config.intermediate_size - plan.mlp_channels_to_prune
    smaller = AutoModelForCausalLM.from_config(new_config, dtype=next(model.parameters()).dtype)
    smaller.load_state_dict(state, strict=True)
    smaller.generation_config = copy.deepcopy(model.generation_config)
    return smaller.to(_device(model))
