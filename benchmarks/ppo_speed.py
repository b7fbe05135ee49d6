"""PPO training speed, episodes per second: our PPO trainer against TRL's `PPOTrainer`, same models, same sizes.

TRL shipped PPO last in 1.12 (`trl.experimental.ppo`), so its side runs in its own venv, as datatrove does for
`corpus_speed.py` (this project's venv has a newer TRL). Both sides train the same SFT policy against the same reward
model, the value model starting from the reward model, for the same number of PPO steps of 64 episodes: answers of
at most `--response-length` tokens sampled at temperature 1 with the KV cache on, rollout forward passes in batches
of 64, 2 PPO epochs over 4 mini-batches of 16, the same learning rate, KL coefficient and missing-EOS penalty, one
torch thread. TRL ties its rollout size to gradient accumulation (rollout = per-device batch x accumulation steps),
so to sample 64 episodes per step with mini-batches of 16 it accumulates 4 of them per optimizer step, where ours
steps the optimizer on each; the forward and backward passes are the same. Timed: `trainer.train()` only (models
loaded, interpreter started before). Used by `rl_learning.py`; one side per process:

    .venv/bin/python benchmarks/ppo_speed.py --side ours --policy SFT_DIR --reward-model RM_DIR \\
        --prompts rl_prompts.jsonl --steps 10 --result ours.json
    .venv-trl112/bin/python benchmarks/ppo_speed.py --side trl ...   # same arguments

Create TRL 1.12's venv once (from the repository root; torch from the local CPU wheel first):

    python3 -m venv .venv-trl112 && .venv-trl112/bin/pip install torch==2.13.0 && \\
        .venv-trl112/bin/pip install "trl==1.12.*"
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

EPISODES_PER_STEP, MINI_BATCH, PPO_EPOCHS = 64, 16, 2
SETTINGS = {"learning_rate": 3e-3, "kl_coef": 0.05, "missing_eos_penalty": 1.0, "temperature": 1.0}


def train_ours(args: argparse.Namespace, output_dir: str) -> float:
    from llm_recipes.cli import parse_here
    from llm_recipes.rl.ppo.build import build_trainer

    argv = {
        "model_name_or_path": args.policy,
        "reward_model_path": args.reward_model,
        "dataset_path": args.prompts,
        "output_dir": output_dir,
        "use_cpu": "true",
        "seed": args.seed,
        "eval_split_size": 0,
        "rollout_batch_size": EPISODES_PER_STEP,
        "rollout_forward_batch_size": EPISODES_PER_STEP,
        "mini_batch_size": MINI_BATCH,
        "ppo_epochs": PPO_EPOCHS,
        "num_ppo_steps": args.steps,
        "response_length": args.response_length,
        "save_steps": 10_000,
        "sample_every": 0,
        "logging_steps": 10_000,
        **SETTINGS,
    }
    trainer, _ = build_trainer(*parse_here("ppo", [f"--{k}={v}" for k, v in argv.items()]))
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def train_trl(args: argparse.Namespace, output_dir: str) -> float:
    import datasets
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.policy, padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = datasets.load_dataset("json", data_files=args.prompts, split="train")
    # TRL's PPO reads token ids; the prompts are chats, rendered with the policy's template as ours renders them
    prompts = prompts.map(
        lambda row: {
            "input_ids": tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=False)
        },
        remove_columns=prompts.column_names,
    )
    config = PPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        seed=args.seed,
        per_device_train_batch_size=MINI_BATCH,
        gradient_accumulation_steps=EPISODES_PER_STEP // MINI_BATCH,
        num_mini_batches=EPISODES_PER_STEP // MINI_BATCH,
        num_ppo_epochs=PPO_EPOCHS,
        total_episodes=args.steps * EPISODES_PER_STEP,
        local_rollout_forward_batch_size=EPISODES_PER_STEP,
        response_length=args.response_length,
        stop_token="eos",
        num_sample_generations=0,
        save_strategy="no",
        report_to=[],
        logging_steps=10_000,
        bf16=False,
        **SETTINGS,
    )
    policy = AutoModelForCausalLM.from_pretrained(args.policy)
    reference = AutoModelForCausalLM.from_pretrained(args.policy)
    reward = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1)
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=reference,
        reward_model=reward,
        value_model=value,
        train_dataset=prompts,
    )
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", choices=("ours", "trl"), required=True)
    parser.add_argument("--policy", required=True, help="the SFT policy (and reference) folder")
    parser.add_argument("--reward-model", required=True, help="the reward model folder (value model starts from it)")
    parser.add_argument("--prompts", required=True, help="jsonl of chat prompts ({'prompt': [messages]})")
    parser.add_argument("--steps", type=int, default=10, help="PPO steps of 64 episodes")
    parser.add_argument("--response-length", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix=f"ppo-speed-{args.side}-") as output_dir:
        seconds = (train_ours if args.side == "ours" else train_trl)(args, output_dir)
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    if args.side == "trl":
        import trl

        versions["trl"] = trl.__version__
    episodes = args.steps * EPISODES_PER_STEP
    result = {"side": args.side, "seconds": seconds, "episodes": episodes, "episodes_per_second": episodes / seconds}
    args.result.write_text(json.dumps({**result, "versions": versions}, indent=2))


if __name__ == "__main__":
    main()
