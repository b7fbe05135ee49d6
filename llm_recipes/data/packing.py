"""Pretraining rows: documents tokenized with a separator, packed into fixed-length blocks, and batched.

Packing concatenates the documents of a map batch (EOS after each) and cuts the stream into `block_size` rows;
the last, shorter row of each map batch is kept and padded rather than dropped, so no token is lost. With
`separate_documents`, each row also carries position ids that restart at every document: transformers' causal
models turn restarts into a block-diagonal mask (flash-attention varlen on GPU, a packed mask for sdpa/eager),
so a token never attends to another document. Masked-LM encoders ignore that signal (their bidirectional mask
has no packed-sequence support), so for them the collator builds the block-diagonal 4D mask itself.

Why our own rather than upstream: `DataCollatorWithFlattening` packs a whole batch into one row of varying length
(padding-free, but no fixed blocks), TRL's packing is for SFT datasets, and `run_clm`'s `group_texts` drops the
remainder and keeps no document boundaries. The cutting is vectorised over Arrow buffers (no per-token Python),
and every function here is a pure batch function that runs under `datasets.map(batched=True, num_proc=N)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from llm_recipes.errors import UserError

IGNORE_INDEX = -100


def separator_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that ends every document: EOS, or SEP for BERT-style tokenizers that have no EOS."""
    for token_id in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if token_id is not None:
            return token_id
    raise UserError("the tokenizer has no EOS (or SEP) token to separate documents; add one (eos_token) and retry")


def tokenize_batch(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, separator_id: int, text_column: str = "text"
) -> dict[str, list]:
    """Tokenize documents with the tokenizer's own special tokens (BOS, CLS/SEP), then end each with the separator
    unless the tokenizer already did (BERT's SEP)."""
    encoded = tokenizer(batch[text_column], add_special_tokens=True, return_attention_mask=False, verbose=False)
    ids = encoded["input_ids"]
    for row in ids:
        if not row or row[-1] != separator_id:
            row.append(separator_id)
    return {"input_ids": ids}


def tokenize_documents(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    text_column: str = "text",
    keep_columns: Sequence[str] = (),
    num_proc: int | None = None,
) -> Dataset:
    """One row per document: `input_ids` ending with the separator, plus `keep_columns` (e.g. a curriculum score)."""
    separator_id = separator_token_id(tokenizer)
    return dataset.map(
        tokenize_batch,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "separator_id": separator_id, "text_column": text_column},
        remove_columns=[c for c in dataset.column_names if c not in keep_columns],
        num_proc=num_proc,
        desc="Tokenizing documents",
    )


def _row_starts(doc_lengths: np.ndarray, total: int, block_size: int, pack: bool) -> np.ndarray:
    """Where each output row starts in the concatenated token stream."""
    if pack:
        return np.arange(0, total, block_size, dtype=np.int64)
    # one document per row, documents longer than a block split into block-sized pieces
    pieces = -(-doc_lengths // block_size)
    doc_starts = np.concatenate([[0], np.cumsum(doc_lengths)[:-1]])
    first_piece = np.concatenate([[0], np.cumsum(pieces)[:-1]])
    piece_in_doc = np.arange(pieces.sum()) - np.repeat(first_piece, pieces)
    return np.repeat(doc_starts, pieces) + piece_in_doc * block_size


def pack_table(table: pa.Table, block_size: int, pack: bool = True, separate_documents: bool = False) -> pa.Table:
    """A batch of tokenized documents -> rows of at most `block_size` tokens (a pure Arrow batch function).

    With `separate_documents`, `position_ids` restart at 0 at every document start and at every row start (the
    part of a document continued from the previous row cannot see its beginning)."""
    column = table.column("input_ids").combine_chunks()
    tokens = column.flatten().to_numpy(zero_copy_only=False)
    doc_lengths = np.diff(column.offsets.to_numpy()).astype(np.int64)
    total = len(tokens)
    starts = _row_starts(doc_lengths, total, block_size, pack)
    offsets = np.append(starts, total).astype(np.int32)
    columns = {"input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(tokens))}
    if separate_documents:
        index = np.arange(total, dtype=np.int64)
        doc_start = np.repeat(np.concatenate([[0], np.cumsum(doc_lengths)[:-1]]), doc_lengths)
        row_start = np.repeat(starts, np.diff(offsets))
        positions = index - np.maximum(doc_start, row_start)
        columns["position_ids"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(positions.astype(np.int32)))
    return pa.table(columns)


def pack_documents(
    tokenized: Dataset,
    block_size: int,
    *,
    pack: bool = True,
    separate_documents: bool = False,
    num_proc: int | None = None,
    map_batch_size: int = 2000,
) -> Dataset:
    """Tokenized documents -> training rows, in document order (a curriculum's order survives packing)."""
    return (
        tokenized.select_columns(["input_ids"])
        .with_format("arrow")
        .map(
            pack_table,
            batched=True,
            batch_size=map_batch_size,
            fn_kwargs={"block_size": block_size, "pack": pack, "separate_documents": separate_documents},
            remove_columns=["input_ids"],
            num_proc=num_proc,
            desc="Packing blocks" if pack else "Splitting documents into blocks",
        )
        .with_format(None)
    )


def row_lengths(dataset: Dataset) -> np.ndarray:
    """Tokens in each row, read from the Arrow offsets (no Python loop over tokens)."""
    column = dataset.data.column("input_ids")
    chunks = column.chunks if hasattr(column, "chunks") else [column]
    lengths = [np.diff(chunk.offsets.to_numpy()) for chunk in chunks]
    return np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)


def non_padding_share(
    lengths: np.ndarray,
    batch_size: int,
    *,
    fixed_width: int | None = None,
    pad_to_multiple_of: int | None = None,
    seed: int = 0,
) -> float:
    """Share of the token slots the model computes on that hold real tokens, batched as the collator will.

    With a fixed width (packing) every row is padded to it; otherwise each batch is padded to its longest row,
    so the share depends on which rows meet: it is estimated over one seeded shuffle, as the Trainer samples."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) == 0:
        return 0.0
    if fixed_width is not None:
        return float(lengths.sum() / (len(lengths) * fixed_width))
    shuffled = np.random.default_rng(seed).permutation(lengths)
    slots = 0
    for start in range(0, len(shuffled), batch_size):
        batch = shuffled[start : start + batch_size]
        width = int(batch.max())
        if pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        slots += width * len(batch)
    return float(lengths.sum() / slots)


@dataclass
class PackedLMCollator:
    """Rows -> a batch for causal or masked LM, padded, with labels and the attention layout the rows need.

    - causal LM: labels are the inputs (the model shifts them); padding gets IGNORE_INDEX. With separate documents
      the first token of each document is not a target either: predicting it would read the previous document.
    - masked LM: `mlm_collator.torch_mask_tokens` (transformers' 80/10/10 masking) on every real, non-special token.
    - attention: trailing padding needs no mask for a causal model; a padded masked-LM batch gets a 2D mask; with
      separate documents a causal model gets restarting `position_ids` (and `use_cache=False`: transformers skips
      packed-sequence masking when a cache is created), an encoder a block-diagonal 4D mask (`bool` for sdpa,
      additive for eager attention).
    """

    pad_token_id: int
    objective: str = "clm"
    fixed_width: int | None = None
    separate_documents: bool = False
    mlm_collator: DataCollatorForLanguageModeling | None = None
    special_token_ids: Sequence[int] = ()
    additive_attention_mask: bool = False
    pad_to_multiple_of: int | None = 8
    _special: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        if self.objective == "mlm" and self.mlm_collator is None:
            raise ValueError("the mlm objective needs mlm_collator (a DataCollatorForLanguageModeling with mlm=True)")
        self._special = torch.tensor(sorted(set(self.special_token_ids)), dtype=torch.long)

    def _width(self, longest: int) -> int:
        if self.fixed_width is not None:
            return max(self.fixed_width, longest)
        if self.pad_to_multiple_of:
            return -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return longest

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        lengths = [len(example["input_ids"]) for example in examples]
        width = self._width(max(lengths))
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        real = torch.zeros((len(examples), width), dtype=torch.bool)
        positions = torch.zeros((len(examples), width), dtype=torch.long) if self.separate_documents else None
        for row, (example, length) in enumerate(zip(examples, lengths, strict=True)):
            input_ids[row, :length] = torch.as_tensor(example["input_ids"], dtype=torch.long)
            real[row, :length] = True
            if positions is not None:
                positions[row, :length] = torch.as_tensor(example["position_ids"], dtype=torch.long)
                positions[row, length:] = torch.arange(width - length)  # padding is a segment of its own
        padded = not bool(real.all())

        batch: dict[str, Any] = {}
        if self.objective == "mlm":
            no_mask = ~real | torch.isin(input_ids, self._special)
            batch["input_ids"], batch["labels"] = self.mlm_collator.torch_mask_tokens(
                input_ids, special_tokens_mask=no_mask
            )
        else:
            labels = input_ids.clone()
            labels[~real] = IGNORE_INDEX
            if positions is not None:
                labels[positions == 0] = IGNORE_INDEX
            batch["input_ids"], batch["labels"] = input_ids, labels

        if positions is not None:
            batch["position_ids"] = positions
            if self.objective == "mlm":
                batch["attention_mask"] = self._block_diagonal_mask(positions)
            else:
                batch["use_cache"] = False
        elif padded and (self.objective == "mlm" or self.fixed_width is None):
            batch["attention_mask"] = real.long()
        return batch

    def _block_diagonal_mask(self, positions: torch.Tensor) -> torch.Tensor:
        segments = (positions == 0).cumsum(dim=1)
        same = (segments[:, :, None] == segments[:, None, :])[:, None]
        if not self.additive_attention_mask:
            return same
        return torch.zeros(same.shape).masked_fill_(~same, torch.finfo(torch.float32).min)


def target_token_count(labels: torch.Tensor, causal: bool) -> torch.Tensor:
    """How many tokens a batch's loss averages over (a causal LM shifts labels left by one)."""
    if causal:
        labels = labels[:, 1:]
    return (labels != IGNORE_INDEX).sum()
