"""Train a tokenizer on a dataset's text: byte-level BPE or Unigram, or an existing tokenizer retrained on new text.

    llm-recipes train-tokenizer --config configs/demo/train_tokenizer.yaml [field overrides]
    python recipes/train_tokenizer.py --config configs/demo/train_tokenizer.yaml --vocab_size 4000

Reads plain text (a .txt file is one document per line), jsonl/parquet/csv with a text column, a `save_to_disk`
folder, or any chat/instruction format SFT reads (flattened to text). A seeded slice is held out to report
fertility -- tokens per word and bytes per token -- on text the tokenizer has not seen. Writes a folder that
`AutoTokenizer.from_pretrained` loads, with a manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from transformers import AutoTokenizer

from llm_recipes.configs import check_dataset_path, looks_local, parse_config, run_recipe
from llm_recipes.data.config import DatasetSpec
from llm_recipes.data.loading import load_standard
from llm_recipes.data.mixture import hold_out
from llm_recipes.data.text import iter_texts
from llm_recipes.errors import UserError
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main, written_in_place
from llm_recipes.runs.summary import format_summary
from llm_recipes.tokenizer.config import TrainTokenizerArguments
from llm_recipes.tokenizer.training import measure_fertility, retrain_tokenizer, train_tokenizer

# What a previous run of this stage leaves; only such a folder is replaced by a new run.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "llm_recipes_manifest.json")


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainTokenizerArguments]:
    """Parse and check the config: paths, sizes and option combinations, before any text is read."""
    (args,) = parse_config((TrainTokenizerArguments,), argv)
    if not args.dataset_path:
        raise UserError("dataset_path is required: a text/jsonl/parquet file, a save_to_disk folder or a Hub dataset")
    check_dataset_path(args.dataset_path)
    if args.base_tokenizer:
        if looks_local(args.base_tokenizer) and not os.path.isdir(os.path.expanduser(args.base_tokenizer)):
            raise UserError(f"base_tokenizer: folder not found: {args.base_tokenizer}")
        if args.chat_template or args.add_bos or args.special_tokens:
            raise UserError(
                "chat_template, add_bos and special_tokens apply to a new tokenizer; base_tokenizer keeps its own"
            )
    output = Path(args.output_dir).expanduser()
    if output.is_file() or (output.is_dir() and any(output.iterdir()) and not _is_tokenizer_folder(output)):
        raise UserError(f"output_dir: {args.output_dir} exists and is not a tokenizer folder; choose another")
    return (args,)


@stage_main
def main(args: TrainTokenizerArguments) -> dict:
    # written beside the output and renamed into place at the end: a crash never leaves a half-written tokenizer
    run = StageRun.begin("train-tokenizer", args.output_dir, {"script": args})
    with written_in_place(args.output_dir) as staging:
        run.output_dir = staging
        spec = DatasetSpec(
            path=args.dataset_path, format=args.data_format, split=args.dataset_split, text_field=args.text_field
        )
        dataset, _ = load_standard(spec)
        train, heldout = _split(dataset, args)
        documents = _CountingTexts(iter_texts([train]))
        tokenizer = build_tokenizer(args, documents)
        fertility = measure_fertility(tokenizer, list(iter_texts([heldout]))) if heldout is not None else None
        tokenizer.save_pretrained(staging)

        summary = {
            "algorithm": _algorithm_of(tokenizer),
            "vocabulary": len(tokenizer),
            "documents trained on": documents.count,
            "held-out documents": fertility.documents if fertility else 0,
            "tokens per word": round(fertility.tokens_per_word, 4) if fertility else None,
            "bytes per token": round(fertility.bytes_per_token, 4) if fertility else None,
            "unknown rate": round(fertility.unknown_rate, 6) if fertility else None,
            "chat template": bool(tokenizer.chat_template),
            "seconds": round(run.seconds, 1),
        }
        run.inputs = {"dataset": args.dataset_path, "base_tokenizer": args.base_tokenizer}
        run.write({"script": args}, summary)
    print(format_summary(f"tokenizer trained: {args.output_dir}", summary))
    return summary


def build_tokenizer(args: TrainTokenizerArguments, texts: Iterable[str]):
    """A new tokenizer trained on `texts`, or `base_tokenizer` retrained on them."""

    if args.base_tokenizer:
        tokenizer = retrain_tokenizer(_load_base_tokenizer(args.base_tokenizer), texts, args.vocab_size)
        if args.model_max_length is not None:
            tokenizer.model_max_length = args.model_max_length
        return tokenizer
    return train_tokenizer(
        texts,
        args.vocab_size,
        algorithm=args.algorithm,
        chat=args.chat_template,
        min_frequency=args.min_frequency,
        special_tokens=args.special_tokens or (),
        add_bos=args.add_bos,
        model_max_length=args.model_max_length,
    )


def _split(dataset, args: TrainTokenizerArguments):
    """Hold out the fertility slice (seeded), then cap the training documents to a random sample."""
    if args.heldout_size >= 1 and args.heldout_size >= len(dataset):
        raise UserError(
            f"heldout_size: {int(args.heldout_size)} documents would leave none of {len(dataset)} to train on"
        )
    if args.heldout_size and len(dataset) < 2:
        raise UserError("heldout_size: the dataset has one document; set heldout_size: 0 to train on it")

    try:
        train, heldout = hold_out(dataset, args.heldout_size, seed=args.seed)
    except ValueError as err:  # a share that leaves no training document
        raise UserError(f"heldout_size: {args.heldout_size} cannot split {len(dataset)} documents: {err}") from None
    if args.max_training_documents is not None and args.max_training_documents < len(train):
        train = train.shuffle(seed=args.seed).select(range(args.max_training_documents))
    return train, heldout


class _CountingTexts:
    """Passes documents through to the trainer and counts them (the trainer reads a stream, not a list)."""

    def __init__(self, texts: Iterator[str]):
        self.texts = texts
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            self.count += 1
            yield text


def _load_base_tokenizer(path: str):
    try:
        return AutoTokenizer.from_pretrained(os.path.expanduser(path))
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"base_tokenizer: could not load {path}: {first_line}") from None


def _algorithm_of(tokenizer) -> str:
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    return model["type"].lower() + (" + byte fallback" if model.get("byte_fallback") else "")


def _is_tokenizer_folder(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


if __name__ == "__main__":
    run_recipe(main, parse_args, first_process_only=True)
