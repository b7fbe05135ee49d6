"""The train-tokenizer stage's arguments."""

from __future__ import annotations

from dataclasses import dataclass, field

from llm_recipes.configs.options import OutputOptions
from llm_recipes.configs.parsing import DATA_FORMATS, RANGE_CHECKS


@dataclass
class TrainTokenizerArguments(OutputOptions):
    """A tokenizer trained from a dataset's text (or an existing tokenizer retrained on it), with a fertility report."""

    output_dir: str = field(default="outputs/tokenizer", metadata={"help": "Where the tokenizer is written."})
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Text to train on: a data file (txt = one document per line, json, jsonl, csv, parquet), a "
            "`save_to_disk` folder or a Hub dataset id. Any format SFT reads works; chats are flattened to text."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path` to train on."})
    text_field: str = field(default="text", metadata={"help": "Column holding plain text for the `text` format."})
    data_format: str = field(
        default="auto",
        metadata={"help": "Format of `dataset_path`; `auto` detects it from the columns.", "choices": DATA_FORMATS},
    )
    algorithm: str = field(
        default="bpe",
        metadata={
            "help": "bpe (byte-level) or unigram (SentencePiece-style, byte fallback). Ignored with base_tokenizer.",
            "choices": ("bpe", "unigram"),
        },
    )
    vocab_size: int = field(default=8000, metadata={"help": "Vocabulary size, special and byte tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "BPE: a pair must occur this often to be merged."})
    chat_template: bool = field(
        default=False,
        metadata={"help": "Add ChatML tokens and template, with <|im_end|> as EOS (for chat models)."},
    )
    add_bos: bool = field(default=False, metadata={"help": "Prepend the BOS token when encoding."})
    special_tokens: list[str] | None = field(
        default=None, metadata={"help": "Extra special tokens (never split, never merged into other tokens)."}
    )
    model_max_length: int | None = field(
        default=None, metadata={"help": "Context length saved with the tokenizer (the model's max positions)."}
    )
    base_tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "Retrain this tokenizer (folder or Hub id) on the data instead: its algorithm, pre-tokenizer, "
            "special tokens and chat template are kept, only the vocabulary is learned anew."
        },
    )
    max_training_documents: int | None = field(
        default=None, metadata={"help": "Train on at most this many documents (a random sample)."}
    )
    heldout_size: float = field(
        default=0.05,
        metadata={"help": "Documents held out for the fertility report: a share (< 1) or a count (>= 1); 0 for none."},
    )
    seed: int = field(default=42, metadata={"help": "Seed of the held-out split and the document sample."})


RANGE_CHECKS["vocab_size"] = (lambda v: v >= 300, "must be >= 300 (256 bytes plus special tokens and merges)")
RANGE_CHECKS["min_frequency"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["model_max_length"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["max_training_documents"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["heldout_size"] = (lambda v: v >= 0, "must be >= 0 (a share below 1, or a document count)")
