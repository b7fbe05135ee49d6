"""The pieces of the pretrain stage: text from any dataset, the model (from scratch or continued), the trainer class
(`trainer.build_trainer` puts them together).

`PretrainTrainer` is `transformers.Trainer` with the few things pretraining needs and upstream lacks:
a sequential sampler when a curriculum ordered the data, eval loss averaged over tokens (not batches) with its
perplexity logged beside it, and a guard that stops on a NaN/Inf loss before a broken checkpoint is written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import SequentialSampler
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
)

import llm_recipes.models  # noqa: F401  (registers our recurrent baseline with the Auto classes)
from llm_recipes.configs import mapping_field
from llm_recipes.data.config import DatasetSpec
from llm_recipes.data.curriculum import column_scores, curriculum_order, length_scores, model_loss_scores
from llm_recipes.data.formats import FormatReport, naming_dataset, to_standard_columns
from llm_recipes.data.io import load_dataset_source
from llm_recipes.data.mixture import hold_out, mix_datasets
from llm_recipes.data.packing import (
    PackedLMCollator,
    pack_documents,
    row_lengths,
    separator_token_id,
    target_token_count,
    tokenize_documents,
)
from llm_recipes.data.text import row_text
from llm_recipes.errors import UserError
from llm_recipes.models.loading import ENCODER_MODEL_TYPES, build_config, init_model, resize_for_tokenizer
from llm_recipes.pretrain.streaming import ShardStream, StreamEpochs, stream_loader
from llm_recipes.training.callbacks import NonFiniteLossGuard

MASK_TOKEN = "<|mask|>"
# config fields that hold a dropout probability, across architectures (Llama, BERT, GPT-2, our recurrent LM)
DROPOUT_SUFFIXES = ("dropout", "dropout_prob", "pdrop")


# --------------------------------------------------------------------------------------------------------------
# Data: any supported format, flattened to one `text` column (plus a curriculum score column when asked)


@dataclass
class PretrainingTexts:
    train: Dataset
    eval: Dataset | None
    reports: list[tuple[str, FormatReport]] = field(default_factory=list)


def _flatten_batch(batch: dict[str, list]) -> dict[str, list]:
    names = [name for name in ("messages", "prompt", "completion") if name in batch]
    rows = [dict(zip(names, values, strict=True)) for values in zip(*(batch[name] for name in names), strict=True)]
    return {"text": [row_text(row) for row in rows]}


def as_text(dataset: Dataset, num_proc: int | None = None) -> Dataset:
    """Standard-column data -> a `text` column: chats and prompt/completion pairs joined by newlines."""
    structured = [name for name in ("messages", "prompt", "completion") if name in dataset.column_names]
    if not structured:
        return dataset
    return dataset.map(
        _flatten_batch, batched=True, remove_columns=structured, num_proc=num_proc, desc="Flattening to text"
    )


def load_source_texts(
    spec: DatasetSpec, num_proc: int | None = None, score_column: str | None = None
) -> tuple[Dataset, FormatReport]:
    """One dataset as `text` (+ `score_column`, carried through the format conversion row for row)."""

    raw = load_dataset_source(spec.path, split=spec.split, name=spec.name)
    if len(raw) == 0:
        raise UserError(f"dataset '{spec.path}' is empty")
    scores = column_scores(raw, score_column) if score_column else None
    with naming_dataset(spec.path):
        converted, report = to_standard_columns(raw, spec.format, text_field=spec.text_field, num_proc=num_proc)
    if len(converted) == 0:
        raise UserError(f"dataset '{spec.path}': no usable rows after conversion ({report.dropped})")
    if scores is not None:
        if len(converted) != len(raw):
            raise UserError(
                f"curriculum_column: {len(raw) - len(converted)} rows of '{spec.path}' were dropped while reading it "
                f"({report.dropped}), so scores no longer line up; remove those rows from the data first"
            )
        converted = converted.add_column(score_column, scores)
    return as_text(converted, num_proc), report


def load_pretraining_texts(
    specs: Sequence[DatasetSpec],
    *,
    eval_spec: DatasetSpec | None = None,
    eval_size: float = 0.0,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 42,
    num_proc: int | None = None,
    score_column: str | None = None,
) -> PretrainingTexts:
    """Every training source as text, mixed by weight, with an eval split held out (or read from `eval_spec`)."""

    reports, parts = [], []
    for spec in specs:
        dataset, report = load_source_texts(spec, num_proc, score_column)
        reports.append((spec.path, report))
        parts.append((dataset, spec.weight))
    train = mix_datasets(parts, seed=seed)
    eval_dataset = None
    if eval_spec is not None:
        eval_dataset, report = load_source_texts(eval_spec, num_proc)
        reports.append((eval_spec.path, report))
    elif eval_size:
        if eval_size >= 1 and eval_size >= len(train):
            raise UserError(f"eval_split_size: {int(eval_size)} documents would leave none to train on ({len(train)})")
        train, eval_dataset = hold_out(train, eval_size, seed=seed)
    if max_train_samples is not None:
        train = train.select(range(min(max_train_samples, len(train))))
    if eval_dataset is not None and max_eval_samples is not None:
        eval_dataset = eval_dataset.select(range(min(max_eval_samples, len(eval_dataset))))
    return PretrainingTexts(train=train, eval=eval_dataset, reports=reports)


# --------------------------------------------------------------------------------------------------------------
# Tokenizer and model


def load_tokenizer(script_args: Any) -> PreTrainedTokenizerBase:
    """The tokenizer to train with (tokenizer_name_or_path, else the continued model's); a UserError when it will
    not load."""

    path = script_args.tokenizer_name_or_path or script_args.model_name_or_path
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=script_args.trust_remote_code)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"tokenizer_name_or_path: cannot load a tokenizer from '{path}': {first_line}") from None


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, objective: str) -> list[str]:
    """Give the tokenizer what pretraining needs (a mask token for mlm, a pad token); returns notes on changes."""

    notes = []
    separator = separator_token_id(tokenizer)
    if objective == "mlm" and tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
        notes.append(f"the tokenizer had no mask token: added {MASK_TOKEN} (id {tokenizer.mask_token_id})")
    if tokenizer.pad_token is None:
        # padding never reaches the loss or the attention of real tokens, so sharing the separator is safe
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(separator)
        notes.append(f"the tokenizer had no pad token: padding with {tokenizer.pad_token}")
    return notes


def parse_overrides(value: dict[str, Any] | str | None, name: str = "config_overrides") -> dict[str, Any]:
    """Model config fields to change (`config_overrides`, distill's `student_config_overrides`)."""
    return mapping_field(value, name)


def set_dropout(config: PretrainedConfig, value: float) -> list[str]:
    """Set every dropout probability field of `config`; returns their names (none found is a UserError)."""
    names = [
        name
        for name, current in config.to_dict().items()
        if name.endswith(DROPOUT_SUFFIXES) and isinstance(current, (int, float)) and not isinstance(current, bool)
    ]
    if not names:
        raise UserError(f"dropout: the {config.model_type} config has no dropout field to set")
    for name in names:
        setattr(config, name, value)
    return names


def check_objective(config: PretrainedConfig, objective: str) -> None:
    encoder = config.model_type in ENCODER_MODEL_TYPES
    if objective == "clm" and encoder:
        raise UserError(f"a {config.model_type} encoder trains with objective: mlm, not clm")
    if objective == "mlm" and not encoder:
        raise UserError(f"a {config.model_type} model is a decoder; masked LM needs an encoder such as bert-tiny")


def model_config(script_args: Any, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The architecture to train: the continued model's config, or a preset / AutoConfig sized to the tokenizer,
    with `config_overrides` and `dropout` applied."""

    overrides = parse_overrides(script_args.config_overrides)
    if script_args.model_name_or_path:
        config = AutoConfig.from_pretrained(
            script_args.model_name_or_path, trust_remote_code=script_args.trust_remote_code, **overrides
        )
        check_objective(config, script_args.objective)
    else:
        config = build_config(
            tokenizer,
            preset=script_args.preset,
            config_name=script_args.config_name,
            objective=script_args.objective,
            overrides=overrides,
        )
    if script_args.dropout is not None:
        set_dropout(config, script_args.dropout)
    return config


def load_or_init_model(
    script_args: Any, config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase
) -> tuple[PreTrainedModel, int]:
    """A random model for `config`, or the continued one with embeddings grown to the tokenizer; returns
    (model, embedding rows added)."""

    if not script_args.model_name_or_path:
        return init_model(config, script_args.objective), 0
    auto_class = AutoModelForMaskedLM if script_args.objective == "mlm" else AutoModelForCausalLM
    model = auto_class.from_pretrained(
        script_args.model_name_or_path,
        config=config,
        use_safetensors=True,
        trust_remote_code=script_args.trust_remote_code,
    )
    return model, resize_for_tokenizer(model, tokenizer)


def capped_block_size(block_size: int, config: PretrainedConfig) -> int:
    limit = getattr(config, "max_position_embeddings", None)
    return min(block_size, limit) if isinstance(limit, int) and limit > 0 else block_size


# --------------------------------------------------------------------------------------------------------------
# Trainer


def perplexity(loss: float | None) -> float | None:
    if loss is None or math.isnan(loss):
        return loss
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


class PretrainTrainer(Trainer):
    """`Trainer` plus: curriculum order kept, eval loss over tokens with perplexity, a NaN/Inf guard.

    - `sequential=True` (a curriculum ordered the rows): `_get_train_sampler` returns a `SequentialSampler`, since
      the default `RandomSampler` would shuffle the easy -> hard order away. Resuming still skips the rows already
      seen, in that order.
    - Evaluation sums loss x target tokens per batch, so `eval_loss` is the mean over tokens (the Trainer's own is a
      mean over batches, off when batches differ in targets: masked LM, a short last block), and logs
      `eval_perplexity = exp(eval_loss)`. It runs under a fixed seed in a forked RNG: masked-LM evaluation masks
      the same tokens every time, and training's random stream is left as it was.
    - `stream` (a `ShardStream`, pretraining from a shard folder): each rank's loader reads its own shards, and a
      resumed run starts the stream at the next untrained block (see `pretrain/streaming.py`).
    - Every training loss goes to `loss_guard` (a `NonFiniteLossGuard`); `loss_guard.failure` says why it stopped.
    """

    def __init__(
        self,
        *args: Any,
        sequential: bool = False,
        causal: bool = True,
        stream: ShardStream | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.stream = stream
        if stream is not None:
            self.add_callback(StreamEpochs(stream))
        self.sequential = sequential
        self.causal = causal
        self.loss_guard = NonFiniteLossGuard(reduce=self.accelerator.reduce)
        self.add_callback(self.loss_guard)
        self._eval_sums: list | None = None
        self._eval_prefix = "eval"

    def _get_train_sampler(self, train_dataset: Dataset | None = None):
        if self.sequential:
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self):
        if self.stream is None:
            return super().get_train_dataloader()
        return self._stream_loader(self.stream)

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        """A shard stream resumes by starting at the next block, not by reading and dropping the trained ones."""
        if self.stream is None:
            return super().get_resumed_dataloader(dataloader, num_batches)
        return self._stream_loader(self.stream.starting_at(num_batches * self._train_batch_size))

    def _stream_loader(self, stream: ShardStream):
        collator = self._get_collator_with_removed_columns(self.data_collator, description="Training")
        return stream_loader(stream, self._train_batch_size, collator, self.args.dataloader_pin_memory)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.loss_guard.observe(loss, self.state.global_step + 1)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if self._eval_sums is not None and not model.training and inputs.get("labels") is not None:
            loss = result[0] if return_outputs else result
            tokens = target_token_count(inputs["labels"], self.causal)
            self._eval_sums[0] = self._eval_sums[0] + loss.detach().float() * tokens
            self._eval_sums[1] = self._eval_sums[1] + tokens
        return result

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.args.seed)
            self._eval_sums, self._eval_prefix = [0.0, 0], metric_key_prefix
            try:
                return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
            finally:
                self._eval_sums = None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        key = f"{self._eval_prefix}_loss"
        if self._eval_sums is not None and key in logs:
            if torch.is_tensor(self._eval_sums[1]):
                totals = torch.stack([self._eval_sums[0].float(), self._eval_sums[1].float()])
                loss_sum, tokens = self.accelerator.reduce(totals, "sum").tolist()
                if tokens > 0:
                    logs[key] = loss_sum / tokens
            logs[f"{self._eval_prefix}_perplexity"] = perplexity(logs[key])
        super().log(logs, start_time)


# --------------------------------------------------------------------------------------------------------------
# Training rows


@dataclass
class PretrainingBlocks:
    train: Dataset | ShardStream
    eval: Dataset | None
    train_documents: int
    eval_documents: int
    tokens_per_epoch: int
    block_size: int


def order_documents(tokenized: Dataset, texts: Dataset, script_args: Any, seed: int) -> Dataset:
    """Reorder tokenized documents easy -> hard by the configured curriculum (no-op for `none`)."""

    if script_args.curriculum == "none":
        return tokenized
    if script_args.curriculum == "length":
        scores = length_scores(tokenized)
    elif script_args.curriculum == "column":
        scores = tokenized[script_args.curriculum_column]
    else:
        scores = model_loss_scores(
            texts["text"],
            script_args.curriculum_model,
            max_length=script_args.block_size,
            trust_remote_code=script_args.trust_remote_code,
        )
    order = curriculum_order(scores, script_args.curriculum_schedule, script_args.curriculum_buckets, seed)
    return tokenized.select(order)


def build_blocks(
    texts: PretrainingTexts,
    tokenizer: PreTrainedTokenizerBase,
    script_args: Any,
    block_size: int,
    *,
    seed: int = 42,
) -> PretrainingBlocks:
    """Tokenize documents, order them by the curriculum, and pack (or split) them into rows of `block_size`."""

    num_proc = script_args.dataset_num_proc
    separate = separates_documents(script_args)
    keep = [script_args.curriculum_column] if script_args.curriculum == "column" else []
    train_docs = tokenize_documents(texts.train, tokenizer, keep_columns=keep, num_proc=num_proc)
    train_docs = order_documents(train_docs, texts.train, script_args, seed)
    train = pack_documents(
        train_docs, block_size, pack=script_args.packing, separate_documents=separate, num_proc=num_proc
    )
    eval_blocks = None
    if texts.eval is not None:
        eval_docs = tokenize_documents(texts.eval, tokenizer, num_proc=num_proc)
        eval_blocks = pack_documents(
            eval_docs, block_size, pack=script_args.packing, separate_documents=separate, num_proc=num_proc
        )
    return PretrainingBlocks(
        train=train,
        eval=eval_blocks,
        train_documents=len(train_docs),
        eval_documents=len(texts.eval) if texts.eval is not None else 0,
        tokens_per_epoch=int(row_lengths(train).sum()),
        block_size=block_size,
    )


def separates_documents(script_args: Any) -> bool:
    """Whether rows carry document boundaries (only packed rows hold more than one document)."""
    return bool(script_args.packing) and script_args.packing_boundaries == "separate"


def make_collator(
    tokenizer: PreTrainedTokenizerBase, script_args: Any, model: PreTrainedModel, block_size: int
) -> PackedLMCollator:
    """The batch builder for the configured objective, packing and boundaries."""

    mlm = script_args.objective == "mlm"
    separate = separates_documents(script_args)
    additive = False
    if mlm and separate:
        attention = getattr(model.config, "_attn_implementation", None) or "eager"
        if attention not in ("sdpa", "eager"):
            raise UserError(
                f"packing_boundaries: separate with objective mlm needs sdpa or eager attention, not {attention}"
            )
        additive = attention == "eager"
    return PackedLMCollator(
        pad_token_id=tokenizer.pad_token_id,
        objective=script_args.objective,
        fixed_width=block_size if script_args.packing else None,
        separate_documents=separate,
        mlm_collator=(
            DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=script_args.mlm_probability)
            if mlm
            else None
        ),
        special_token_ids=tokenizer.all_special_ids,
        additive_attention_mask=additive,
    )
