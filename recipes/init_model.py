"""A fresh, randomly initialised model to start from: a tokenizer trained on your data plus a preset architecture.

    llm-recipes init-model --config configs/demo/init_model.yaml

This is what the demo fine-tunes when there is no network to download a base model from.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoTokenizer

from llm_recipes.configs import check_dataset_path, parse_config, run_recipe
from llm_recipes.data.config import DatasetSpec
from llm_recipes.data.loading import load_standard
from llm_recipes.data.text import iter_texts
from llm_recipes.errors import UserError
from llm_recipes.models.loading import DECODER_PRESETS, count_parameters, init_decoder
from llm_recipes.pretrain.config import InitModelArguments
from llm_recipes.runs.manifest import StageRun
from llm_recipes.runs.outputs import stage_main
from llm_recipes.runs.summary import format_summary
from llm_recipes.tokenizer.training import train_bpe_tokenizer


def parse_args(argv: Sequence[str] | None = None) -> tuple[InitModelArguments]:
    (args,) = parse_config((InitModelArguments,), argv)

    if args.preset not in DECODER_PRESETS:
        raise UserError(f"preset: unknown '{args.preset}'; choose from {', '.join(DECODER_PRESETS)}")
    if not args.tokenizer_name_or_path and not args.tokenizer_datasets:
        raise UserError("set tokenizer_name_or_path, or tokenizer_datasets to train a tokenizer on")
    for path in args.tokenizer_datasets or []:
        check_dataset_path(path)
    return (args,)


@stage_main
def main(args: InitModelArguments) -> dict:
    run = StageRun.begin("init-model", args.output_dir, {"script": args})
    run.mark_started()
    if args.tokenizer_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name_or_path)
    else:
        datasets = [load_standard(DatasetSpec(path=path))[0] for path in args.tokenizer_datasets]
        tokenizer = train_bpe_tokenizer(iter_texts(datasets), args.vocab_size, chat=args.chat_template)
    torch.manual_seed(args.seed)
    model = init_decoder(args.preset, tokenizer)
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)

    _, total = count_parameters(model)
    summary = {
        "preset": args.preset,
        "parameters": total,
        "vocabulary": len(tokenizer),
        "chat template": bool(tokenizer.chat_template),
        "seconds": round(run.seconds, 1),
    }
    run.inputs = {"tokenizer": args.tokenizer_name_or_path or args.tokenizer_datasets}
    run.write({"script": args}, summary)
    print(format_summary(f"model initialised: {args.output_dir}", summary))
    return summary


if __name__ == "__main__":
    run_recipe(main, parse_args)
