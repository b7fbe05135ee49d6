"""The pretrain stage's trainer, ready to train: tokenizer, data blocks, model and `PretrainTrainer` (the prune
stage's recovery fine-tune uses it too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import EarlyStoppingCallback, PreTrainedTokenizerBase, TrainingArguments, set_seed

from llm_recipes.data.config import DatasetSpec, dataset_specs
from llm_recipes.data.formats import FormatReport
from llm_recipes.data.packing import pack_documents, tokenize_documents
from llm_recipes.data.shards import (
    ShardManifest,
    check_packing_matches,
    check_shards_match,
    is_shard_folder,
    read_shard_manifest,
)
from llm_recipes.pretrain.build import (
    PretrainingBlocks,
    PretrainTrainer,
    build_blocks,
    capped_block_size,
    load_or_init_model,
    load_pretraining_texts,
    load_source_texts,
    load_tokenizer,
    make_collator,
    model_config,
    prepare_tokenizer,
    separates_documents,
)
from llm_recipes.pretrain.config import PretrainScriptArguments
from llm_recipes.pretrain.streaming import ShardStream


@dataclass
class BuildFacts:
    """What building the trainer found that the run's summary reports."""

    reports: list[tuple[str, FormatReport | ShardSource]]  # (dataset path, rows kept from it)
    embedding_rows_added: int


@dataclass
class ShardSource:
    """What the summary says of a shard folder (in place of a format conversion's report)."""

    manifest: ShardManifest

    def describe(self) -> str:
        manifest = self.manifest
        return f"{manifest.blocks:,} blocks, {manifest.tokens:,} tokens in {len(manifest.shards)} shards (streamed)"


def streamed_blocks(
    script_args: PretrainScriptArguments,
    training_args: TrainingArguments,
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    eval_spec: DatasetSpec | None,
) -> tuple[PretrainingBlocks, list[tuple[str, Any]]]:
    """A shard folder as this rank's stream (checked against the run's tokenizer and blocks); eval data, if any,
    from eval_dataset_path, tokenized here (it is small)."""
    manifest = read_shard_manifest(script_args.dataset_path)
    check_shards_match(manifest, load_tokenizer(script_args), block_size)  # the tokenizer as loaded, as tokenize saw it
    check_packing_matches(manifest, script_args.packing, separates_documents(script_args))
    stream = ShardStream(
        folder=Path(script_args.dataset_path).expanduser(),
        manifest=manifest,
        rank=training_args.process_index,
        world_size=training_args.world_size,
        seed=training_args.seed,
        shuffle_blocks=script_args.shuffle_blocks,
    )
    stream.shards  # noqa: B018  (refuses more ranks than shards now, not in the first step)
    reports: list[tuple[str, Any]] = [(script_args.dataset_path, ShardSource(manifest))]
    eval_blocks, eval_documents = None, 0
    if eval_spec is not None:
        texts, report = load_source_texts(eval_spec, script_args.dataset_num_proc)
        if script_args.max_eval_samples is not None:
            texts = texts.select(range(min(script_args.max_eval_samples, len(texts))))
        reports.append((eval_spec.path, report))
        documents = tokenize_documents(texts, tokenizer, num_proc=script_args.dataset_num_proc)
        eval_blocks = pack_documents(
            documents, block_size, pack=manifest.packing, separate_documents=manifest.separate_documents
        )
        eval_documents = len(texts)
    blocks = PretrainingBlocks(
        train=stream,
        eval=eval_blocks,
        train_documents=manifest.documents,
        eval_documents=eval_documents,
        tokens_per_epoch=manifest.tokens,
        block_size=block_size,
    )
    return blocks, reports


def build_trainer(
    script_args: PretrainScriptArguments, training_args: TrainingArguments, callbacks: Sequence[Any] = ()
) -> tuple[PretrainTrainer, PretrainingBlocks, BuildFacts]:
    """Tokenizer, data blocks, model and trainer, ready to train. Returns (trainer, blocks, facts for the summary)."""
    # Tokenizer and architecture: the vocabulary follows the tokenizer, blocks fit the model's positions
    tokenizer = load_tokenizer(script_args)
    notes = prepare_tokenizer(tokenizer, script_args.objective)
    config = model_config(script_args, tokenizer)
    block_size = capped_block_size(script_args.block_size, config)
    if block_size < script_args.block_size:
        notes.append(f"block_size {script_args.block_size} capped at the model's {block_size} positions")

    # Data: text -> documents (EOS-terminated) -> curriculum order -> blocks
    eval_spec = None
    if script_args.eval_dataset_path:
        eval_spec = DatasetSpec(
            path=script_args.eval_dataset_path, format=script_args.data_format, text_field=script_args.text_field
        )
    with training_args.main_process_first(desc="preparing pretraining data"):
        if is_shard_folder(script_args.dataset_path):  # tokenized ahead: read as a stream, nothing tokenized now
            blocks, reports = streamed_blocks(script_args, training_args, tokenizer, block_size, eval_spec)
        else:
            texts = load_pretraining_texts(
                dataset_specs(script_args),
                eval_spec=eval_spec,
                eval_size=script_args.eval_split_size,
                max_train_samples=script_args.max_train_samples,
                max_eval_samples=script_args.max_eval_samples,
                seed=training_args.seed,
                num_proc=script_args.dataset_num_proc,
                score_column=script_args.curriculum_column if script_args.curriculum == "column" else None,
            )
            blocks = build_blocks(texts, tokenizer, script_args, block_size, seed=training_args.seed)
            reports = texts.reports

    # Model: seeded, so a rerun (or a resumed run) starts from the same weights
    set_seed(training_args.seed)
    model, rows_added = load_or_init_model(script_args, config, tokenizer)
    if rows_added:
        notes.append(f"the tokenizer grew: {rows_added} embedding rows added")

    extra_callbacks = list(callbacks)
    if script_args.early_stopping_patience is not None:
        extra_callbacks.append(EarlyStoppingCallback(early_stopping_patience=script_args.early_stopping_patience))
    trainer = PretrainTrainer(
        model=model,
        args=training_args,
        train_dataset=blocks.train,
        eval_dataset=blocks.eval,
        processing_class=tokenizer,
        data_collator=make_collator(tokenizer, script_args, model, block_size),
        callbacks=extra_callbacks,
        sequential=script_args.curriculum != "none",
        causal=script_args.objective == "clm",
        stream=blocks.train if isinstance(blocks.train, ShardStream) else None,
    )
    for note in notes:
        trainer.accelerator.print(f"note: {note}")
    return trainer, blocks, BuildFacts(reports=reports, embedding_rows_added=rows_added)
