"""Wanda vs magnitude pruning at 50% sparsity on a small model trained here: eval perplexity side by side.

    .venv/bin/python benchmarks/pruning.py --threads 1                  # ~5 minutes on 2 shared CPU cores
    .venv/bin/python benchmarks/pruning.py --steps 1200 --reuse         # train longer; --reuse keeps the model

The model is trained by the pretrain recipe itself (its `build_trainer`) from a fresh Llama-style preset (llama-small
at half width by default) on `../shared/data` -- wiki articles and C4 web documents, with a BPE tokenizer trained in
the run; a held-out share of the documents is the eval set, never seen in training or calibration. Every variant
prunes the same layers (every Linear inside the transformer blocks) of the same trained weights to the same
sparsity. Magnitude ranks |W|; Wanda ranks |W| x ||X_j||_2, with input norms from calibration windows of training
text, block by block. Scores are compared where each paper compares them (Wanda within each output row, magnitude
over each matrix) and also both ways round, because the grouping matters as much as the score on small models;
2:4 semi-structured rows use groups of 4 consecutive weights. The claim checked: Wanda's perplexity increase over
the dense model is below magnitude pruning's.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--preset", default="llama-small")
    parser.add_argument(
        "--overrides",
        default='{"hidden_size": 128, "intermediate_size": 384, "num_attention_heads": 4, "num_key_value_heads": 2}',
        help="JSON config fields changed on the preset (default: llama-small at half width, to train in minutes)",
    )
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps of the training run")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--eval-share", type=float, default=0.1, help="documents held out for perplexity")
    parser.add_argument("--calibration-samples", type=int, default=128, help="windows of --block-size tokens")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / ".work" / "pruning"))
    parser.add_argument("--reuse", action="store_true", help="reuse the trained model in --workdir if present")
    return parser.parse_args()


def documents(data_dir: Path) -> list[str]:
    wiki = [line.strip() for line in (data_dir / "wiki_demo.txt").read_text(encoding="utf-8").splitlines()]
    c4 = [json.loads(line)["text"] for line in (data_dir / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines()]
    return [text for text in wiki + c4 if text]


def split(texts: list[str], eval_share: float, seed: int) -> tuple[list[str], list[str]]:
    shuffled = texts[:]
    random.Random(seed).shuffle(shuffled)
    cut = max(1, int(len(shuffled) * eval_share))
    return shuffled[cut:], shuffled[:cut]


def train(args: argparse.Namespace, workdir: Path, train_texts: list[str]) -> Path:
    """Tokenizer and model, trained by the pretrain recipe; returns the model folder."""
    import torch
    import yaml

    from llm_recipes.cli import load_recipe
    from llm_recipes.tokenizer import train_bpe_tokenizer

    model_dir = workdir / "model"
    if args.reuse and (model_dir / "config.json").is_file():
        print(f"reusing {model_dir}")
        return model_dir
    workdir.mkdir(parents=True, exist_ok=True)
    train_bpe_tokenizer(train_texts, args.vocab_size).save_pretrained(workdir / "tokenizer")
    data = workdir / "train.jsonl"
    data.write_text("".join(json.dumps({"text": text}) + "\n" for text in train_texts), encoding="utf-8")
    config = {
        "dataset_path": str(data),
        "eval_split_size": 0,
        "tokenizer_name_or_path": str(workdir / "tokenizer"),
        "preset": args.preset,
        "config_overrides": args.overrides,
        "block_size": args.block_size,
        "output_dir": str(model_dir),
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": max(1, args.steps // 20),
        "weight_decay": 0.01,
        "save_strategy": "no",
        "eval_before_training": False,
        "disable_tqdm": True,
        "logging_steps": max(1, args.steps // 6),
        "seed": args.seed,
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
    }
    (workdir / "pretrain.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    pretrain = load_recipe("pretrain")
    script_args, training_args = pretrain.parse_args(["--config", str(workdir / "pretrain.yaml")])
    trainer, blocks, _ = pretrain.build_trainer(script_args, training_args)
    started = time.perf_counter()
    trainer.train()
    trainer.save_model(str(model_dir))
    tokens = args.steps * args.batch_size * args.block_size
    print(
        f"trained {args.preset} for {args.steps} steps ({tokens:,} tokens, {len(blocks.train)} blocks/epoch) "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return model_dir


def layer_inputs(model, windows) -> dict:
    """The inputs each prunable layer of the dense model sees on `windows`, as [tokens, features]."""
    import torch

    from llm_recipes.pruning import prunable_linears

    captured, handles = {}, []

    def keep(name):
        def hook(_module, inputs, _output):
            captured[name] = inputs[0].reshape(-1, inputs[0].shape[-1])

        return hook

    for name, layer in prunable_linears(model).items():
        handles.append(layer.register_forward_hook(keep(name)))
    with torch.no_grad():
        model(input_ids=windows)
    for handle in handles:
        handle.remove()
    return captured


def output_error(dense, pruned, inputs: dict) -> float:
    """Mean over the pruned layers of ||X (W_pruned - W)^T|| / ||X W^T||: what Wanda's score minimises per layer."""
    import torch

    from llm_recipes.pruning import prunable_linears

    dense_layers, pruned_layers = prunable_linears(dense), prunable_linears(pruned)
    errors = []
    with torch.no_grad():
        for name, features in inputs.items():
            weight, kept = dense_layers[name].weight, pruned_layers[name].weight
            errors.append(float((features @ (kept - weight).T).norm() / (features @ weight.T).norm()))
    return sum(errors) / len(errors)


def main() -> None:
    args = parse()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_recipes.evaluation.perplexity import perplexity
    from llm_recipes.pruning import layer_sparsity, overall_sparsity, prune_unstructured, token_windows

    data_dir = Path(args.data_dir)
    if not (data_dir / "wiki_demo.txt").is_file():
        sys.exit(f"data not found: {data_dir} (the shared/ folder beside the project)")
    train_texts, eval_texts = split(documents(data_dir), args.eval_share, args.seed)
    model_dir = train(args, Path(args.workdir), train_texts)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    calibration = token_windows(
        tokenizer, train_texts, count=args.calibration_samples, length=args.block_size, seed=args.seed
    )

    def evaluate(model) -> float:
        model.eval()
        return perplexity(model, tokenizer, eval_texts, context_length=args.block_size).perplexity

    dense_model = AutoModelForCausalLM.from_pretrained(model_dir)
    dense = evaluate(dense_model)
    eval_windows = token_windows(tokenizer, eval_texts, count=16, length=args.block_size, seed=args.seed)
    inputs = layer_inputs(dense_model, eval_windows)
    # (pattern, grouping, method): None = each paper's grouping (Wanda per output row, magnitude per matrix)
    variants = [
        ("unstructured", "matrix", "magnitude", False),
        ("unstructured", "row", "wanda", True),
        ("unstructured", "row", "magnitude", True),
        ("unstructured", "matrix", "wanda", False),
        ("2:4", "groups of 4", "magnitude", None),
        ("2:4", "groups of 4", "wanda", None),
    ]
    results = {}
    for pattern, group, method, per_row in variants:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        started = time.perf_counter()
        prune_unstructured(
            model, method, sparsity=args.sparsity, pattern=pattern, calibration=calibration, per_row=per_row
        )
        seconds = time.perf_counter() - started
        achieved = overall_sparsity(layer_sparsity(model))
        results[pattern, group, method] = (achieved, evaluate(model), output_error(dense_model, model, inputs), seconds)

    eval_tokens = sum(len(tokenizer(text)["input_ids"]) for text in eval_texts)
    print(
        f"\n{len(train_texts)} training / {len(eval_texts)} eval documents ({eval_tokens:,} eval tokens), "
        f"{args.calibration_samples} calibration windows of {args.block_size} tokens"
    )
    print(f"dense perplexity: {dense:.3f}\n")
    print(
        "| pattern | compared per | method | sparsity | perplexity | increase over dense | ratio to dense "
        "| layer output error | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (pattern, group, method), (achieved, ppl, error, seconds) in results.items():
        print(
            f"| {pattern} | {group} | {method} | {achieved:.3f} | {ppl:.3f} | {ppl - dense:+.3f} | "
            f"{ppl / dense:.3f}x | {error:.4f} | {seconds:.2f} |"
        )
    print()
    comparisons = [
        (
            "each paper's choice (Wanda per row, magnitude per matrix)",
            ("unstructured", "row"),
            ("unstructured", "matrix"),
        ),
        ("both per output row", ("unstructured", "row"), ("unstructured", "row")),
        ("both per matrix", ("unstructured", "matrix"), ("unstructured", "matrix")),
        ("2:4", ("2:4", "groups of 4"), ("2:4", "groups of 4")),
    ]
    for label, wanda_key, magnitude_key in comparisons:
        wanda = results[(*wanda_key, "wanda")][1] - dense
        magnitude = results[(*magnitude_key, "magnitude")][1] - dense
        verdict = "below" if wanda < magnitude else "NOT below"
        print(
            f"{label}: Wanda's increase {wanda:+.3f} is {verdict} magnitude's {magnitude:+.3f} "
            f"(ratio {wanda / magnitude:.3f})"
        )


if __name__ == "__main__":
    main()
