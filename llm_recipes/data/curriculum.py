"""Curriculum learning: order training documents from easy to hard by a difficulty score.

Scores: a document's length in tokens, a numeric column of the data, or the mean token loss a small causal LM
assigns it. Schedules: `sorted` (strictly ascending) or `buckets` (N groups of rising difficulty, shuffled inside
each, so batches mix similar documents without a fixed order). The order is applied to documents before packing;
packing keeps it, and the trainer must then read rows sequentially (see `PretrainTrainer`).

Neither transformers nor datasets has a curriculum sampler, hence ours; it is a permutation of row indices, so it
works on any `datasets.Dataset` and costs one `select`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

import llm_recipes.models  # noqa: F401  (our recurrent baseline can serve as the scorer too)
from llm_recipes.data.packing import row_lengths
from llm_recipes.errors import UserError

SCHEDULES = ("sorted", "buckets")


def curriculum_order(scores: Sequence[float], schedule: str = "sorted", buckets: int = 4, seed: int = 42) -> list[int]:
    """Row indices from easiest (lowest score) to hardest; ties keep the data's order (a stable sort)."""
    if schedule not in SCHEDULES:
        raise UserError(f"curriculum_schedule: unknown '{schedule}'; choose from {', '.join(SCHEDULES)}")
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    if schedule == "buckets":
        rng = np.random.default_rng(seed)
        order = np.concatenate([rng.permutation(part) for part in np.array_split(order, max(buckets, 1))])
    return order.tolist()


def length_scores(tokenized: Dataset) -> list[float]:
    """Tokens per document, from the Arrow offsets of `input_ids`."""
    return row_lengths(tokenized).astype(np.float64).tolist()


def column_scores(dataset: Dataset, column: str) -> list[float]:
    if column not in dataset.column_names:
        raise UserError(f"curriculum_column: the data has no column '{column}' (it has {dataset.column_names})")
    values = dataset[column]
    scores = []
    for row, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise UserError(f"curriculum_column '{column}': row {row} holds {value!r}, not a number")
        scores.append(float(value))
    return scores


@torch.no_grad()
def model_loss_scores(
    texts: Sequence[str],
    model_name_or_path: str,
    *,
    max_length: int = 512,
    batch_size: int = 16,
    trust_remote_code: bool = False,
) -> list[float]:
    """Mean per-token loss of each text under a small causal LM (its own tokenizer, truncated to `max_length`).

    A text too short to have a target (one token) scores 0: there is nothing in it to find hard."""
    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        model_name_or_path, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    model.eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            list(texts[start : start + batch_size]), truncation=True, max_length=max_length, verbose=False
        )["input_ids"]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
        targets = input_ids[:, 1:]
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        target_mask = mask[:, 1:].float()
        counts = target_mask.sum(dim=1)
        means = (losses * target_mask).sum(dim=1) / counts.clamp(min=1)
        scores.extend(means.cpu().tolist())
    return scores
