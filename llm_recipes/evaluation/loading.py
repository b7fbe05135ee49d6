"""Loading whatever a stage wrote -- a full model, a PEFT adapter, a quantized or pruned model, our recurrent LM, a
reward model or a classifier -- for evaluation, after checking the folder really holds weights.

Stages save in different shapes (adapter folders without a tokenizer, 4-bit models that must be placed at load
time), so evaluation needs one loader that accepts them all and says in one line when a folder is not a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from peft import (
    AutoPeftModelForCausalLM,
    AutoPeftModelForSequenceClassification,
    AutoPeftModelForTokenClassification,
)
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

import llm_recipes.models  # noqa: F401  (registers our recurrent LM with the Auto classes)
from llm_recipes.configs import is_planned, looks_local
from llm_recipes.errors import UserError

ADAPTER_CONFIG = "adapter_config.json"
# how a stage's model folder names its weights (sharded checkpoints have an index beside the shards)
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json")
MODEL_KINDS = ("causal_lm", "sequence_classification", "token_classification")


def is_adapter(path: str) -> bool:
    return os.path.isfile(os.path.join(os.path.expanduser(path), ADAPTER_CONFIG))


def check_model_folder(path: str, what: str = "model") -> None:
    """A local model folder must exist, have a config (or adapter config) and safetensors weights.

    Hub ids pass unchecked (there is no network to ask now). Raises UserError, one line.
    """
    if not looks_local(path) or is_planned(path):
        return
    folder = Path(os.path.expanduser(path))
    if not folder.is_dir():
        raise UserError(f"{what}: model folder not found: {path}")
    if not (folder / "config.json").is_file() and not (folder / ADAPTER_CONFIG).is_file():
        raise UserError(f"{what}: {path} has no config.json; is it a saved model folder?")
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        other = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        hint = f" (found {', '.join(other)}: load and save_pretrained it to convert)" if other else ""
        raise UserError(f"{what}: {path} has no weights -- no .safetensors file{hint}")


def model_kind(path: str) -> str:
    """causal_lm, sequence_classification or token_classification, from the saved config's architecture."""
    folder = os.path.expanduser(path)
    if is_adapter(folder):
        task = json.loads(Path(folder, ADAPTER_CONFIG).read_text(encoding="utf-8")).get("task_type") or ""
        return {"SEQ_CLS": "sequence_classification", "TOKEN_CLS": "token_classification"}.get(task, "causal_lm")

    architectures = AutoConfig.from_pretrained(folder).architectures or []
    for architecture in architectures:
        if architecture.endswith("ForSequenceClassification"):
            return "sequence_classification"
        if architecture.endswith("ForTokenClassification"):
            return "token_classification"
        if architecture.endswith("ForMaskedLM"):
            # loading it as a causal LM would "work" and report nonsense: a masked LM sees the tokens it predicts
            raise UserError(f"{path} is a masked LM ({architecture}); evaluate causal LMs, classifiers, reward models")
    return "causal_lm"


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype | str:
    """Unset: float32 on CPU (half precision is slow and lossy there), the saved dtype on a GPU."""
    if dtype is None:
        return "auto" if device.type == "cuda" else torch.float32
    return dtype if dtype == "auto" else getattr(torch, dtype)


def load_tokenizer_for(path: str, tokenizer_path: str | None = None, trust_remote_code: bool = False):
    """The model's tokenizer; an adapter folder saved without one falls back to its base model's."""
    source = tokenizer_path or path
    folder = Path(os.path.expanduser(source))
    has_tokenizer = (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file()
    if not tokenizer_path and folder.is_dir() and not has_tokenizer and is_adapter(source):
        source = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        # batching needs a pad token; it is always masked out, so which token it is does not matter
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _auto_class(kind: str, adapter: bool):
    if adapter:
        classes = {
            "causal_lm": AutoPeftModelForCausalLM,
            "sequence_classification": AutoPeftModelForSequenceClassification,
            "token_classification": AutoPeftModelForTokenClassification,
        }
    else:
        classes = {
            "causal_lm": AutoModelForCausalLM,
            "sequence_classification": AutoModelForSequenceClassification,
            "token_classification": AutoModelForTokenClassification,
        }
    return classes[kind]


def _is_quantized(path: str) -> bool:
    config = Path(os.path.expanduser(path), "config.json")
    return config.is_file() and "quantization_config" in json.loads(config.read_text(encoding="utf-8"))


def load_model(
    path: str,
    kind: str = "causal_lm",
    *,
    device: str | torch.device | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """A model in eval mode on `device`: full weights or a PEFT adapter (on its base), quantized or not."""
    if kind not in MODEL_KINDS:
        raise UserError(f"unknown model kind '{kind}'; choose from {', '.join(MODEL_KINDS)}")
    check_model_folder(path)
    device = device if isinstance(device, torch.device) else pick_device(device)
    kwargs: dict[str, Any] = dict(dtype=resolve_dtype(dtype, device), trust_remote_code=trust_remote_code)
    quantized = _is_quantized(path)
    if quantized and device.type == "cuda":
        kwargs["device_map"] = {"": device.index or 0}  # k-bit weights are placed at load time, never moved
    adapter = is_adapter(path)
    if not adapter:
        kwargs["use_safetensors"] = True
    model = _auto_class(kind, adapter).from_pretrained(os.path.expanduser(path), **kwargs)
    if not quantized:
        model.to(device)
    model.eval()
    return model


def align_pad_token(model: Any, tokenizer: Any) -> None:
    """A classifier reads the last token that is not padding, so its config must know the tokenizer's pad token
    (without one, transformers refuses batches)."""
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device
