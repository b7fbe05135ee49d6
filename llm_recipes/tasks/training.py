"""The Trainer of the fine-tuning tasks: `transformers.Trainer` plus two options it lacks -- class weights in the
cross-entropy loss (for imbalanced labels) and layer-wise learning-rate decay (LLRD: the head trains at the full
learning rate, each block below at `decay` times the one above, the embeddings lowest; the usual recipe for
fine-tuning pretrained encoders, Howard & Ruder 2018, Clark et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from llm_recipes.models.loading import transformer_blocks

IGNORE_INDEX = -100


def layer_depths(model: nn.Module) -> dict[int, int]:
    """id(parameter) -> depth: 0 for embeddings (and anything below the first block), i + 1 for block i, and
    n_blocks + 1 for what sits above the blocks (final norm, pooler, head)."""

    blocks = transformer_blocks(model)
    in_block = {id(param): index + 1 for index, block in enumerate(blocks) for param in block.parameters()}
    depths, seen_block = {}, False
    for _, param in model.named_parameters():
        if id(param) in in_block:
            depths[id(param)] = in_block[id(param)]
            seen_block = True
        else:
            # parameters are registered in build order: before the blocks is the input side, after them the head
            depths[id(param)] = len(blocks) + 1 if seen_block else 0
    return depths


def layerwise_parameter_groups(
    model: nn.Module, learning_rate: float, decay: float, weight_decay: float, decay_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Optimizer groups with learning rate `learning_rate * decay ** (top - depth)`, split by weight decay."""
    depths = layer_depths(model)
    top = max(depths.values(), default=0)
    decayed = set(decay_names)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = depths[id(param)]
        with_decay = name in decayed
        group = groups.setdefault(
            (depth, with_decay),
            {
                "params": [],
                "lr": learning_rate * decay ** (top - depth),
                "weight_decay": weight_decay if with_decay else 0.0,
            },
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


class TaskTrainer(Trainer):
    """`Trainer` with optional `class_weights` (one per label id) and `layerwise_lr_decay` (0 < decay <= 1)."""

    def __init__(
        self,
        *args: Any,
        class_weights: Sequence[float] | None = None,
        layerwise_lr_decay: float | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.layerwise_lr_decay = layerwise_lr_decay
        if self.class_weights is not None:
            self.loss_is_scaled_for_ga = False  # our loss is a per-batch mean: the Trainer divides it for accumulation

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.class_weights is None or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            labels.reshape(-1).to(logits.device),
            weight=self.class_weights.to(logits.device),
            ignore_index=IGNORE_INDEX,
        )
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        if self.layerwise_lr_decay is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        groups = layerwise_parameter_groups(
            opt_model,
            self.args.learning_rate,
            self.layerwise_lr_decay,
            self.args.weight_decay,
            self.get_decay_parameter_names(opt_model),
        )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        optimizer_kwargs.pop("lr", None)  # each group carries its own
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer
