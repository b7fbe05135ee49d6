"""Proof that the preference stages learn: SFT -> reward model -> PPO, GRPO, DPO and KTO on the synthetic colour task.

The task (llm_recipes/data/synthetic.py), in its colour-only variant: asked about an animal, a good answer names a
colour. Its exact reward (`colour_only_reward`: 1 if the answer names a colour, else 0) is known, so every stage is
measured against the truth. (The demo's full task also requires the answer to be about the asked animal; a ~0.1M
random Llama after a few seconds of SFT names the asked animal too rarely for that to measure the RL stages: 0.02
true reward before RL with seed 0.)

1. A tokenizer and a tiny random Llama (`--preset`), then SFT (recipes/sft.py) on answers half of which name a
   colour: the SFT policy starts at roughly half the maximum reward.
2. A reward model (recipes/reward.py) on preference pairs from the SFT model; its pairwise accuracy is measured
   on 200 fresh pairs it never saw.
3. From the same SFT policy: PPO (recipes/ppo.py, our trainer) and GRPO (recipes/grpo.py, TRL) optimise the
   reward model's score, DPO (recipes/dpo.py, TRL) learns from the preference pairs directly.
4. Every policy answers the same held-out prompts, sampled the same way (temperature 1, same seed): the true
   reward before (the SFT policy) and after, the gain, the reward model's score, the KL to the SFT policy
   (nats per answer, k1 on the policy's own samples) and the time each stage took.
5. PPO training speed in episodes per second against TRL 1.12's `PPOTrainer` (the last TRL with PPO, in its own
   venv `.venv-trl112`, see `ppo_speed.py`): the same SFT policy, reward and value models, the same sizes, each side
   in a fresh process, alternating, medians.
6. Ablations of our rollout (not baselines: nobody runs PPO rollouts without a KV cache or one prompt at a time):
   rollouts per second with generation batched and the KV cache on, and with each turned off.

    .venv/bin/python benchmarks/rl_learning.py                       # ~3 min on 2 CPU cores
    .venv/bin/python benchmarks/rl_learning.py --seed 1 --workdir /tmp/rl-bench --keep
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

import llm_recipes  # noqa: E402,F401  (first: it quiets bitsandbytes' import-time warning)

# isort: split
import torch  # noqa: E402


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=None, help="Where the stages write (default: a temporary folder).")
    parser.add_argument("--keep", action="store_true", help="Keep the workdir.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="llama-tiny", help="Model size (llama-tiny ~0.1M, llama-small ~3M).")
    parser.add_argument("--sft-epochs", type=float, default=10)
    parser.add_argument("--response-length", type=int, default=24)
    parser.add_argument("--eval-prompts", type=int, default=256)
    parser.add_argument("--ppo-steps", type=int, default=20, help="PPO steps of 64 episodes.")
    parser.add_argument("--ppo-learning-rate", type=float, default=2e-3, help="3e-3 diverged with seed 0 (KL 109).")
    parser.add_argument("--grpo-steps", type=int, default=40, help="GRPO steps of 32 completions (8 per prompt).")
    parser.add_argument("--dpo-epochs", type=float, default=2)
    parser.add_argument("--kto-epochs", type=float, default=1)
    parser.add_argument("--kto-learning-rate", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest).")
    parser.add_argument("--speed-steps", type=int, default=10, help="PPO steps of 64 episodes per speed run.")
    parser.add_argument("--speed-repeats", type=int, default=3, help="Speed runs per side (0: no TRL comparison).")
    parser.add_argument("--trl-python", type=Path, default=PROJECT / ".venv-trl112" / "bin" / "python")
    return parser.parse_args()


@contextlib.contextmanager
def quiet(log_path: Path):
    """A stage's own output goes to its log file; the benchmark prints only its figures."""
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def run_stage(stage: str, args: dict[str, Any], log: Path) -> tuple[dict, float]:
    """One stage through the library's in-process runner (as the pipeline runs it); (its summary, seconds)."""
    from llm_recipes.cli import run_here

    argv = [item for key, value in args.items() for item in (f"--{key}", str(value))]
    started = time.time()
    with quiet(log):
        summary = run_here(stage, argv)
    return summary, time.time() - started


# --------------------------------------------------------------------------------------------------------------
# The stages


def make_base(work: Path, preset: str, seed: int) -> Path:
    from llm_recipes.data.synthetic import write_synthetic_base_model

    return write_synthetic_base_model(work / "base", preset=preset, seed=seed)


def common(output_dir: Path, seed: int) -> dict[str, Any]:
    return {"output_dir": output_dir, "use_cpu": "true", "seed": seed}


def trl_common(output_dir: Path, seed: int) -> dict[str, Any]:
    return {**common(output_dir, seed), "save_strategy": "no", "logging_steps": 10, "bf16": "false"}


def sft(work: Path, base: Path, data: Path, args: argparse.Namespace) -> tuple[Path, float]:
    out = work / "sft"
    stage_args = {
        **trl_common(out, args.seed),
        "model_name_or_path": base,
        "dataset_path": data / "colour_sft.jsonl",
        "num_train_epochs": args.sft_epochs,
        "per_device_train_batch_size": 16,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 10,
        "max_length": 64,
    }
    _, seconds = run_stage("sft", stage_args, work / "sft.log")
    return out, seconds


def reward_model(work: Path, sft_dir: Path, data: Path, args: argparse.Namespace) -> tuple[Path, dict, float]:
    out = work / "reward"
    stage_args = {
        **trl_common(out, args.seed),
        "model_name_or_path": sft_dir,
        "dataset_path": data / "preferences.jsonl",
        "eval_split_size": 100,
        "num_train_epochs": 2,
        "per_device_train_batch_size": 16,
        "learning_rate": 3e-3,
        "max_length": 64,
    }
    summary, seconds = run_stage("reward", stage_args, work / "reward.log")
    return out, summary, seconds


def ppo(work: Path, sft_dir: Path, rm_dir: Path, data: Path, args: argparse.Namespace) -> tuple[Path, dict, float]:
    out = work / "ppo"
    stage_args = {
        **common(out, args.seed),
        "model_name_or_path": sft_dir,
        "dataset_path": data / "rl_prompts.jsonl",
        "reward_model_path": rm_dir,
        "eval_split_size": 0,
        "rollout_batch_size": 64,
        "mini_batch_size": 16,
        "ppo_epochs": 2,
        "num_ppo_steps": args.ppo_steps,
        "response_length": args.response_length,
        "temperature": 1.0,
        "learning_rate": args.ppo_learning_rate,
        "kl_coef": 0.05,
        "missing_eos_penalty": 1.0,
        "save_steps": 1000,
        "sample_every": 5,
    }
    summary, seconds = run_stage("ppo", stage_args, work / "ppo.log")
    return out, summary, seconds


def grpo(work: Path, sft_dir: Path, rm_dir: Path, data: Path, args: argparse.Namespace) -> tuple[Path, float]:
    out = work / "grpo"
    stage_args = {
        **trl_common(out, args.seed),
        "model_name_or_path": sft_dir,
        "dataset_path": data / "rl_prompts.jsonl",
        "reward_model_path": rm_dir,
        "max_steps": args.grpo_steps,
        "per_device_train_batch_size": 32,
        "num_generations": 8,
        "max_completion_length": args.response_length,
        "temperature": 1.0,
        "learning_rate": 1e-3,
        "beta": 0.05,  # TRL's default is 0 (no KL term); PPO has one
        "mask_truncated_completions": "true",  # answers cut at the length limit teach nothing (PPO: EOS penalty)
    }
    _, seconds = run_stage("grpo", stage_args, work / "grpo.log")
    return out, seconds


def dpo(work: Path, sft_dir: Path, data: Path, args: argparse.Namespace) -> tuple[Path, float]:
    out = work / "dpo"
    stage_args = {
        **trl_common(out, args.seed),
        "model_name_or_path": sft_dir,
        "dataset_path": data / "preferences.jsonl",
        "eval_split_size": 0,
        "num_train_epochs": args.dpo_epochs,
        "per_device_train_batch_size": 16,
        "learning_rate": 3e-4,  # 1e-3 over-fits the pairs: true reward 0.65 at KL 19
        "beta": 0.1,
        "max_length": 64,
    }
    _, seconds = run_stage("dpo", stage_args, work / "dpo.log")
    return out, seconds


def kto(work: Path, sft_dir: Path, data: Path, args: argparse.Namespace) -> tuple[Path, float]:
    """KTO on the same pairs read as unpaired rows (chosen: thumbs up, rejected: thumbs down)."""
    out = work / "kto"
    stage_args = {
        **trl_common(out, args.seed),
        "model_name_or_path": sft_dir,
        "dataset_path": data / "preferences.jsonl",
        "eval_split_size": 0,
        "num_train_epochs": args.kto_epochs,
        "per_device_train_batch_size": 16,
        "learning_rate": args.kto_learning_rate,
        "beta": 0.1,
        "max_length": 64,
    }
    _, seconds = run_stage("kto", stage_args, work / "kto.log")
    return out, seconds


# --------------------------------------------------------------------------------------------------------------
# Measurements


def pair_count(data: Path) -> int:
    with open(data / "preferences.jsonl", encoding="utf-8") as rows:
        return sum(1 for line in rows if line.strip())


def held_out_pairwise_accuracy(rm_dir: Path, seed: int) -> float:
    from llm_recipes.data.synthetic import as_conversation, synthetic_preferences
    from llm_recipes.rl.rewards import load_reward_model, score_responses

    model, tokenizer = load_reward_model(str(rm_dir))
    pairs = [as_conversation(row) for row in synthetic_preferences(200, seed=1000 + seed, wrong_animal_share=0.0)]
    prompts = [row["prompt"] for row in pairs]
    chosen = score_responses(model, tokenizer, prompts, [row["chosen"][0]["content"] for row in pairs])
    rejected = score_responses(model, tokenizer, prompts, [row["rejected"][0]["content"] for row in pairs])
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)


class Evaluator:
    """Every policy answers the same held-out prompts the same way; true reward, RM score and KL to SFT."""

    def __init__(self, sft_dir: Path, rm_dir: Path, args: argparse.Namespace):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from llm_recipes.data.synthetic import as_conversation, synthetic_prompts
        from llm_recipes.rl.ppo.trainer import SamplingSettings
        from llm_recipes.rl.rewards import load_reward_model, reward_model_function

        self.reference = AutoModelForCausalLM.from_pretrained(sft_dir).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(sft_dir)
        # chat prompts, as the demo data has them (the SFT policy is a chat model)
        texts = synthetic_prompts(args.eval_prompts, seed=2000 + args.seed)
        self.prompts = [as_conversation({"prompt": text})["prompt"] for text in texts]
        rm, rm_tokenizer = load_reward_model(str(rm_dir))
        self.reward_model = reward_model_function(rm, rm_tokenizer, batch_size=64)
        self.settings = SamplingSettings(response_length=args.response_length, temperature=1.0, batch_size=64)
        self.seed = args.seed

    def __call__(self, policy_dir: Path) -> dict[str, float]:
        from transformers import AutoModelForCausalLM

        from llm_recipes.data.synthetic import colour_only_reward
        from llm_recipes.evaluation.generation import prompt_text
        from llm_recipes.rl.ppo.trainer import completions_for, evaluation_sums, means_from_sums

        policy = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
        sums, batch = evaluation_sums(
            policy, self.reference, self.tokenizer, self.prompts, colour_only_reward, self.settings, seed=self.seed
        )
        result = means_from_sums(sums, prefix="")
        rm_scores = self.reward_model(prompts=self.prompts, completions=completions_for(self.prompts, batch.texts))
        result["rm_score"] = sum(rm_scores) / len(rm_scores)
        result["sample"] = f"{prompt_text(self.prompts[0])!r} -> {batch.texts[0]!r}"
        return result


def rollout_speed(work: Path, sft_dir: Path, rm_dir: Path, data: Path, args: argparse.Namespace) -> dict[str, float]:
    """PPO rollouts per second, ours (batched generation, KV cache) against each baseline, on the same prompts."""
    from llm_recipes.cli import parse_here
    from llm_recipes.rl.ppo.build import build_trainer

    argv = [
        "--model_name_or_path", str(sft_dir), "--dataset_path", str(data / "rl_prompts.jsonl"),
        "--reward_model_path", str(rm_dir), "--output_dir", str(work / "ppo-speed"), "--use_cpu", "true",
        "--rollout_batch_size", "64", "--mini_batch_size", "16", "--response_length", str(args.response_length),
        "--temperature", "1.0", "--rollout_forward_batch_size", "64", "--eval_split_size", "0",
    ]  # fmt: skip
    with quiet(work / "speed.log"):
        trainer, _ = build_trainer(*parse_here("ppo", argv))
    prompts = trainer.prompts_for_step(0)
    variants = {
        "batched + KV cache (ours)": dict(batch_size=64, use_cache=True),
        "batched, no KV cache": dict(batch_size=64, use_cache=False),
        "one prompt at a time + KV cache": dict(batch_size=1, use_cache=True),
    }
    results = {}
    trainer.rollout(prompts[:8])  # warm-up
    for name, settings in variants.items():
        trainer.settings.batch_size, trainer.settings.use_cache = settings["batch_size"], settings["use_cache"]
        torch.manual_seed(args.seed)
        started = time.time()
        rollout = trainer.rollout(prompts)
        seconds = time.time() - started
        tokens = int(rollout.batch.response_mask.sum())
        results[name] = (len(prompts) / seconds, tokens / seconds)
    return results


def ppo_speed_against_trl(
    work: Path, sft_dir: Path, rm_dir: Path, data: Path, args: argparse.Namespace
) -> dict[str, list[float]] | None:
    """Episodes per second of our PPO and TRL 1.12's, each run in a fresh process (`ppo_speed.py`), alternating."""
    import subprocess

    if args.speed_repeats < 1:
        return None
    if not args.trl_python.exists():
        print(f"no TRL 1.12 interpreter at {args.trl_python}: PPO speed against TRL skipped (see ppo_speed.py)")
        return None
    pythons = {"ours": Path(sys.executable), "TRL 1.12 PPOTrainer": args.trl_python}
    runs: dict[str, list[float]] = {name: [] for name in pythons}
    for repeat in range(args.speed_repeats):
        order = list(pythons) if repeat % 2 == 0 else list(reversed(pythons))
        for name in order:
            result = work / f"ppo-speed-{repeat}-{'ours' if name == 'ours' else 'trl'}.json"
            command = [str(pythons[name]), str(PROJECT / "benchmarks" / "ppo_speed.py")]
            command += ["--side", "ours" if name == "ours" else "trl", "--policy", str(sft_dir)]
            command += ["--reward-model", str(rm_dir), "--prompts", str(data / "rl_prompts.jsonl")]
            command += ["--steps", str(args.speed_steps), "--response-length", str(args.response_length)]
            command += ["--seed", str(args.seed), "--threads", str(args.threads), "--result", str(result)]
            with open(work / "ppo-speed.log", "a", encoding="utf-8") as log:
                subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT)
            runs[name].append(json.loads(result.read_text())["episodes_per_second"])
    return runs


# --------------------------------------------------------------------------------------------------------------


def main() -> None:
    import datasets
    import transformers

    args = parse()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from llm_recipes.data.synthetic import write_synthetic_demo_data

    temporary = None
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
    else:
        temporary = tempfile.TemporaryDirectory(prefix="rl-learning-")
        work = Path(temporary.name)
    data = work / "data"
    write_synthetic_demo_data(data, wrong_animal_share=0.0)  # rejected answers: no colour (the colour-only task)
    print(f"workdir {work} (stage logs: *.log)", flush=True)

    base = make_base(work, args.preset, args.seed)
    sft_dir, sft_seconds = sft(work, base, data, args)
    print(f"SFT done in {sft_seconds:.0f} s", flush=True)
    rm_dir, rm_summary, rm_seconds = reward_model(work, sft_dir, data, args)
    accuracy = held_out_pairwise_accuracy(rm_dir, args.seed)
    print(f"reward model done in {rm_seconds:.0f} s", flush=True)
    evaluate = Evaluator(sft_dir, rm_dir, args)
    before = evaluate(sft_dir)

    rows = []
    ppo_dir, ppo_summary, ppo_seconds = ppo(work, sft_dir, rm_dir, data, args)
    print(f"PPO done in {ppo_seconds:.0f} s", flush=True)
    rows.append(("PPO (ours)", evaluate(ppo_dir), ppo_seconds, f"{args.ppo_steps} x 64 episodes"))
    grpo_dir, grpo_seconds = grpo(work, sft_dir, rm_dir, data, args)
    print(f"GRPO done in {grpo_seconds:.0f} s", flush=True)
    rows.append(("GRPO (TRL)", evaluate(grpo_dir), grpo_seconds, f"{args.grpo_steps} x 32 completions"))
    dpo_dir, dpo_seconds = dpo(work, sft_dir, data, args)
    print(f"DPO done in {dpo_seconds:.0f} s", flush=True)
    dpo_budget = f"{args.dpo_epochs:g} epochs of {pair_count(data):,} pairs"
    rows.append(("DPO (TRL)", evaluate(dpo_dir), dpo_seconds, dpo_budget))
    kto_dir, kto_seconds = kto(work, sft_dir, data, args)
    print(f"KTO done in {kto_seconds:.0f} s", flush=True)
    kto_budget = f"{args.kto_epochs:g} epochs of {2 * pair_count(data):,} labelled rows"
    rows.append(("KTO (TRL)", evaluate(kto_dir), kto_seconds, kto_budget))
    speed = rollout_speed(work, sft_dir, rm_dir, data, args)
    trl_speed = ppo_speed_against_trl(work, sft_dir, rm_dir, data, args)

    print()
    print(f"Synthetic colour task, {args.preset}, seed {args.seed}, {len(evaluate.prompts)} held-out prompts, answers")
    print(f"sampled at temperature 1 (<= {args.response_length} tokens). True reward: 1 if the answer names a colour")
    print("(colour_only_reward; the demo's full task also asks for the right animal).")
    print()
    print(f"SFT: {sft_seconds:.0f} s. Reward model: {rm_seconds:.0f} s, held-out pairwise accuracy {accuracy:.3f} on")
    print(f"200 fresh pairs (its own eval split: {rm_summary.get('eval pairwise accuracy')}).")
    print()
    header = "| algorithm | true reward before | after | gain | RM score before | after | KL to SFT | missing EOS |"
    header += " time (s) | budget |"
    print(header)
    print("|---" * 10 + "|")
    for name, after, seconds, budget in rows:
        print(
            f"| {name} | {before['score']:.3f} | {after['score']:.3f} | {after['score'] - before['score']:+.3f} | "
            f"{before['rm_score']:.2f} | {after['rm_score']:.2f} | {after['kl']:.2f} | {after['missing_eos']:.2f} | "
            f"{seconds:.0f} | {budget} |"
        )
    print()
    for name, after, _, _ in [("SFT", before, 0, ""), *rows]:
        print(f"  {name:<11} {after['sample']}")
    print()
    if trl_speed:
        import statistics

        medians = {name: statistics.median(values) for name, values in trl_speed.items()}
        print(
            f"PPO training speed ({args.speed_steps} steps x 64 episodes, <= {args.response_length} tokens, 2 PPO "
            f"epochs x 4 mini-batches of 16, {args.threads} thread; each run a fresh process, alternating):"
        )
        print("| trainer | episodes/s (median) | runs |")
        print("|---|---|---|")
        for name, values in trl_speed.items():
            print(f"| {name} | {medians[name]:.1f} | {' / '.join(f'{value:.1f}' for value in values)} |")
        ratio = medians["ours"] / medians["TRL 1.12 PPOTrainer"]
        print(f"ours / TRL 1.12 PPOTrainer: {ratio:.2f}x episodes/s")
        print()
    baseline = speed["batched + KV cache (ours)"][0]
    print("Ablations of our rollout (not baselines: what batching and the KV cache buy):")
    print("| PPO rollout (64 prompts) | rollouts/s | response tokens/s | ours / this |")
    print("|---|---|---|---|")
    for name, (per_second, tokens) in speed.items():
        print(f"| {name} | {per_second:.1f} | {tokens:.0f} | {baseline / per_second:.2f} |")
    logged = [e["rollouts_per_second"] for e in ppo_history(ppo_dir) if "rollouts_per_second" in e]
    if logged:
        print(f"(during PPO training: {sum(logged) / len(logged):.1f} rollouts/s on average)")
    summary = {
        "reward_model_accuracy": accuracy,
        "before": before,
        "rows": {name: {**after, "seconds": seconds} for name, after, seconds, _ in rows},
        "rollouts_per_second": {name: value[0] for name, value in speed.items()},
        "ppo_episodes_per_second": trl_speed,
    }
    (work / "rl_learning.json").write_text(json.dumps(summary, indent=2, default=str))
    if temporary is not None and not args.keep:
        temporary.cleanup()


def ppo_history(ppo_dir: Path) -> list[dict]:
    path = ppo_dir / "trainer_state.json"
    return json.loads(path.read_text())["log_history"] if path.is_file() else []


if __name__ == "__main__":
    main()
