"""Pretrain recipe vs a bare PyTorch loop: same tiny Llama, same packed blocks, same steps; tokens/s and peak memory.

    .venv/bin/python benchmarks/pretrain_speed.py                         # llama-small, block 256, batch 8, CPU
    .venv/bin/python benchmarks/pretrain_speed.py --preset llama-30m --steps 60 --repeats 5 --bf16   # on a GPU

Baseline (b) is the loop a person would write by hand: index a batch of blocks, forward with labels, backward, AdamW
step (the fused implementation the Trainer also picks), zero grad; nothing else. Ours (a) is the pretrain stage's
`build_trainer` (`llm_recipes.pretrain.trainer`) and `Trainer.train()` with its defaults (gradient clipping, LR
schedule, NaN guard, a log every 10 steps), checkpoints and evaluation off. Both time the same steady-state steps
(after `--warmup` steps), each run in a fresh subprocess so peak memory is its own (max RSS from
`resource.getrusage`; on CUDA also `torch.cuda.max_memory_allocated`). Runs alternate (a, b, b, a, ...) and the
medians are compared.
Target: ours >= 0.95 x the bare loop. On a shared CPU, `--threads 1` makes runs far less noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "wiki_demo.txt"
FALLBACK_DATA = ROOT / "configs" / "demo" / "data" / "arithmetic_alpaca.jsonl"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llama-small")
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=5, help="steps not timed")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant")
    parser.add_argument("--data", default=str(DEFAULT_DATA if DEFAULT_DATA.is_file() else FALLBACK_DATA))
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in both (GPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads in both (default: torch's choice)")
    parser.add_argument("--worker", choices=("recipe", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    return parser.parse_args()


# --------------------------------------------------------------------------------------------------------------
# Shared set-up: one tokenizer and one config, written once; each worker builds the same blocks from them


def prepare(args: argparse.Namespace, workdir: Path) -> None:
    from llm_recipes.data.config import DatasetSpec
    from llm_recipes.data.loading import load_standard
    from llm_recipes.data.text import iter_texts
    from llm_recipes.tokenizer.training import train_bpe_tokenizer

    dataset, _ = load_standard(DatasetSpec(path=args.data))
    tokenizer = train_bpe_tokenizer(iter_texts([dataset]), args.vocab_size)
    tokenizer.save_pretrained(workdir / "tokenizer")


def recipe_argv(args: argparse.Namespace, workdir: Path) -> list[str]:
    import yaml

    config = {
        "dataset_path": args.data,
        "eval_split_size": 0,
        "tokenizer_name_or_path": str(workdir / "tokenizer"),
        "preset": args.preset,
        "block_size": args.block_size,
        "output_dir": str(workdir / "recipe-out"),
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "save_strategy": "no",
        "eval_before_training": False,
        "disable_tqdm": True,
        "bf16": args.bf16,
        "seed": 0,
        "dataloader_num_workers": 0,
    }
    path = workdir / "pretrain.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return ["--config", str(path)]


def parse_recipe_config(args: argparse.Namespace, workdir: Path):
    """The pretrain recipe's own parse_args: its defaults and checks have no library equivalent in one call."""
    from llm_recipes.cli import load_recipe

    return load_recipe("pretrain").parse_args(recipe_argv(args, workdir))


# --------------------------------------------------------------------------------------------------------------
# Workers: each prints one JSON line {tokens_per_s, peak_rss_mib, peak_gpu_mib}


def peak_memory() -> dict[str, float | None]:
    import torch

    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"peak_rss_mib": rss_kib / 1024, "peak_gpu_mib": gpu}


def run_recipe(args: argparse.Namespace, workdir: Path) -> dict:
    from transformers import TrainerCallback

    from llm_recipes.pretrain.trainer import build_trainer

    script_args, training_args = parse_recipe_config(args, workdir)
    trainer, blocks, _ = build_trainer(script_args, training_args)
    assert len(blocks.train) >= args.batch_size, "not enough blocks for one batch"
    times: dict[int, float] = {}

    class StepClock(TrainerCallback):
        def on_step_end(self, train_args, state, control, **kwargs):
            _sync()
            times[state.global_step] = time.perf_counter()

    trainer.add_callback(StepClock())
    trainer.train()
    seconds = times[args.steps] - times[args.warmup]
    tokens = (args.steps - args.warmup) * args.batch_size * args.block_size
    return {"tokens_per_s": tokens / seconds, **peak_memory()}


def run_bare(args: argparse.Namespace, workdir: Path) -> dict:
    import torch

    from llm_recipes.pretrain.trainer import build_trainer

    script_args, training_args = parse_recipe_config(args, workdir)
    # the same blocks and the same initial weights as the recipe builds, as one tensor
    trainer, blocks, _ = build_trainer(script_args, training_args)
    model = trainer.model
    full = [row for row in blocks.train["input_ids"] if len(row) == args.block_size]
    data = torch.tensor(full, dtype=torch.long)
    del trainer
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    data = data.to(device)
    # the same AdamW implementation the Trainer picks (fused by default), so the loops differ only in overhead
    fused = training_args.optim.value == "adamw_torch_fused"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, fused=fused)
    generator = torch.Generator().manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    start = None
    for step in range(1, args.steps + 1):
        index = torch.randint(len(data), (args.batch_size,), generator=generator).to(device)
        batch = data[index]
        with autocast:
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step == args.warmup:
            _sync()
            start = time.perf_counter()
    _sync()
    seconds = time.perf_counter() - start
    tokens = (args.steps - args.warmup) * args.batch_size * args.block_size
    return {"tokens_per_s": tokens / seconds, **peak_memory()}


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------------------------


def spawn(args: argparse.Namespace, variant: str, workdir: Path) -> dict:
    command = [sys.executable, __file__, "--worker", variant, "--workdir", str(workdir)]
    for name in ("preset", "block_size", "batch_size", "steps", "warmup", "data", "vocab_size"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if args.bf16:
        command.append("--bf16")
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"{variant} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse()
    sys.path.insert(0, str(ROOT))
    if args.worker:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        runner = run_recipe if args.worker == "recipe" else run_bare
        print(json.dumps(runner(args, Path(args.workdir))))
        return

    import torch

    with tempfile.TemporaryDirectory(prefix="pretrain-speed-") as tmp:
        workdir = Path(tmp)
        prepare(args, workdir)
        results: dict[str, list[dict]] = {"recipe": [], "bare": []}
        for repeat in range(args.repeats):
            order = ("recipe", "bare") if repeat % 2 == 0 else ("bare", "recipe")
            for variant in order:
                results[variant].append(spawn(args, variant, workdir))
                print(f"run {repeat + 1} {variant:6s} {results[variant][-1]['tokens_per_s']:,.0f} tokens/s", flush=True)

    threads = args.threads or torch.get_num_threads()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({threads} threads)"
    print(
        f"\n{args.preset}, block {args.block_size}, batch {args.batch_size}, {args.steps} steps "
        f"({args.warmup} warm-up), {args.repeats} runs each, {device}{', bf16' if args.bf16 else ''}"
    )
    medians = {}
    for variant, label in (("recipe", "(a) pretrain recipe"), ("bare", "(b) bare PyTorch loop")):
        runs = results[variant]
        medians[variant] = statistics.median(r["tokens_per_s"] for r in runs)
        rss = max(r["peak_rss_mib"] for r in runs)
        gpu = [r["peak_gpu_mib"] for r in runs if r["peak_gpu_mib"] is not None]
        gpu_text = f", peak GPU memory {max(gpu):,.0f} MiB" if gpu else ""
        print(f"{label:24s} {medians[variant]:>12,.0f} tokens/s (median)  peak RSS {rss:,.0f} MiB{gpu_text}")
    print(f"ratio (a)/(b)            {medians['recipe'] / medians['bare']:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
