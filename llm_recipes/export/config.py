"""The export stage's arguments: merge, dtype, shards, quantization, GGUF, card and Hub push."""

from __future__ import annotations

from dataclasses import dataclass, field

from llm_recipes.configs.options import OutputOptions

EXPORT_DTYPES = ("auto", "float32", "float16", "bfloat16")
EXPORT_QUANTIZATIONS = ("none", "int8", "nf4")
GGUF_TYPES = ("none", "f32", "f16", "q8_0")


@dataclass
class ExportArguments(OutputOptions):
    """A trained model (or adapter) made deployable: merged, sharded, carded, optionally GGUF, optionally pushed."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The stage output to export: a full model folder or a PEFT adapter folder (LoRA, DoRA)."},
    )
    output_dir: str = field(default="outputs/export", metadata={"help": "Where the deployable folder is written."})
    base_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The full-precision base an adapter merges into (default: its adapter_config's)."},
    )
    merge_adapter: bool = field(
        default=True,
        metadata={"help": "Merge an adapter into its base; false exports (and pushes) the adapter on its own."},
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "Weights dtype of the export; auto keeps the base model's.", "choices": EXPORT_DTYPES},
    )
    max_shard_size: str = field(
        default="5GB", metadata={"help": "Largest safetensors shard, e.g. 500MB, 5GB (or a byte count)."}
    )
    quantization: str = field(
        default="none",
        metadata={
            "help": "Save the weights quantized with bitsandbytes (int8, nf4); they load the same way, with "
            "bitsandbytes installed.",
            "choices": EXPORT_QUANTIZATIONS,
        },
    )
    gguf_type: str = field(
        default="none",
        metadata={"help": "Also write a GGUF file for llama.cpp (Llama architectures).", "choices": GGUF_TYPES},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})
    # model card
    model_name: str | None = field(default=None, metadata={"help": "Name on the card (default: the repo name)."})
    license: str | None = field(default=None, metadata={"help": "License id for the card, e.g. apache-2.0."})
    language: list[str] | None = field(default=None, metadata={"help": "Language codes for the card, e.g. en."})
    tags: list[str] | None = field(default=None, metadata={"help": "Extra card tags (llm-recipes and stages added)."})
    datasets: list[str] | None = field(
        default=None, metadata={"help": "Hub dataset ids for the card (those found in the stage manifests added)."}
    )
    eval_results_path: str | None = field(
        default=None,
        metadata={"help": "The evaluation stage's eval_results.json (or its folder): metrics for the card."},
    )
    intended_use: str | None = field(default=None, metadata={"help": "The card's intended-use paragraph."})
    limitations: str | None = field(default=None, metadata={"help": "The card's limitations paragraph."})
    # Hub
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the export to the Hub (private by default)."})
    hub_model_id: str | None = field(
        default=None, metadata={"help": "Repo id for the push (default: the output folder's name, your namespace)."}
    )
    hub_private_repo: bool = field(default=True, metadata={"help": "Create the Hub repo as private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to (created if missing)."})
    commit_message: str | None = field(default=None, metadata={"help": "Commit message of the push."})
