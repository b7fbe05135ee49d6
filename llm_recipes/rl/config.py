"""Reward modelling, DPO, KTO, TRL's online RL trainers (GRPO, RLOO) and our PPO: their script arguments."""

from __future__ import annotations

from dataclasses import dataclass, field

from llm_recipes.configs.options import ResumeOptions
from llm_recipes.configs.parsing import (
    DATA_FORMATS,
    RANGE_CHECKS,
)

PREFERENCE_FORMATS = ("auto", "prompt_chosen_rejected", "implicit_prompt", "sharegpt", "hh_rlhf")


@dataclass
class PreferenceDataArguments(ResumeOptions):
    """Pairwise preference data (see llm_recipes/data/preferences.py): one file or Hub id, an eval split."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Preference data: a data file (json, jsonl, csv, parquet), a `save_to_disk` folder or a Hub "
            "dataset id with prompt/chosen/rejected, chosen/rejected, ShareGPT or HH-RLHF rows."
        },
    )
    data_format: str = field(
        default="auto",
        metadata={"help": "Format of `dataset_path`; `auto` detects it.", "choices": PREFERENCE_FORMATS},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path` to train on."})
    eval_dataset_path: str | None = field(default=None, metadata={"help": "A separate evaluation dataset."})
    eval_split_size: float = field(
        default=0.1,
        metadata={"help": "Pairs held out for evaluation: a share (0 <= x < 1) or a count (>= 1); 0 for none."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training pairs."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many eval pairs."})


@dataclass
class RewardScriptArguments(PreferenceDataArguments):
    """What the reward recipe needs beyond TRL's `RewardConfig` (which has `center_rewards_coefficient`) and
    `ModelConfig` (full or LoRA training; with LoRA the score head is trained and saved in full)."""

    use_margin: bool = field(
        default=True,
        metadata={"help": "Use the data's `margin` column, when it has one, in the loss (Llama 2's margin loss)."},
    )


@dataclass
class DPOScriptArguments(PreferenceDataArguments):
    """What the DPO recipe needs beyond TRL's `DPOConfig` and `ModelConfig`; the reference model is the starting
    policy (a frozen copy, or the base under a LoRA adapter)."""


# KTO reads unpaired rows, or pairs split into them: `unpaired` is one answer per row with a `label`
KTO_FORMATS = ("auto", "unpaired", *PREFERENCE_FORMATS[1:])


@dataclass
class KTOScriptArguments(PreferenceDataArguments):
    """What the KTO recipe needs beyond TRL's `KTOConfig` (`beta`, `desirable_weight`, `undesirable_weight`, ...)
    and `ModelConfig`; the reference model is the starting policy, as for DPO."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Thumbs-up/thumbs-down data: a data file (json, jsonl, csv, parquet), a `save_to_disk` folder or "
            "a Hub dataset id with one answer per row and a true/false `label` (prompt/completion/label, or "
            "messages/label whose last assistant turn is the answer), or preference pairs, split into a true and a "
            "false row each."
        },
    )
    data_format: str = field(
        default="auto",
        metadata={
            "help": "Format of `dataset_path`. `auto` reads a `label` column as unpaired rows and chosen/rejected "
            "columns as pairs to split (the columns say which it is, so no switch is needed); `unpaired` insists on "
            "labelled rows; a preference format reads pairs of that shape.",
            "choices": KTO_FORMATS,
        },
    )
    eval_split_size: float = field(
        default=0.1,
        metadata={
            "help": "Rows (pairs, for pair data: held out whole) for evaluation: a share (0 <= x < 1) or a count "
            "(>= 1); 0 for none."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training rows (pairs, for pair data: two rows each)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many eval rows (pairs, for pair data)."}
    )


@dataclass
class PromptRewardArguments(ResumeOptions):
    """Prompts and exactly one reward (a reward model or a Python function): what GRPO, RLOO and PPO read."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Prompts: a `prompt` column (text or messages), or any SFT/preference format, whose prompt side "
            "is used (the conversation up to its last assistant turn)."
        },
    )
    data_format: str = field(
        default="auto",
        metadata={"help": "Format of `dataset_path`; `auto` detects it from the columns.", "choices": DATA_FORMATS},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_path`."})
    eval_dataset_path: str | None = field(default=None, metadata={"help": "Separate evaluation prompts."})
    eval_split_size: float = field(
        default=0.0,
        metadata={"help": "Prompts held out for evaluation: a share (0 <= x < 1) or a count (>= 1); 0 for none."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training prompts."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use at most this many eval prompts."})
    reward_model_path: str | None = field(
        default=None, metadata={"help": "The reward: a model folder written by the reward stage (or a LoRA adapter)."}
    )
    reward_function: str | None = field(
        default=None,
        metadata={
            "help": "The reward: a Python function `package.module:function` (or `file.py:function`) taking "
            "(prompts, completions, **kwargs) and returning floats, e.g. llm_recipes.data.synthetic:synthetic_reward."
        },
    )
    reward_batch_size: int = field(default=16, metadata={"help": "Completions per reward-model forward pass."})
    eval_before_training: bool = field(
        default=True, metadata={"help": "With eval prompts: also measure the starting policy's mean eval reward."}
    )


@dataclass
class RLScriptArguments(PromptRewardArguments):
    """What the GRPO and RLOO recipes need beyond TRL's configs: prompts, exactly one reward, and what a completion
    that never ends costs (PPO's `missing_eos_penalty` is in its `PPOConfig`)."""

    missing_eos_penalty: float | None = field(
        default=1.0,
        metadata={
            "help": "Subtracted from the reward of a completion cut at max_completion_length without an EOS, which "
            "would otherwise be scored as if finished (0 or null: none)."
        },
    )


RANGE_CHECKS["center_rewards_coefficient"] = (lambda v: v is None or v >= 0, "must be >= 0 (0.01 is usual)")
RANGE_CHECKS["reward_batch_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["beta"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["max_completion_length"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["desirable_weight"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["undesirable_weight"] = (lambda v: v > 0, "must be > 0")


# --------------------------------------------------------------------------------------------------------------
# PPO (our trainer, llm_recipes/rl/ppo/trainer.py)

PPO_KL_ESTIMATORS = ("k1", "k3")
PPO_LR_SCHEDULES = ("linear", "cosine", "constant")


@dataclass
class PPOScriptArguments(PromptRewardArguments):
    """What the PPO recipe needs beyond `PPOConfig` and `ModelConfig`: prompts, exactly one reward (a reward model
    or a Python function), and where the value model starts."""

    value_model_path: str | None = field(
        default=None,
        metadata={
            "help": "Start the value model from this sequence-classifier folder. Default: the reward model (its "
            "backbone already reads the task), else the policy with a fresh scalar head."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the Hub (off: safe)."})


@dataclass
class PPOConfig:
    """RLHF PPO settings (llm_recipes.rl.ppo.trainer.PPOTrainer). Batch sizes are per process: each PPO step samples
    `rollout_batch_size` prompts per process, then runs `ppo_epochs` passes over them in mini-batches of
    `mini_batch_size` (one optimizer step each, split into `gradient_accumulation_steps` forward/backward passes)."""

    output_dir: str = field(default="outputs/ppo", metadata={"help": "Where the policy and checkpoints are written."})
    seed: int = field(default=42, metadata={"help": "Seed of the prompt order, sampling and value-head init."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU even when a GPU is there."})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (a GPU that supports it)."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in the backward pass to save memory."}
    )
    # optimisation
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate (policy and value model)."})
    lr_scheduler_type: str = field(
        default="linear", metadata={"help": "Learning-rate schedule over all updates.", "choices": PPO_LR_SCHEDULES}
    )
    warmup_steps: int = field(default=0, metadata={"help": "Optimizer updates of linear warm-up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the gradient norm to this (0: no clipping)."})
    # batches and length of training
    rollout_batch_size: int = field(
        default=64, metadata={"help": "Prompts sampled per PPO step, per process (episodes of one rollout)."}
    )
    mini_batch_size: int = field(
        default=16, metadata={"help": "Episodes per optimizer update, per process; divides rollout_batch_size."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Forward/backward passes per mini-batch; divides mini_batch_size."}
    )
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch."})
    num_ppo_steps: int = field(default=100, metadata={"help": "PPO steps (rollout batches) to train for."})
    total_episodes: int | None = field(
        default=None,
        metadata={"help": "Train on this many episodes (prompts sampled, all processes) instead of num_ppo_steps."},
    )
    rollout_forward_batch_size: int = field(
        default=32,
        metadata={"help": "Prompts per generate call and per no-gradient forward pass of the rollout (memory)."},
    )
    # sampling
    max_prompt_length: int = field(
        default=512, metadata={"help": "Prompts longer than this (tokens) keep their end, next to the answer."}
    )
    response_length: int = field(default=64, metadata={"help": "Most tokens a response may have."})
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature (log-probabilities are taken at it too)."}
    )
    top_k: int | None = field(default=None, metadata={"help": "Sample among the k likeliest tokens (null: all)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1: all tokens)."})
    stop_at_eos: bool = field(
        default=True,
        metadata={"help": "A response ends at its first EOS (tokens after it are not part of the episode)."},
    )
    missing_eos_penalty: float | None = field(
        default=1.0,
        metadata={
            "help": "Subtracted from the score of a response cut at response_length without an EOS, which would "
            "otherwise be scored as if finished (0 or null: none)."
        },
    )
    # KL to the reference policy
    kl_coef: float = field(default=0.05, metadata={"help": "Weight of the per-token KL penalty (its start value)."})
    kl_estimator: str = field(
        default="k1",
        metadata={
            "help": "k1: log-ratio (unbiased); k3: (ratio - 1) - log ratio (unbiased, never negative, lower variance).",
            "choices": PPO_KL_ESTIMATORS,
        },
    )
    adaptive_kl: bool = field(
        default=False, metadata={"help": "Adapt kl_coef so the KL tracks kl_target (Ziegler et al. 2019)."}
    )
    kl_target: float = field(default=6.0, metadata={"help": "adaptive_kl: the KL (nats per response) to track."})
    kl_horizon: float = field(default=10000, metadata={"help": "adaptive_kl: episodes over which kl_coef adapts."})
    kl_stop: float | None = field(
        default=100.0,
        metadata={
            "help": "Stop when the mean KL per response exceeds this (a blow-up); the last good checkpoint stays. "
            "null: never."
        },
    )
    # advantages and losses
    gamma: float = field(default=1.0, metadata={"help": "Discount factor over response tokens."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (bias-variance trade-off of the advantages)."})
    cliprange: float = field(default=0.2, metadata={"help": "PPO policy ratio clip: 1 +- cliprange."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip around the rollout-time values."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss in the total loss."})
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Scale the per-token rewards to unit variance (mean kept) before GAE."}
    )
    whiten_advantages: bool = field(
        default=True, metadata={"help": "Normalise advantages to zero mean and unit variance per rollout batch."}
    )
    # output
    merge_adapter: bool = field(
        default=True,
        metadata={"help": "With use_peft: save the policy merged into its base (false: the adapter alone)."},
    )
    # logging, evaluation, checkpoints
    logging_steps: int = field(default=1, metadata={"help": "Log every N PPO steps."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate on the held-out prompts every N steps (null: at the end only)."}
    )
    sample_every: int = field(default=10, metadata={"help": "Print sample generations every N steps (0: never)."})
    num_samples: int = field(default=3, metadata={"help": "Generations printed each time."})
    save_steps: int = field(default=50, metadata={"help": "Write a checkpoint every N PPO steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "Resume from this checkpoint (default: the last one in output_dir)."}
    )
    # Hub
    push_to_hub: bool = field(default=False, metadata={"help": "Push the policy to the Hub (private by default)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo id for the push."})
    hub_private_repo: bool = field(default=True, metadata={"help": "Create the Hub repo as private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN or the login)."})


RANGE_CHECKS["rollout_batch_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["mini_batch_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["ppo_epochs"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["num_ppo_steps"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["total_episodes"] = (lambda v: v is None or v >= 1, "must be >= 1")
RANGE_CHECKS["rollout_forward_batch_size"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["max_prompt_length"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["response_length"] = (lambda v: v >= 1, "must be >= 1")
RANGE_CHECKS["top_k"] = (lambda v: v is None or v >= 0, "must be >= 0 (0 or null: no top-k)")
RANGE_CHECKS["top_p"] = (lambda v: 0 < v <= 1, "must be in (0, 1]")
RANGE_CHECKS["missing_eos_penalty"] = (lambda v: v is None or v >= 0, "must be >= 0 (it is subtracted)")
RANGE_CHECKS["kl_coef"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["kl_target"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["kl_horizon"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["kl_stop"] = (lambda v: v is None or v > 0, "must be > 0 (or null: never stop)")
RANGE_CHECKS["gamma"] = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
RANGE_CHECKS["lam"] = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
RANGE_CHECKS["cliprange"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["cliprange_value"] = (lambda v: v > 0, "must be > 0")
RANGE_CHECKS["vf_coef"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["sample_every"] = (lambda v: v >= 0, "must be >= 0 (0: never)")
RANGE_CHECKS["save_total_limit"] = (lambda v: v is None or v >= 1, "must be >= 1")

# fields these arguments share with another stage's, checked the same way whichever is imported
RANGE_CHECKS["num_samples"] = (lambda v: v >= 0, "must be >= 0")
RANGE_CHECKS["temperature"] = (lambda v: v > 0, "must be > 0")
