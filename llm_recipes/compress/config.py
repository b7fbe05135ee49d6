"""Distillation, quantization and pruning: their script arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_recipes.configs.options import OutputOptions, ResumeOptions
from llm_recipes.configs.parsing import (
    DATA_FORMATS,
    RANGE_CHECKS,
)
from llm_recipes.data.config import DatasetArguments

DISTILL_METHODS = ("logits", "gkd")
DISTILL_DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


@dataclass
class DistillArguments(DatasetArguments):
    """Teacher -> smaller student: what the distill recipe needs beyond `TrainingArguments`."""

    # teacher and student
    teacher_name_or_path: str | None = field(
        default=None, metadata={"help": "The model to distill (folder or Hub id); its tokenizer is the student's."}
    )
    teacher_dtype: str = field(
        default="auto",
        metadata={
            "help": "Teacher weights dtype (auto: as saved). The student trains in float32; use bf16: true for "
            "mixed precision.",
            "choices": ("auto", "float32", "bfloat16", "float16"),
        },
    )
    student_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Student = the teacher with only these decoder layers (embeddings, final norm and LM head "
            "copied). The default when no student is named: every other layer, [0, 2, 4, ...]."
        },
    )
    student_preset: str | None = field(
        default=None, metadata={"help": "Student = a random model of this size (llama-tiny ... llama-1b)."}
    )
    student_config_overrides: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Config fields to change on the preset student, e.g. {num_hidden_layers: 3}."}
    )
    student_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Student = this existing model; its tokenizer must be the teacher's (checked)."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})
    # the loss
    method: str = field(
        default="logits",
        metadata={
            "help": "logits: our Trainer, KL on the teacher's logits blended with the label loss, on text or chat "
            "data. gkd: TRL's experimental on-policy GKDTrainer (chat data; the student also learns from its own "
            "samples).",
            "choices": DISTILL_METHODS,
        },
    )
    divergence: str = field(
        default="forward_kl",
        metadata={
            "help": "forward_kl: KL(teacher || student), the classic; reverse_kl: KL(student || teacher); jsd: "
            "generalized Jensen-Shannon with jsd_beta.",
            "choices": DISTILL_DIVERGENCES,
        },
    )
    temperature: float = field(
        default=2.0,
        metadata={"help": "Softens both distributions (the KD term is scaled by T^2); gkd: the sampling temperature."},
    )
    alpha: float = field(
        default=0.5, metadata={"help": "Weight of the distillation term; 1 - alpha weighs the label loss (logits)."}
    )
    jsd_beta: float = field(default=0.5, metadata={"help": "The teacher's weight in the jsd mixture, in (0, 1)."})
    gkd_lmbda: float = field(
        default=0.5, metadata={"help": "gkd: share of steps trained on the student's own generations."}
    )
    gkd_max_new_tokens: int = field(default=64, metadata={"help": "gkd: tokens the student generates per prompt."})
    gkd_seq_kd: bool = field(
        default=False, metadata={"help": "gkd: on the other steps, train on the teacher's generations."}
    )
    # data
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Text (packed into max_length blocks), chats or prompt/completion pairs: a data file, a "
            "`save_to_disk` folder or a Hub dataset id."
        },
    )
    eval_split_size: float = field(
        default=0.05,
        metadata={"help": "Rows held out for evaluation: a share (0 <= x < 1) or a count (>= 1); 0 for none."},
    )
    max_length: int = field(
        default=512,
        metadata={"help": "Tokens per row: text is packed into blocks this long, chats are cut to it."},
    )
    assistant_only_loss: bool = field(
        default=True, metadata={"help": "Chats: distill and train on the assistant turns only."}
    )
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenizing and packing."})
    # the comparison report
    compare_with_teacher: bool = field(
        default=True,
        metadata={
            "help": "Write compression_report.json: student vs teacher on the evaluation protocol (`protocol`; "
            "without one: perplexity of the eval rows, size on disk, CPU latency, parameters)."
        },
    )
    protocol: str | None = field(
        default=None,
        metadata={
            "help": "The evaluation protocol YAML (configs/demo/protocol.yaml) both models are measured on: the "
            "same measures and data as the evaluate stage and the pipeline table."
        },
    )
    compare_labels_only: bool = field(
        default=False,
        metadata={
            "help": "Also train the same student on the labels alone (alpha 0: no teacher) with the same data, "
            "steps, rate and seed, into output_dir/labels-only, and measure it on the protocol beside the distilled "
            "one: what the teacher adds at equal budget (method logits; needs protocol)."
        },
    )
    report_eval_texts: int = field(
        default=64, metadata={"help": "Without a protocol: eval rows scored for the report's perplexity."}
    )
    latency_new_tokens: int = field(
        default=16, metadata={"help": "Without a protocol: tokens generated per latency measurement."}
    )
    latency_repeats: int = field(
        default=3, metadata={"help": "Without a protocol: timed generations per model (the median is kept)."}
    )
    report_reward_model: str | None = field(
        default=None,
        metadata={"help": "Replaced by `protocol` (its reward_model scores both models' answers); refused if set."},
    )
    report_max_new_tokens: int = field(
        default=64, metadata={"help": "Replaced by `protocol` (its max_new_tokens); refused if changed."}
    )


RANGE_CHECKS["temperature"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["alpha"] = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
RANGE_CHECKS["jsd_beta"] = (lambda v: 0 < v < 1, "must be in (0, 1)")
RANGE_CHECKS["gkd_lmbda"] = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
RANGE_CHECKS["gkd_max_new_tokens"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["report_eval_texts"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["latency_new_tokens"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["latency_repeats"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["report_max_new_tokens"] = (lambda v: v >= 1, "must be >= 1")


# --------------------------------------------------------------------------------------------------------------
# Quantize and prune: compressed models compared with their source (llm_recipes/compress/report.py)


@dataclass
class CompressionEvalArguments(OutputOptions):
    """How the quantize and prune stages compare the compressed model with its source: on the evaluation protocol
    (`protocol`), or on a protocol made of the report fields below."""

    protocol: str | None = field(
        default=None,
        metadata={
            "help": "The evaluation protocol YAML (configs/demo/protocol.yaml) both models are measured on: the "
            "same measures and data as the evaluate stage and the pipeline table. Replaces eval_dataset_path, "
            "eval_accuracy and reward_model_path."
        },
    )
    eval_dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Without a protocol: data for the report, perplexity of its texts (and reward/accuracy on its "
            "prompts when asked). Any format SFT reads; without it the report has sizes and latency only."
        },
    )
    data_format: str = field(
        default="auto",
        metadata={"help": "Format of every dataset of the stage; `auto` detects it.", "choices": DATA_FORMATS},
    )
    text_field: str = field(default="text", metadata={"help": "Column holding plain text for the `text` format."})
    eval_dataset_split: str = field(default="train", metadata={"help": "Split of `eval_dataset_path` to use."})
    max_eval_samples: int | None = field(default=64, metadata={"help": "Eval rows used for the report."})
    reward_model_path: str | None = field(
        default=None,
        metadata={"help": "Also compare the models' answers to the eval prompts under this reward model."},
    )
    eval_accuracy: bool = field(
        default=False,
        metadata={"help": "Also compare exact-match accuracy of greedy answers to the eval prompts (needs answers)."},
    )
    max_new_tokens: int = field(
        default=64, metadata={"help": "Without a protocol: tokens generated per answer (reward, accuracy)."}
    )
    latency_new_tokens: int = field(
        default=16, metadata={"help": "Without a protocol: tokens generated per latency measurement."}
    )
    latency_repeats: int = field(
        default=3, metadata={"help": "Without a protocol: timed generations per model (the median is kept)."}
    )
    calibration_dataset_path: str | None = field(
        default=None, metadata={"help": "Text the method calibrates on (Wanda, structured pruning, GPTQ)."}
    )
    calibration_samples: int = field(default=128, metadata={"help": "Calibration windows of calibration_length."})
    calibration_length: int = field(
        default=512, metadata={"help": "Tokens per calibration window (capped at the model's positions)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})


QUANTIZE_METHODS = ("bnb_int8", "bnb_4bit", "torchao_int8_weight_only", "torchao_int8_dynamic", "gptq")


@dataclass
class QuantizeArguments(CompressionEvalArguments):
    """A full-precision model (or an adapter merged into its full-precision base) saved quantized, with a report."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The full-precision model folder to quantize, or a LoRA/DoRA adapter folder."}
    )
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The full-precision base an adapter merges into (default: its own record)."}
    )
    output_dir: str = field(default="outputs/quantized", metadata={"help": "Where the quantized model is written."})
    method: str = field(
        default="bnb_int8",
        metadata={
            "help": "bnb_int8, bnb_4bit (bitsandbytes); torchao_int8_weight_only, torchao_int8_dynamic (CPU "
            "deployment); gptq (CUDA, pip install optimum gptqmodel).",
            "choices": QUANTIZE_METHODS,
        },
    )
    bnb_4bit_quant_type: str = field(
        default="nf4", metadata={"help": "bnb_4bit: NormalFloat4 or plain FP4.", "choices": ("nf4", "fp4")}
    )
    bnb_4bit_use_double_quant: bool = field(
        default=False, metadata={"help": "bnb_4bit: also quantize the quantization constants (~0.4 bit/weight)."}
    )
    bnb_4bit_compute_dtype: str = field(
        default="auto",
        metadata={
            "help": "bnb_4bit: dtype the layers compute in (auto: the model's saved dtype).",
            "choices": ("auto", "float32", "bfloat16", "float16"),
        },
    )
    gptq_bits: int = field(default=4, metadata={"help": "gptq: bits per weight.", "choices": (2, 3, 4, 8)})
    gptq_group_size: int = field(default=128, metadata={"help": "gptq: weights sharing one scale (-1: a row)."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "An adapter is merged in this dtype before quantizing (auto: the base's).",
            "choices": ("auto", "float32", "float16", "bfloat16"),
        },
    )
    max_shard_size: str = field(default="5GB", metadata={"help": "Largest safetensors shard, e.g. 500MB, 5GB."})
    compare_samples: int = field(
        default=8, metadata={"help": "Windows of eval text on which logits are compared (source, reloaded)."}
    )
    compare_length: int = field(default=64, metadata={"help": "Tokens per comparison window."})
    seed: int = field(default=42, metadata={"help": "Seed of the calibration and comparison windows."})


RANGE_CHECKS["calibration_samples"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["calibration_length"] = (lambda v: v >= 2, "must be >= 2")
RANGE_CHECKS["compare_samples"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["compare_length"] = (lambda v: v >= 2, "must be >= 2")
RANGE_CHECKS["gptq_group_size"] = (lambda v: v == -1 or v >= 1, "must be >= 1 (or -1: one group per row)")


PRUNE_METHODS = ("magnitude", "wanda", "structured")


@dataclass
class PruneArguments(CompressionEvalArguments, ResumeOptions):
    """A model pruned (unstructured, N:M or structured), optionally fine-tuned to recover, with a report. Parsed
    with `TrainingArguments`, which set output_dir, seed and the recovery fine-tune."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The full-precision model folder to prune, or a LoRA/DoRA adapter folder."}
    )
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The full-precision base an adapter merges into (default: its own record)."}
    )
    method: str = field(
        default="wanda",
        metadata={
            "help": "magnitude: smallest |W| per layer; wanda: smallest |W| x input norm per output row (needs "
            "calibration data); structured: remove attention heads and MLP channels (the model really shrinks).",
            "choices": PRUNE_METHODS,
        },
    )
    sparsity: float = field(default=0.5, metadata={"help": "magnitude/wanda: share of weights zeroed per layer."})
    sparsity_pattern: str = field(
        default="unstructured",
        metadata={"help": "magnitude/wanda: unstructured, or N:M such as 2:4 (N of every M inputs zeroed)."},
    )
    sparsity_group: str = field(
        default="auto",
        metadata={
            "help": "Unstructured: compare scores within each output row or over the whole matrix; auto: Wanda per "
            "row, magnitude per matrix (each paper's choice). Small models can do better per matrix (see "
            "benchmarks/README.md).",
            "choices": ("auto", "row", "layer"),
        },
    )
    heads_to_prune: int = field(default=0, metadata={"help": "structured: query heads removed per layer."})
    prune_kv_heads: bool = field(
        default=True,
        metadata={
            "help": "structured: remove whole KV groups (heads_to_prune a multiple of heads per KV head); false: "
            "the same number of query heads from every KV group."
        },
    )
    mlp_channels_to_prune: int = field(default=0, metadata={"help": "structured: MLP channels removed per layer."})
    recovery_dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Fine-tune the pruned model on this text to recover (the pretrain stage's trainer; pruned "
            "weights stay zero). Length and optimizer from the training fields (max_steps, learning_rate, ...)."
        },
    )
    recovery_datasets: list[dict[str, Any]] | None = field(
        default=None,
        metadata={
            "help": "Recover on chats instead (YAML only): a mixture like SFT's `datasets` ({path, format, weight}), "
            "trained as SFT trains (chat template, loss on the assistant turns), so a chat model keeps its format "
            "and still ends its answers. Excludes recovery_dataset_path."
        },
    )
    recovery_block_size: int = field(
        default=256,
        metadata={"help": "Tokens per recovery training block (text); with recovery_datasets, the longest row kept."},
    )
    max_recovery_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many recovery documents."}
    )


RANGE_CHECKS["sparsity"] = (lambda v: 0 <= v < 1, "must be in [0, 1)")
RANGE_CHECKS["heads_to_prune"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["mlp_channels_to_prune"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["recovery_block_size"] = (lambda v: v >= 8, "must be >= 8")
RANGE_CHECKS["max_recovery_samples"] = (lambda v: v is None or v >= 1, "must be >= 1")

# fields these arguments share with another stage's, checked the same way whichever is imported
RANGE_CHECKS["dataset_num_proc"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["max_new_tokens"] = (lambda v: v >= 1, "must be >= 1")
