"""The corpus stage's arguments: raw text in, a cleaned, deduplicated, split dataset out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_recipes.configs.options import OutputOptions
from llm_recipes.configs.parsing import RANGE_CHECKS, TXT_UNITS

CORPUS_OUTPUT_FORMATS = ("arrow", "parquet")
CORPUS_ENGINES = ("datasets", "ray")


@dataclass
class CleanCorpusArguments(OutputOptions):
    """Raw text in, a cleaned, deduplicated, split `datasets` dataset out (see llm_recipes/corpus/steps.py)."""

    input_paths: list[str] | None = field(
        default=None,
        metadata={
            "help": "Files, globs, folders, `save_to_disk` folders or a Hub dataset id: txt, jsonl/json, parquet, csv, "
            "html, optionally .gz/.zst compressed."
        },
    )
    output_dir: str = field(default="outputs/corpus", metadata={"help": "Where the dataset and its report go."})
    text_field: str = field(default="text", metadata={"help": "The text column of structured inputs."})
    txt_unit: str = field(
        default="line",
        metadata={"help": "A .txt document is one line, one file, or one blank-line paragraph.", "choices": TXT_UNITS},
    )
    on_malformed: str = field(
        default="skip",
        metadata={"help": "A malformed record is skipped (and counted) or fails the run.", "choices": ("skip", "fail")},
    )
    html: str = field(
        default="extract",
        metadata={"help": "HTML files: main-text extraction, or the raw markup.", "choices": ("extract", "raw")},
    )
    input_split: str = field(default="train", metadata={"help": "Split of a Hub id or a saved DatasetDict."})
    hub_config: str | None = field(default=None, metadata={"help": "Config name of a Hub dataset."})
    streaming: bool = field(default=False, metadata={"help": "Stream a Hub dataset instead of downloading it all."})
    max_documents: int | None = field(default=None, metadata={"help": "Read at most this many documents."})
    preset: str | None = field(
        default=None,
        metadata={"help": "A ready pipeline when `steps` is unset: minimal or web.", "choices": ("minimal", "web")},
    )
    steps: list[Any] | None = field(
        default=None,
        metadata={
            "help": "The pipeline, in order (YAML only): normalize, filters by name or preset (length, gopher, c4, "
            "fineweb, language, bad_words, regex, callable), pii, exact_dedup, near_dedup, decontaminate, augment."
        },
    )
    validation_size: float = field(default=0.0, metadata={"help": "Validation split: a share below 1 or a count."})
    test_size: float = field(default=0.0, metadata={"help": "Test split: a share below 1 or a count."})
    cross_split_dedup: bool = field(
        default=True, metadata={"help": "Drop train documents that duplicate a validation/test document."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the split (and of augmentation)."})
    output_format: str | None = field(
        default=None,
        metadata={
            "help": "arrow: `save_to_disk`; parquet: Hub-style data/<split>-NNNNN-of-NNNNN.parquet shards; unset: "
            "arrow, or parquet with engine ray.",
            "choices": CORPUS_OUTPUT_FORMATS,
        },
    )
    rows_per_shard: int = field(default=100_000, metadata={"help": "Rows per Parquet shard."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes for every map/filter step."})
    batch_size: int = field(default=1000, metadata={"help": "Documents per batch of a map step."})
    engine: str = field(
        default="datasets",
        metadata={
            "help": "datasets: this machine (`num_proc` processes); ray: the same steps on a Ray cluster (Ray Data, "
            "`pip install 'llm-recipes[ray]'`), writing Parquet shards.",
            "choices": CORPUS_ENGINES,
        },
    )
    ray_address: str | None = field(
        default=None,
        metadata={
            "help": "engine ray: the cluster to join (host:port, 'auto', ray://host:10001); unset: RAY_ADDRESS, "
            "else a Ray started on this machine."
        },
    )
    keep_intermediate: bool = field(
        default=False, metadata={"help": "Keep the per-step checkpoints (<output_dir>.partial) after success."}
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Push the dataset to the Hub (private by default)."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Hub repo id for push_to_hub."})
    hub_private: bool = field(default=True, metadata={"help": "Create the Hub dataset repo as private."})


RANGE_CHECKS["validation_size"] = (lambda v: v >= 0, "must be >= 0 (a share below 1, or a document count)")
RANGE_CHECKS["test_size"] = (lambda v: v >= 0, "must be >= 0 (a share below 1, or a document count)")
RANGE_CHECKS["rows_per_shard"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["num_proc"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["batch_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["max_documents"] = (lambda v: v is None or v >= 1, "must be >= 1")
