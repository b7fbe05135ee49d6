"""The PPO stage's trainer, built from its config: prompts, tokenizer, policy, reference, value model and reward,
wired into our `PPOTrainer` -- and the table a run ends with (`PPOSummary`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from peft import TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, set_seed
from trl import get_peft_config

from llm_recipes.data.preferences import load_prompt_data
from llm_recipes.models.loading import load_causal_lm, load_tokenizer, torch_dtype
from llm_recipes.rl.ppo.trainer import PPOTrainer, make_accelerator
from llm_recipes.rl.rewards import load_reward_model, reward_function_from_path, reward_model_function

if TYPE_CHECKING:
    from trl import ModelConfig

    from llm_recipes.rl.config import PPOConfig, PPOScriptArguments


def load_value_model(script_args: PPOScriptArguments, model_args: ModelConfig, device: Any) -> Any:
    """The value model's starting point: value_model_path, else the reward model (its backbone already reads the
    task), else the policy with a fresh scalar head."""
    source = script_args.value_model_path or script_args.reward_model_path
    if source:
        model, _ = load_reward_model(source, dtype=model_args.dtype, device=device)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path,
            num_labels=1,
            revision=model_args.model_revision,
            dtype=torch_dtype(model_args.dtype),
            trust_remote_code=script_args.trust_remote_code,
            use_safetensors=True,
        )
    return model.requires_grad_(True).train()


def load_reward(script_args: PPOScriptArguments, model_args: ModelConfig, device: Any) -> Any:
    """The reward as one callable fn(prompts=, completions=) -> floats, from a reward model or a Python function."""
    if script_args.reward_function:
        return reward_function_from_path(script_args.reward_function)
    model, tokenizer = load_reward_model(script_args.reward_model_path, dtype=model_args.dtype, device=device)
    model.requires_grad_(False)
    return reward_model_function(model, tokenizer, batch_size=script_args.reward_batch_size)


def build_trainer(script_args: PPOScriptArguments, config: PPOConfig, model_args: ModelConfig) -> tuple[Any, Any]:
    """Prompts, tokenizer, policy, reference, value model, reward and our PPOTrainer. Returns (trainer, data)."""
    accelerator = make_accelerator(config)
    with accelerator.main_process_first():
        data = load_prompt_data(
            script_args.dataset_path,
            script_args.data_format,
            split=script_args.dataset_split,
            eval_path=script_args.eval_dataset_path,
            eval_size=script_args.eval_split_size,
            max_train_samples=script_args.max_train_samples,
            max_eval_samples=script_args.max_eval_samples,
            seed=config.seed,
        )

    # Models: seeded, so every process (and a resumed run) starts the value head from the same weights
    set_seed(config.seed)
    tokenizer = load_tokenizer(model_args, script_args.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # responses are cut at the first EOS, so padding with it is safe
    policy = load_causal_lm(model_args, script_args.trust_remote_code)
    value_model = load_value_model(script_args, model_args, accelerator.device)
    value_model.config.pad_token_id = tokenizer.pad_token_id
    reward_function = load_reward(script_args, model_args, accelerator.device)
    peft_config = get_peft_config(model_args)
    ref_model = None
    if peft_config is not None:
        # the adapter-disabled policy is the reference: no second copy of the weights
        policy = get_peft_model(policy, peft_config)
        value_model = get_peft_model(value_model, replace(peft_config, task_type=TaskType.SEQ_CLS))
    else:
        ref_model = load_causal_lm(model_args, script_args.trust_remote_code)

    trainer = PPOTrainer(
        config,
        policy,
        tokenizer,
        value_model=value_model,
        ref_model=ref_model,
        reward_function=reward_function,
        train_prompts=data.train["prompt"],
        eval_prompts=data.eval["prompt"] if data.eval is not None else None,
        accelerator=accelerator,
    )
    return trainer, data


LAST_STEP_STATS = ("score", "kl", "kl_coef", "entropy", "rollouts_per_second")


@dataclass
class PPOSummary:
    """The table a PPO run ends with (and records in its manifest): steps and prompts, the held-out score before and
    after training (when it was evaluated), and the last step's statistics."""

    ppo_steps: int
    episodes: int
    train_prompts: int
    eval_prompts: int
    processes: int
    sharded: bool
    first_eval: dict[str, float] | None
    last_eval: dict[str, float] | None
    last_step: dict[str, float]
    seconds: float

    @classmethod
    def of(cls, trainer: Any, data: Any, train_stats: dict[str, Any], seconds: float) -> PPOSummary:
        evals = [entry for entry in trainer.log_history if "eval_score" in entry]
        return cls(
            ppo_steps=trainer.global_step,
            episodes=trainer.global_step * trainer.config.rollout_batch_size * trainer.num_processes,
            train_prompts=len(data.train),
            eval_prompts=len(data.eval) if data.eval is not None else 0,
            processes=trainer.num_processes,
            sharded=trainer.sharded,
            first_eval=evals[0] if evals else None,
            last_eval=evals[-1] if evals else None,
            last_step={key: train_stats[key] for key in LAST_STEP_STATS if key in train_stats},
            seconds=seconds,
        )

    def as_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "PPO steps": self.ppo_steps,
            "episodes": self.episodes,
            "train prompts": self.train_prompts,
            "eval prompts": self.eval_prompts,
            "processes": self.processes,
            "sharding": "FSDP2" if self.sharded else "none",
        }
        if self.first_eval is not None and self.last_eval is not None:
            first, last = self.first_eval, self.last_eval
            summary.update(
                {
                    "eval score before": first["eval_score"],
                    "eval score after": last["eval_score"],
                    "eval score gain": last["eval_score"] - first["eval_score"],
                    "eval KL to reference": last["eval_kl"],
                    "eval response length": last["eval_response_length"],
                }
            )
        summary.update({f"last step {key}": value for key, value in self.last_step.items()})
        summary["seconds"] = round(self.seconds, 1)
        return summary
