"""Tokenize a corpus ahead of pretraining: packed blocks in Parquet shards with a manifest, for pretrain to stream.

    llm-recipes tokenize --config configs/demo/tokenize.yaml [field overrides]
    python recipes/tokenize_shards.py --config configs/demo/tokenize.yaml --blocks_per_shard 256

Reads text as pretrain does (txt, json, jsonl, csv, parquet, `save_to_disk` folders, Hub datasets; chats are
flattened), a batch of documents at a time: each batch is tokenized and packed into `block_size` blocks exactly as
pretrain packs in memory, and the blocks go to `shard-NNNNN.parquet` files of `blocks_per_shard` blocks. The
`shards.json` manifest (written last) records the block size, packing, the tokenizer's fingerprint and each
shard's blocks and tokens. `pretrain --dataset_path <this folder>` then streams it: no tokenizing at start-up,
each data-parallel process reading its own shards, resuming at the exact next block.

`engine: ray` (with `ray_address`, as clean-corpus takes them) reads and tokenizes on a Ray cluster instead: the same
batches packed by the same function, streamed back in order and written here as the same shards and manifest
(`pretrain/ray_shards.py`); the sources and the tokenizer must be at the same paths on every node.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from llm_recipes.configs import check_dataset_path, is_planned, parse_config, run_recipe
from llm_recipes.data.config import dataset_specs
from llm_recipes.data.shards import PACK_BATCH_DOCUMENTS, source_facts, write_token_shards
from llm_recipes.errors import UserError
from llm_recipes.pretrain.build import load_source_texts, load_tokenizer
from llm_recipes.pretrain.config import TokenizeArguments
from llm_recipes.pretrain.ray_shards import check_engine, separate_documents, tokenize_on_ray
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main, written_in_place
from llm_recipes.runs.summary import format_summary


def parse_args(argv: Sequence[str] | None = None) -> tuple[TokenizeArguments]:
    """Parse and check the config: the sources, the tokenizer and the sizes, before any text is read."""
    (args,) = parse_config((TokenizeArguments,), argv)
    specs = dataset_specs(args)
    if not specs:
        raise UserError("dataset_path is required: a text/jsonl/parquet file, a save_to_disk folder or a Hub dataset")
    for spec in specs:
        check_dataset_path(spec.path)
        if spec.weight != 1:
            raise UserError(f"datasets: weight {spec.weight} of '{spec.path}': tokenize reads each source once")
    if args.eval_dataset_path or args.eval_split_size or args.max_eval_samples is not None:
        raise UserError("eval_dataset_path: tokenize writes the training stream; give pretrain its eval data")
    if not args.tokenizer_name_or_path:
        raise UserError("tokenizer_name_or_path is required: the tokenizer pretraining will use")
    if not is_planned(args.tokenizer_name_or_path):  # a pipeline's train-tokenizer writes it later
        load_tokenizer(args)  # one line if it will not load
    check_engine(args)
    return (args,)


def documents(args: TokenizeArguments) -> Iterator[dict[str, list]]:
    """Batches of `text`, source after source, each source read from disk a batch at a time."""
    left = args.max_train_samples
    for spec in dataset_specs(args):
        texts, _ = load_source_texts(spec, args.dataset_num_proc)
        if left is not None:
            texts = texts.select(range(min(left, len(texts))))
            left -= len(texts)
        yield from texts.select_columns(["text"]).iter(batch_size=PACK_BATCH_DOCUMENTS)
        if left == 0:
            return


@stage_main
def main(args: TokenizeArguments) -> dict:
    # written beside the output and renamed into place at the end: a crash never leaves half a shard folder
    run = StageRun.begin("tokenize", args.output_dir, {"script": args})
    with written_in_place(args.output_dir) as staging:
        run.output_dir = staging
        tokenizer, sources = load_tokenizer(args), [source_facts(spec.path) for spec in dataset_specs(args)]
        if args.engine == "ray":
            # read and packed on the cluster, the blocks streamed back in order into the same shards
            manifest = tokenize_on_ray(args, tokenizer, staging, sources)
        else:
            manifest = write_token_shards(
                documents(args),
                tokenizer,
                staging,
                block_size=args.block_size,
                blocks_per_shard=args.blocks_per_shard,
                pack=args.packing,
                separate_documents=separate_documents(args),
                tokenizer_source=args.tokenizer_name_or_path,
                sources=sources,
            )
        summary = {
            "engine": args.engine,
            "documents": manifest.documents,
            "blocks": manifest.blocks,
            "tokens": manifest.tokens,
            "shards": len(manifest.shards),
            "block size": manifest.block_size,
            "non-padding share": round(manifest.tokens / (manifest.blocks * manifest.block_size), 4),
            "tokenizer fingerprint": manifest.tokenizer_fingerprint,
            "seconds": round(run.seconds, 1),
        }
        run.inputs = {"datasets": [spec.path for spec in dataset_specs(args)], "tokenizer": args.tokenizer_name_or_path}
        run.write({"script": args}, summary)
    print(format_summary(f"tokenized into shards: {args.output_dir}", summary))
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
