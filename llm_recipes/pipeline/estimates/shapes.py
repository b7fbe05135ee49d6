"""Parameter counts, exact and free: a model built on the meta device from its config (tied weights counted once),
and the parameters a stage trains (all of them, PEFT's LoRA adapters, or the unfrozen top of partial fine-tuning).

Shapes are cached by the config's JSON, so a pipeline that sizes the same architecture in several stages builds it
once per head.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Any

import torch
from peft import get_peft_model
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from trl import ModelConfig, get_peft_config

import llm_recipes.models  # noqa: F401  (our recurrent baseline registers with the Auto classes)
from llm_recipes.errors import UserError
from llm_recipes.models.loading import freeze_for_partial_finetuning, transformer_blocks

HEADS = ("causal_lm", "masked_lm", "sequence_classification")


def with_fields(config: PretrainedConfig, fields: dict[str, Any]) -> PretrainedConfig:
    """A copy of `config` with `fields` set."""
    config = config.__class__.from_dict(config.to_dict())
    for key, value in fields.items():
        setattr(config, key, value)
    return config


def parameter_count(config: PretrainedConfig, *, head: str = "causal_lm") -> int:
    """Exact count by instantiating on the meta device (no memory): head causal_lm | masked_lm |
    sequence_classification."""
    return model_shape(config, head).parameters


def _config_key(config: PretrainedConfig) -> str:
    return json.dumps({"__class__": type(config).__name__, **config.to_dict()}, sort_keys=True, default=str)


def _config_from_key(key: str) -> PretrainedConfig:
    fields = json.loads(key)
    fields.pop("__class__")
    return AutoConfig.for_model(**fields)


def _meta_model(config: PretrainedConfig, head: str) -> PreTrainedModel:
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    auto_class = {
        "causal_lm": AutoModelForCausalLM,
        "masked_lm": AutoModelForMaskedLM,
        "sequence_classification": AutoModelForSequenceClassification,
    }[head]
    if head == "sequence_classification":
        config = with_fields(config, {"num_labels": 1})
    with torch.device("meta"):
        return auto_class.from_config(config)


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need from a model, read once from its meta-device instance."""

    parameters: int
    embedding: int  # input embeddings
    largest_block: int  # one transformer block (the unit ZeRO-3/FSDP gathers)
    quantizable: int  # Linear weights bitsandbytes would quantize (all but the output head)
    matrices: tuple[tuple[int, int], ...]  # 2-D parameter shapes (Adafactor's factored moments)
    vectors: int  # parameters of 1-D (or 0-D) tensors


def model_shape(config: PretrainedConfig, head: str) -> ModelShape:
    """The shape of `config`'s model with this head (causal_lm | masked_lm | sequence_classification)."""
    return _shape(_config_key(config), head)


@functools.lru_cache(maxsize=64)
def _shape(config_key: str, head: str) -> ModelShape:
    model = _meta_model(_config_from_key(config_key), head)
    parameters = sum(p.numel() for p in model.parameters())
    embeddings = model.get_input_embeddings()
    embedding = embeddings.weight.numel() if embeddings is not None else 0
    try:
        largest_block = max(sum(p.numel() for p in block.parameters()) for block in transformer_blocks(model))
    except UserError:
        largest_block = parameters
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    heads = {id(output)} if output is not None else set()
    score = getattr(model, "score", None) or getattr(model, "classifier", None)
    if score is not None:
        heads.add(id(score))
    quantizable = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear) and id(m) not in heads)
    matrices = tuple(tuple(p.shape) for p in model.parameters() if p.dim() == 2)
    vectors = sum(p.numel() for p in model.parameters() if p.dim() != 2)
    return ModelShape(parameters, embedding, largest_block, quantizable, matrices, vectors)


@dataclass(frozen=True)
class Trainable:
    count: int
    adapter: bool  # new (LoRA/DoRA) parameters, fp32, on top of a frozen base
    matrices: tuple[tuple[int, int], ...]
    vectors: int


def trainable_parameters(config: PretrainedConfig, head: str, settings: dict[str, Any]) -> Trainable:
    """What the stage's settings train: every parameter, the LoRA adapters (`use_peft`) or the unfrozen top
    (`trainable_top_layers`, `trainable_embeddings`)."""
    shape = model_shape(config, head)
    if settings.get("use_peft"):
        return _lora_trainable(_config_key(config), head, _peft_key(settings, head))
    top, embeddings = settings.get("trainable_top_layers"), settings.get("trainable_embeddings")
    if top is not None or embeddings:
        return _partial_trainable(_config_key(config), head, top, bool(embeddings))
    return Trainable(shape.parameters, False, shape.matrices, shape.vectors)


def _peft_key(settings: dict[str, Any], head: str) -> str:
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    fields = {k: v for k, v in settings.items() if k in names and k != "model_name_or_path"}
    if head == "sequence_classification":
        fields["lora_task_type"] = "SEQ_CLS"
    return json.dumps(fields, sort_keys=True, default=str)


@functools.lru_cache(maxsize=32)
def _lora_trainable(config_key: str, head: str, peft_key: str) -> Trainable:
    """The exact adapter size: TRL's own LoraConfig for these fields, applied by PEFT to a meta-device model."""
    fields = json.loads(peft_key)
    fields.update(use_peft=True, load_in_4bit=False, load_in_8bit=False)  # quantization leaves the adapter alone
    peft_config = get_peft_config(ModelConfig(**fields))
    model = _meta_model(_config_from_key(config_key), head)
    with torch.device("meta"):
        model = get_peft_model(model, peft_config)
    trained = [p for p in model.parameters() if p.requires_grad]
    return Trainable(
        sum(p.numel() for p in trained),
        True,
        tuple(tuple(p.shape) for p in trained if p.dim() == 2),
        sum(p.numel() for p in trained if p.dim() != 2),
    )


@functools.lru_cache(maxsize=32)
def _partial_trainable(config_key: str, head: str, top_layers: int | None, embeddings: bool) -> Trainable:
    model = _meta_model(_config_from_key(config_key), head)
    freeze_for_partial_finetuning(model, top_layers, embeddings)
    trained = [p for p in model.parameters() if p.requires_grad]
    return Trainable(
        sum(p.numel() for p in trained),
        False,
        tuple(tuple(p.shape) for p in trained if p.dim() == 2),
        sum(p.numel() for p in trained if p.dim() != 2),
    )
