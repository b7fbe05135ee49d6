"""Wanda vs magnitude pruning at 50% sparsity on small models trained here: eval perplexity side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pruning.py --threads 1 --retrain   # two seeds from scratch, ~14 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pruning.py --threads 1             # rerun: reuses the trained models

Each seed's model is trained by the pretrain stage (`pretrain.trainer.build_trainer`) from a fresh Llama-style preset
(llama-small at half width by default: 1.0M parameters) for 3,000 steps of 8 x 128 tokens (5.5 epochs) on
`../shared/data` -- wiki articles and C4 web documents, with a BPE tokenizer trained on the training share; a
held-out share of the documents is the eval set, never seen in training or calibration. Trained models are kept in
--workdir under a name that hashes every training setting and the seed, so a rerun reuses them and a changed
setting trains anew (--retrain forces it; a fresh run is reproducible from the seed).

Every variant prunes the same layers (every Linear inside the transformer blocks) of the same trained weights to the
same sparsity. Magnitude ranks |W|; Wanda ranks |W| x ||X_j||_2 with input norms from calibration windows of
training text, block by block (each block's inputs pass through the blocks already pruned, as in the paper's code);
a one-pass variant takes every norm from the dense model instead, to show what the sequential order changes. Scores
are compared where each paper compares them (Wanda within each output row, magnitude over each matrix) -- the
headline -- and also both ways round, because the grouping matters as much as the score on small models; 2:4 rows
use groups of 4 consecutive weights. The claim checked: Wanda's perplexity increase over the dense model is below
magnitude pruning's. Printed with it: max/median of ||X_j|| per layer input, the outlier features Wanda relies on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
# Settings that change the trained model; the cache folder name hashes them (with the seed).
TRAINING_SETTINGS = (
    "preset",
    "overrides",
    "steps",
    "block_size",
    "batch_size",
    "learning_rate",
    "warmup_share",
    "weight_decay",
    "vocab_size",
    "eval_share",
    "split_seed",
)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--preset", default="llama-small")
    parser.add_argument(
        "--overrides",
        default='{"hidden_size": 128, "intermediate_size": 384, "num_attention_heads": 4, "num_key_value_heads": 2}',
        help="JSON config fields changed on the preset (default: llama-small at half width, trainable to a plateau "
        "on these 0.5M tokens within minutes)",
    )
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps of the training run")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--warmup-share", type=float, default=0.05, help="share of the steps spent warming up")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--eval-share", type=float, default=0.1, help="documents held out for perplexity")
    parser.add_argument("--split-seed", type=int, default=0, help="which documents are held out (same for all seeds)")
    parser.add_argument("--calibration-samples", type=int, default=128, help="windows of --block-size tokens")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one trained model per seed")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / ".work" / "pruning"))
    parser.add_argument("--retrain", action="store_true", help="train even where a cached model exists")
    parser.add_argument("--json", help="also write every figure to this file")
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


def model_folder(args: argparse.Namespace, seed: int) -> Path:
    settings = {name: getattr(args, name) for name in TRAINING_SETTINGS}
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return Path(args.workdir) / f"{args.preset}-{args.steps}steps-{digest}-seed{seed}"


def train(args: argparse.Namespace, seed: int, train_texts: list[str]) -> tuple[Path, float | None]:
    """Tokenizer and model, trained by the pretrain recipe; (the model folder, training seconds or None if cached)."""
    import torch
    import yaml

    from llm_recipes.cli import load_recipe
    from llm_recipes.pretrain.trainer import build_trainer
    from llm_recipes.tokenizer.training import train_bpe_tokenizer

    workdir = model_folder(args, seed)
    model_dir = workdir / "model"
    if not args.retrain and (model_dir / "config.json").is_file():
        print(f"seed {seed}: reusing {model_dir}")
        return model_dir, None
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
        "warmup_steps": max(1, round(args.steps * args.warmup_share)),
        "weight_decay": args.weight_decay,
        "save_strategy": "no",
        "eval_before_training": False,
        "disable_tqdm": True,
        "logging_steps": max(1, args.steps // 4),
        "seed": seed,
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
    }
    (workdir / "pretrain.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    pretrain = load_recipe("pretrain")
    script_args, training_args = pretrain.parse_args(["--config", str(workdir / "pretrain.yaml")])
    trainer, blocks, _ = build_trainer(script_args, training_args)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.save_model(str(model_dir))
    tokens = args.steps * args.batch_size * args.block_size
    epochs = args.steps * args.batch_size / len(blocks.train)
    print(f"seed {seed}: trained {args.steps} steps ({tokens:,} tokens, {epochs:.1f} epochs) in {seconds:.0f} s")
    return model_dir, seconds


def layer_inputs(model, windows) -> dict:
    """The inputs each prunable layer of the dense model sees on `windows`, as [tokens, features]."""
    import torch

    from llm_recipes.compress.prune import prunable_linears

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

    from llm_recipes.compress.prune import prunable_linears

    dense_layers, pruned_layers = prunable_linears(dense), prunable_linears(pruned)
    errors = []
    with torch.no_grad():
        for name, features in inputs.items():
            weight, kept = dense_layers[name].weight, pruned_layers[name].weight
            errors.append(float((features @ (kept - weight).T).norm() / (features @ weight.T).norm()))
    return sum(errors) / len(errors)


def outlier_ratios(model, calibration) -> dict[str, list[float]]:
    """max_j ||X_j|| / median_j ||X_j|| of each block's four distinct layer inputs (q/k/v share one, gate/up one),
    on the dense model's calibration activations: how far Wanda's weighting departs from plain magnitude."""
    from llm_recipes.compress.prune import input_norms, prunable_linears

    layers = {name: layer for name, layer in prunable_linears(model).items() if name.rsplit(".", 1)[-1] in INPUTS}
    norms = input_norms(model, calibration, layers)
    ratios: dict[str, list[float]] = {label: [] for label in INPUTS.values()}
    for name, norm in norms.items():
        ratios[INPUTS[name.rsplit(".", 1)[-1]]].append(float(norm.max() / norm.median()))
    return ratios


INPUTS = {
    "q_proj": "attention in (q,k,v)",
    "o_proj": "o_proj in",
    "up_proj": "MLP in (gate,up)",
    "down_proj": "down_proj in",
}


def prune_one_pass(model, calibration, sparsity: float) -> None:
    """Wanda with every layer's norms taken from the dense model in one pass (not block-sequential)."""
    from llm_recipes.compress.prune import apply_mask, input_norms, layer_mask, prunable_linears

    layers = prunable_linears(model)
    norms = input_norms(model, calibration, layers)
    for name, layer in layers.items():
        apply_mask(layer, layer_mask(layer, sparsity, None, norms[name], per_row=True))


# (pattern, compared per, method, per_row); per_row None = the pattern's own groups
VARIANTS = [
    ("unstructured", "matrix", "magnitude", False),
    ("unstructured", "row", "wanda", True),
    ("unstructured", "row", "magnitude", True),
    ("unstructured", "matrix", "wanda", False),
    ("unstructured", "row", "wanda one-pass", True),
    ("2:4", "groups of 4", "magnitude", None),
    ("2:4", "groups of 4", "wanda", None),
]
# (label, Wanda variant, magnitude variant): the first is the headline
COMPARISONS = [
    ("paper groupings (Wanda per row, magnitude per matrix)", ("unstructured", "row"), ("unstructured", "matrix")),
    ("both per output row", ("unstructured", "row"), ("unstructured", "row")),
    ("both per matrix", ("unstructured", "matrix"), ("unstructured", "matrix")),
    ("2:4", ("2:4", "groups of 4"), ("2:4", "groups of 4")),
]


def run_seed(args: argparse.Namespace, seed: int, train_texts: list[str], eval_texts: list[str]) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_recipes.compress.prune import layer_sparsity, overall_sparsity, prune_unstructured, token_windows
    from llm_recipes.evaluation.sliding_window import perplexity

    model_dir, train_seconds = train(args, seed, train_texts)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    calibration = token_windows(
        tokenizer, train_texts, count=args.calibration_samples, length=args.block_size, seed=seed
    )

    def evaluate(model) -> float:
        model.eval()
        return perplexity(model, tokenizer, eval_texts, context_length=args.block_size).perplexity

    dense_model = AutoModelForCausalLM.from_pretrained(model_dir)
    dense = evaluate(dense_model)
    outliers = outlier_ratios(dense_model, calibration)
    eval_windows = token_windows(tokenizer, eval_texts, count=16, length=args.block_size, seed=seed)
    inputs = layer_inputs(dense_model, eval_windows)
    rows = []
    for pattern, group, method, per_row in VARIANTS:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        started = time.perf_counter()
        if method == "wanda one-pass":
            prune_one_pass(model, calibration, args.sparsity)
        else:
            prune_unstructured(
                model, method, sparsity=args.sparsity, pattern=pattern, calibration=calibration, per_row=per_row
            )
        seconds = time.perf_counter() - started
        rows.append(
            dict(
                pattern=pattern,
                group=group,
                method=method,
                sparsity=overall_sparsity(layer_sparsity(model)),
                perplexity=evaluate(model),
                output_error=output_error(dense_model, model, inputs),
                seconds=seconds,
            )
        )
    by_key = {(row["pattern"], row["group"], row["method"]): row["perplexity"] - dense for row in rows}
    ratios = {
        label: (by_key[(*wanda, "wanda")], by_key[(*magnitude, "magnitude")]) for label, wanda, magnitude in COMPARISONS
    }
    ratios["sequential vs one-pass Wanda (per row)"] = (
        by_key[("unstructured", "row", "wanda")],
        by_key[("unstructured", "row", "wanda one-pass")],
    )
    return dict(
        seed=seed,
        train_seconds=train_seconds,
        dense=dense,
        outliers=outliers,
        rows=rows,
        increases=ratios,
        parameters=sum(p.numel() for p in dense_model.parameters()),
    )


def report(result: dict) -> None:
    dense = result["dense"]
    print(f"\nseed {result['seed']}: {result['parameters']:,} parameters, dense perplexity {dense:.3f}")
    print("max/median ||X_j|| per layer input, blocks 0..n-1:")
    for label, values in result["outliers"].items():
        print(f"  {label:22s} " + " ".join(f"{value:6.1f}" for value in values))
    print(
        "\n| pattern | compared per | method | sparsity | perplexity | increase over dense | ratio to dense "
        "| layer output error | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        print(
            f"| {row['pattern']} | {row['group']} | {row['method']} | {row['sparsity']:.3f} | {row['perplexity']:.3f} "
            f"| {row['perplexity'] - dense:+.3f} | {row['perplexity'] / dense:.3f}x | {row['output_error']:.4f} "
            f"| {row['seconds']:.2f} |"
        )


def ratio(wanda: float, magnitude: float) -> float:
    """Wanda's increase / magnitude's; meaningful only where magnitude's is clearly positive."""
    return wanda / magnitude if magnitude else float("nan")


def summary(results: list[dict]) -> None:
    print("\nWanda's perplexity increase / magnitude's (below 1: Wanda better), per seed:")
    labels = list(results[0]["increases"])
    print(
        "| comparison | " + " | ".join(f"seed {r['seed']}: Wanda vs magnitude increase (ratio)" for r in results) + " |"
    )
    print("|---|" + "---|" * len(results))
    for label in labels:
        cells = []
        for result in results:
            wanda, magnitude = result["increases"][label]
            cells.append(f"{wanda:+.3f} vs {magnitude:+.3f} ({ratio(wanda, magnitude):.3f})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    headline = COMPARISONS[0][0]
    ratios = [ratio(*r["increases"][headline]) for r in results]
    held = sum(wanda < magnitude for wanda, magnitude in (r["increases"][headline] for r in results))
    print(
        f"\nheadline ({headline}): ratio {' / '.join(f'{ratio:.3f}' for ratio in ratios)} "
        f"(mean {statistics.mean(ratios):.3f}); Wanda's increase below magnitude's in {held} of {len(ratios)} seeds"
    )


def main() -> None:
    args = parse()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    if not (data_dir / "wiki_demo.txt").is_file():
        sys.exit(f"data not found: {data_dir} (the shared/ folder beside the project)")
    started = time.perf_counter()
    train_texts, eval_texts = split(documents(data_dir), args.eval_share, args.split_seed)
    print(
        f"{len(train_texts)} training / {len(eval_texts)} eval documents; {args.preset} {args.overrides}, "
        f"{args.steps} steps of {args.batch_size}x{args.block_size} tokens, lr {args.learning_rate}; "
        f"{args.calibration_samples} calibration windows of {args.block_size} tokens; sparsity {args.sparsity}"
    )
    results = []
    for seed in args.seeds:
        results.append(run_seed(args, seed, train_texts, eval_texts))
        report(results[-1])
    summary(results)
    print(f"\nwall time {time.perf_counter() - started:.0f} s ({torch.get_num_threads()} threads)")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(args=vars(args), results=results), indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
