"""RLHF PPO: a readable training loop on `accelerate`, because TRL 1.x no longer ships a PPO trainer.

One PPO step, as `PPOTrainer.train` runs it:

1. Rollout (no gradients). Each process takes its share of `rollout_batch_size` prompts, samples responses with
   `generate` (batched, KV cache on, temperature/top-k/top-p, at most `response_length` tokens, stopping at EOS),
   cuts each response after its first EOS and scores it with the reward (a reward model wrapped as a function, or
   any Python function `fn(prompts, completions) -> floats`); a response without an EOS loses
   `missing_eos_penalty`. Policy, reference and value model read the same prompt + response once more for
   per-token log-probabilities and values.
2. Advantages: per-token reward = -kl_coef * KL(policy || reference) plus the score on the last token; GAE
   (gamma, lam) gives advantages and returns; advantages are whitened.
3. Optimisation: `ppo_epochs` passes over the rollout in shuffled mini-batches; each is one optimizer update of
   the clipped policy loss + vf_coef * clipped value loss, over `gradient_accumulation_steps` micro-batches.
4. Bookkeeping: the adaptive KL coefficient moves; stats are averaged over processes (`accelerator.gather`) and
   logged (`log_history`, saved as `trainer_state.json` like a `transformers.Trainer`'s, so the evaluate stage
   plots it); sample generations are printed. A NaN or a KL above `kl_stop` in a rollout stops the run with a
   `TrainingDiverged` error naming the last good checkpoint: a checkpoint of step N is written only after step
   N+1's rollout (or, for the last step, the held-out evaluation) has sampled from its weights and passed.

The policy, the value model and (unless the policy is PEFT: then the reference is the policy with its adapter
disabled) the frozen reference are one module, `ppo_rollout.PolicyAndValue`, prepared once by accelerate; one
optimizer trains policy and value model. TRL utilities do what they already do: `selective_log_softmax`,
`entropy_from_logits`, `disable_dropout_in_model`, `unwrap_model_for_generation`. The mathematics is in
`ppo_core` (unit-tested on hand-computed values), sampling in `ppo_rollout`, checkpoints in `ppo_checkpoint`.

Processes: every process generates, scores and trains on its own prompts; statistics are averaged by `gather`
and whitening is per process. Under DDP each process holds whole models and gradients are averaged. Under FSDP2
(accelerate's plugin, `fsdp_version: 2`: each decoder layer its own shard unit) the policy, value model and
reference are sharded; generation gathers the policy's layers once per batch and the processes generate in step;
checkpoints gather full weights and a full optimizer state on the main process. The reward model stays whole on
every process (it is only called, through the reward function). DeepSpeed is refused (`ppo_launch` says why).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from torch import nn
from transformers import get_scheduler
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.utils import disable_dropout_in_model, entropy_from_logits, selective_log_softmax

from llm_recipes.errors import UserError
from llm_recipes.evaluation.generation import prompt_text
from llm_recipes.rl.ppo import checkpoint as ppo_checkpoint
from llm_recipes.rl.ppo import launch as ppo_launch
from llm_recipes.rl.ppo import rollout as ppo_rollout
from llm_recipes.rl.ppo.checkpoint import (
    OPTIMIZER,
    SCHEDULER,
    TRAINER_STATE,
    checkpoints_in,
    full_state,
    load_optimizer_state,
    load_weights,
    merged_policy,
    read_rng_state,
    read_tensors,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from llm_recipes.rl.ppo.core import (
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalty,
    masked_mean,
    missing_eos_penalty,
    token_rewards,
    whiten,
)
from llm_recipes.rl.ppo.launch import make_accelerator
from llm_recipes.rl.ppo.rollout import (
    PolicyAndValue,
    Prompt,
    RewardFunction,
    SampleBatch,
    SamplingSettings,
    evaluation_sums,
    is_peft_model,
    is_sharded,
    means_from_sums,
    register_forward_methods,
    sample_and_score,
)
from llm_recipes.runs.manifest import write_json_atomically
from llm_recipes.training.resume import rescale_learning_rate


def __getattr__(name: str) -> Any:
    """Names that moved to `ppo_rollout` (sampling, evaluation), `ppo_checkpoint` and `ppo_launch` stay importable
    from here."""
    for module in (ppo_rollout, ppo_checkpoint, ppo_launch):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class TrainingDiverged(UserError):
    """PPO stopped on a NaN or a KL blow-up; the message names the last good checkpoint."""


# --------------------------------------------------------------------------------------------------------------
# The trainer


@dataclass
class Rollout:
    batch: SampleBatch
    logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    stats: dict[str, torch.Tensor]


class PPOTrainer:
    """PPO on a causal LM policy with a learned value model.

    `config` is `llm_recipes.configs.PPOConfig`. `value_model` is a sequence classifier with one output (its head
    gives a value per token). `ref_model` is a frozen copy of the starting policy (prepared and, under FSDP2,
    sharded with the policy); leave it None for a PEFT policy (the adapter-disabled policy is then the
    reference). `reward_function` takes (prompts=, completions=) and returns one float per completion;
    `llm_recipes.rl.rewards.reward_model_function` makes one from a reward model.
    """

    def __init__(
        self,
        config: Any,
        policy: nn.Module,
        tokenizer: Any,
        *,
        value_model: nn.Module,
        reward_function: RewardFunction,
        train_prompts: Sequence[Prompt],
        eval_prompts: Sequence[Prompt] | None = None,
        ref_model: nn.Module | None = None,
        accelerator: Any | None = None,
    ):
        if not train_prompts:
            raise UserError("PPO needs training prompts, and there are none")
        if tokenizer.pad_token_id is None:
            raise UserError("the tokenizer has no pad token; set tokenizer.pad_token (e.g. to a reserved token)")
        if ref_model is None and not is_peft_model(policy):
            raise UserError("a reference model is needed: pass ref_model, or a PEFT (LoRA) policy")
        self.config = config
        self.accelerator = accelerator or make_accelerator(config)
        self.tokenizer = tokenizer
        self.reward_function = reward_function
        self.train_prompts = list(train_prompts)
        self.eval_prompts = list(eval_prompts or [])
        self.check_batch_sizes()

        for model in (policy, value_model, ref_model):
            if model is not None:
                disable_dropout_in_model(model)  # dropout would make the rollout's log-probs disagree with training
        if ref_model is not None:
            ref_model.requires_grad_(False).eval()
        wrapper = PolicyAndValue(policy, value_model, ref_model)
        if config.gradient_checkpointing:
            wrapper.gradient_checkpointing_enable()

        trainable = [p for p in wrapper.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay, eps=1e-5)
        self.model, self.optimizer = self.accelerator.prepare(wrapper, optimizer)
        register_forward_methods(self.model)
        self.sharded = is_sharded(self.model)
        if self.sharded:
            self.unwrapped.reshard_layers_after_forward = bool(self.accelerator.state.fsdp_plugin.reshard_after_forward)
            shared = "policy, value model" + (" and reference" if ref_model is not None else "")
            self.accelerator.print(f"[ppo] FSDP2: {shared} sharded over {self.num_processes} processes")
        self.scheduler = self.build_scheduler()
        self.learning_rate_factor = 1.0  # a rate changed on resume (resume_with_changes): new / restored
        self.kl_controller = (
            AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
            if config.adaptive_kl
            else FixedKLController(config.kl_coef)
        )
        self.settings = SamplingSettings(
            response_length=config.response_length,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            stop_at_eos=config.stop_at_eos,
            max_prompt_length=config.max_prompt_length,
            batch_size=config.rollout_forward_batch_size,
        )
        self.global_step = 0
        self._orders: dict[int, list[int]] = {}  # the prompt order of the current pass over the prompts
        self.log_history: list[dict[str, Any]] = []
        self.last_checkpoint: str | None = None
        # every process samples differently; DDP and FSDP already made the weights identical

        set_seed(config.seed, device_specific=True)

    # ---------------------------------------------------------------------------------------------- set-up

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def unwrapped(self) -> PolicyAndValue:
        return self.accelerator.unwrap_model(self.model)

    @property
    def policy(self) -> nn.Module:
        return self.unwrapped.policy

    @property
    def num_steps(self) -> int:
        if self.config.total_episodes:
            return math.ceil(self.config.total_episodes / (self.config.rollout_batch_size * self.num_processes))
        return self.config.num_ppo_steps

    def check_batch_sizes(self) -> None:
        config = self.config
        if config.rollout_batch_size % config.mini_batch_size:
            raise UserError(
                f"mini_batch_size ({config.mini_batch_size}) must divide rollout_batch_size "
                f"({config.rollout_batch_size})"
            )
        if config.mini_batch_size % config.gradient_accumulation_steps:
            raise UserError(
                f"gradient_accumulation_steps ({config.gradient_accumulation_steps}) must divide mini_batch_size "
                f"({config.mini_batch_size})"
            )

    def build_scheduler(self) -> Any:
        updates = (
            self.num_steps * self.config.ppo_epochs * (self.config.rollout_batch_size // self.config.mini_batch_size)
        )
        name = self.config.lr_scheduler_type
        if name == "constant" and self.config.warmup_steps:
            name = "constant_with_warmup"
        return get_scheduler(
            name, self.optimizer, num_warmup_steps=self.config.warmup_steps, num_training_steps=max(updates, 1)
        )

    def prompts_for_step(self, step: int) -> list[Prompt]:
        """This process's prompts for PPO step `step`: a slice of a stream of seeded shuffles of the training
        prompts, so a resumed run sees exactly the prompts the uninterrupted run would have."""
        per_process = self.config.rollout_batch_size
        start = (step * self.num_processes + self.accelerator.process_index) * per_process
        total = len(self.train_prompts)
        prompts = []
        for index in range(start, start + per_process):
            epoch, position = divmod(index, total)
            if epoch not in self._orders:
                generator = torch.Generator().manual_seed(self.config.seed + epoch)
                self._orders = {epoch: torch.randperm(total, generator=generator).tolist()}
            prompts.append(self.train_prompts[self._orders[epoch][position]])
        return prompts

    # ---------------------------------------------------------------------------------------------- rollout

    @torch.no_grad()
    def rollout(self, prompts: Sequence[Prompt]) -> Rollout:
        """Sample, score and evaluate one batch of episodes; compute its advantages and returns."""

        config, device = self.config, self.accelerator.device
        self.model.eval()
        with unwrap_model_for_generation(self.model, self.accelerator) as unwrapped, self.accelerator.autocast():
            batch = sample_and_score(unwrapped, self.tokenizer, prompts, self.reward_function, self.settings, device)
            context = batch.query_ids.shape[1]
            logprobs, ref_logprobs, values, entropies = [], [], [], []
            size = self.settings.batch_size
            for begin in range(0, len(prompts), size):
                rows = slice(begin, begin + size)
                inputs = (batch.query_responses[rows], batch.attention_mask[rows])
                logits, value = unwrapped(*inputs, context)
                logits = logits.float()
                logprobs.append(selective_log_softmax(logits, batch.response_ids[rows], config.temperature))
                entropies.append(entropy_from_logits(logits / config.temperature))
                values.append(value)
                ref_logits = unwrapped.logits(*inputs, context, reference=True).float()
                ref_logprobs.append(selective_log_softmax(ref_logits, batch.response_ids[rows], config.temperature))
        logprobs, ref_logprobs = torch.cat(logprobs), torch.cat(ref_logprobs)
        values, entropy = torch.cat(values).float(), torch.cat(entropies)
        mask = batch.response_mask

        scores = missing_eos_penalty(batch.scores, batch.contains_eos, config.missing_eos_penalty)
        kl = kl_penalty(logprobs, ref_logprobs, config.kl_estimator) * mask
        rewards = token_rewards(scores, kl, mask, self.kl_controller.value)
        if config.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = whiten(advantages, mask)
        sequence_kl_values = kl.sum(dim=1)
        stats = {
            "score": batch.scores.mean(),
            "rlhf_reward": (scores - self.kl_controller.value * sequence_kl_values).mean(),
            "kl": sequence_kl_values.mean(),
            "entropy": masked_mean(entropy, mask),
            "response_length": mask.sum(dim=1).float().mean(),
            "missing_eos": (~batch.contains_eos).float().mean(),
            "value_mean": masked_mean(values, mask),
            "advantage_rms": masked_mean(advantages**2, mask).sqrt(),
        }
        return Rollout(batch, logprobs, values * mask, advantages, returns, stats)

    # ---------------------------------------------------------------------------------------------- update

    def optimize(self, rollout: Rollout) -> dict[str, torch.Tensor]:
        """`ppo_epochs` passes of clipped PPO over the rollout in shuffled mini-batches; the mean stats."""

        config = self.config
        batch = rollout.batch
        context = batch.query_ids.shape[1]
        micro_size = config.mini_batch_size // config.gradient_accumulation_steps
        sums: dict[str, float] = {}
        count = 0
        grad_norms: list[float] = []
        self.model.train()
        for _ in range(config.ppo_epochs):
            order = torch.randperm(len(batch.prompts), device=batch.scores.device)
            for mini_begin in range(0, len(order), config.mini_batch_size):
                mini = order[mini_begin : mini_begin + config.mini_batch_size]
                for micro_index, micro_begin in enumerate(range(0, len(mini), micro_size)):
                    rows = mini[micro_begin : micro_begin + micro_size]
                    last_micro = micro_index == config.gradient_accumulation_steps - 1
                    sync = contextlib.nullcontext() if last_micro else self.accelerator.no_sync(self.model)
                    with sync:
                        mask = batch.response_mask[rows]
                        logits, values = self.model(batch.query_responses[rows], batch.attention_mask[rows], context)
                        logprobs = selective_log_softmax(logits.float(), batch.response_ids[rows], config.temperature)
                        policy = clipped_policy_loss(
                            logprobs, rollout.logprobs[rows], rollout.advantages[rows], mask, config.cliprange
                        )
                        value_loss, value_clip = clipped_value_loss(
                            values.float(), rollout.values[rows], rollout.returns[rows], mask, config.cliprange_value
                        )
                        loss = policy.loss + config.vf_coef * value_loss
                        self.accelerator.backward(loss / config.gradient_accumulation_steps)
                    for name, value in (
                        ("policy_loss", policy.loss),
                        ("value_loss", value_loss),
                        ("clipfrac", policy.clip_fraction),
                        ("value_clipfrac", value_clip),
                        ("approx_kl", policy.approx_kl),
                    ):
                        sums[name] = sums.get(name, 0.0) + float(value.detach())
                    count += 1
                grad_norm = self.accelerator.clip_grad_norm_(
                    self.model.parameters(), config.max_grad_norm or float("inf")
                )
                grad_norms.append(float(grad_norm))
                if not math.isfinite(grad_norms[-1]):  # the same on every process: DDP averaged the gradients
                    self.optimizer.zero_grad()
                    self.stop(f"the gradient norm is {grad_norms[-1]} (a NaN or Inf loss)")
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
        device = self.accelerator.device
        means = {name: torch.tensor(total / count, device=device) for name, total in sums.items()}
        means["grad_norm"] = torch.tensor(sum(grad_norms) / len(grad_norms), device=device)
        return means

    # ---------------------------------------------------------------------------------------------- the loop

    def train(self, resume_from_checkpoint: str | None = None, *, eval_before_training: bool = True) -> dict[str, Any]:
        """Run PPO to `num_steps` (continuing from a checkpoint when given) and evaluate the held-out prompts before
        (unless resuming or told not to) and after; returns the last step's stats."""
        config = self.config
        if resume_from_checkpoint:
            self.load_checkpoint(resume_from_checkpoint)
        elif eval_before_training and self.eval_prompts:
            self.log(self.evaluate())
        started = time.time()
        episodes_per_step = config.rollout_batch_size * self.num_processes
        last_stats: dict[str, Any] = {}
        # A checkpoint of step N's weights is written only once the next rollout has sampled from them and passed
        # the guards, so "the last good checkpoint" is one whose policy was seen to be sane.
        checkpoint_due = False
        while self.global_step < self.num_steps:
            step_started = time.time()
            random_state = rng_state()  # as step N left it: what a run resumed from checkpoint-N starts with
            rollout = self.rollout(self.prompts_for_step(self.global_step))
            rollout_stats = self.gather_means(rollout.stats)
            self.check_rollout(rollout_stats)
            if checkpoint_due:
                self.save_checkpoint(random_state)
                checkpoint_due = False
            rollout_seconds = time.time() - step_started
            update_stats = self.gather_means(self.optimize(rollout))
            self.check_update(update_stats)
            self.global_step += 1
            self.kl_controller.update(rollout_stats["kl"], episodes_per_step)

            stats = {
                **rollout_stats,
                **update_stats,
                "kl_coef": self.kl_controller.value,
                "learning_rate": self.scheduler.get_last_lr()[0],
                "episodes": self.global_step * episodes_per_step,
                "rollouts_per_second": episodes_per_step / max(rollout_seconds, 1e-9),
                "step_seconds": time.time() - step_started,
            }
            last_stats = stats
            if self.global_step % config.logging_steps == 0 or self.global_step == self.num_steps:
                self.log(stats)
            if config.sample_every and self.global_step % config.sample_every == 0:
                self.print_samples(rollout.batch)
            if self.eval_prompts and config.eval_steps and self.global_step % config.eval_steps == 0:
                self.log(self.checked(self.evaluate()))
            checkpoint_due = checkpoint_due or self.global_step % config.save_steps == 0
        # the last update has no rollout after it: the held-out evaluation (when there are prompts) vouches for it
        if self.eval_prompts and not self.evaluated_at(self.global_step):
            self.log(self.checked(self.evaluate()))
        if not (Path(config.output_dir) / f"checkpoint-{self.global_step}").is_dir():
            self.save_checkpoint(rng_state())
        return {**last_stats, "train_seconds": time.time() - started}

    def evaluated_at(self, step: int) -> bool:
        return any(entry.get("step") == step and "eval_score" in entry for entry in self.log_history)

    def gather_means(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        """Each stat averaged over processes (every process holds the same number of episodes)."""
        names = list(stats)
        local = torch.stack([stats[name].detach().float().reshape(()) for name in names]).to(self.accelerator.device)
        gathered = self.accelerator.gather(local.unsqueeze(0)).reshape(-1, len(names)).mean(dim=0)
        return dict(zip(names, gathered.tolist(), strict=True))

    # ---------------------------------------------------------------------------------------------- guards

    def check_rollout(self, stats: dict[str, float], source: str = "rollout") -> None:
        """Stop on a NaN or a KL above kl_stop in what the current policy sampled (a rollout, or the held-out
        evaluation after the last step)."""
        after_training = source != "rollout"
        for name in ("score", "kl", "value_mean"):
            if name in stats and not math.isfinite(stats[name]):
                self.stop(f"the {source}'s mean {name} is {stats[name]}", after_training)
        if self.config.kl_stop is not None and stats["kl"] > self.config.kl_stop:
            self.stop(
                f"the {source}'s KL to the reference is {stats['kl']:.3g} nats per response, above kl_stop "
                f"{self.config.kl_stop}",
                after_training,
            )

    def checked(self, eval_stats: dict[str, float]) -> dict[str, float]:
        """Held-out evaluation stats, after the same guards as a rollout's."""
        self.check_rollout({"score": eval_stats["eval_score"], "kl": eval_stats["eval_kl"]}, "held-out evaluation")
        return eval_stats

    def check_update(self, stats: dict[str, float]) -> None:
        for name in ("policy_loss", "value_loss"):
            if not math.isfinite(stats[name]):
                self.stop(f"the mean {name} is {stats[name]}")

    def stop(self, reason: str, after_step: bool = False) -> None:
        self.save_state()  # the curves up to the failure, for diagnosis
        where = (
            f"the last good checkpoint is {self.last_checkpoint}"
            if self.last_checkpoint
            else f"no checkpoint was written yet (save_steps: {self.config.save_steps})"
        )
        when = f"after step {self.global_step}" if after_step else f"at step {self.global_step + 1}"
        raise TrainingDiverged(
            f"PPO stopped {when}: {reason}; {where} -- lower learning_rate or raise kl_coef, then rerun to resume"
        )

    # ---------------------------------------------------------------------------------------------- evaluation, logs

    def evaluate(self, prompts: Sequence[Prompt] | None = None) -> dict[str, float]:
        """Mean score, KL, response length and missing-EOS share on held-out prompts (sampled with a fixed seed),
        over all processes."""

        prompts = list(self.eval_prompts if prompts is None else prompts)
        rank, world = self.accelerator.process_index, self.num_processes
        share = prompts[rank::world]
        counted = len(share)
        if self.sharded and prompts:  # every forward is a collective: each process runs as many as the busiest
            share += prompts[:1] * (math.ceil(len(prompts) / world) - counted)
        with unwrap_model_for_generation(self.model, self.accelerator) as unwrapped, self.accelerator.autocast():
            sums, _ = evaluation_sums(
                unwrapped,
                None,
                self.tokenizer,
                share,
                self.reward_function,
                self.settings,
                seed=self.config.seed + 1000 + rank,
                kl_estimator=self.config.kl_estimator,
                device=self.accelerator.device,
                counted=counted,
            )
        total = self.accelerator.reduce(sums, reduction="sum")
        return means_from_sums(total)

    def log(self, stats: dict[str, Any]) -> None:
        entry = {"step": self.global_step, **{k: round(v, 6) if isinstance(v, float) else v for k, v in stats.items()}}
        self.log_history.append(entry)
        if self.accelerator.is_main_process:
            shown = ("score", "kl", "entropy", "policy_loss", "value_loss", "clipfrac", "approx_kl", "response_length")
            if "eval_score" in stats:
                shown = ("eval_score", "eval_kl", "eval_response_length", "eval_missing_eos")
            parts = [f"{key} {entry[key]:.4g}" for key in shown if key in entry]
            print(f"[ppo] step {self.global_step}/{self.num_steps}  " + "  ".join(parts), flush=True)

    def print_samples(self, batch: SampleBatch) -> None:
        if not self.accelerator.is_main_process or not self.config.num_samples:
            return

        print(f"[ppo] samples at step {self.global_step}:")
        for prompt, text, score in list(zip(batch.prompts, batch.texts, batch.scores.tolist(), strict=True))[
            : self.config.num_samples
        ]:
            print(f"  score {score:+.3f} | {prompt_text(prompt)!r} -> {text!r}")

    def state(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step,
            "max_steps": self.num_steps,
            "log_history": self.log_history,
            "kl_controller": self.kl_controller.state_dict(),
            "episodes_per_step": self.config.rollout_batch_size * self.num_processes,
        }

    def save_state(self, output_dir: str | None = None) -> None:
        """trainer_state.json (with `log_history`, as `transformers.Trainer` writes it)."""

        if self.accelerator.is_main_process:
            write_json_atomically(Path(output_dir or self.config.output_dir) / TRAINER_STATE, self.state())

    # ---------------------------------------------------------------------------------------------- saving

    def save_model(self, output_dir: str | None = None) -> None:
        """The policy, loadable by `AutoModelForCausalLM`: full weights, or with a PEFT policy the base with the
        adapter merged in (`merge_adapter`, default) or the adapter alone. With the tokenizer. Sharded, the
        weights are gathered on the main process first."""
        output_dir = output_dir or self.config.output_dir
        policy = self.policy
        merge = is_peft_model(policy) and self.config.merge_adapter
        state = full_state(policy, trainable_only=not merge) if self.sharded else None
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            if merge:
                merged = merged_policy(policy, state) if state is not None else copy.deepcopy(policy).merge_and_unload()
                merged.save_pretrained(output_dir)
            else:
                policy.save_pretrained(output_dir, state_dict=state)
            self.tokenizer.save_pretrained(output_dir)
        self.accelerator.wait_for_everyone()

    def save_checkpoint(self, random_state: dict[str, Any] | None = None) -> str:
        """checkpoint-N/ (see `ppo_checkpoint`), with each process's random state `random_state` (default: now);
        the oldest checkpoints beyond `save_total_limit` are removed."""
        self.last_checkpoint = str(write_checkpoint(self, random_state or rng_state()))
        if self.accelerator.is_main_process and self.config.save_total_limit:
            for folder in checkpoints_in(self.config.output_dir)[: -self.config.save_total_limit]:
                shutil.rmtree(folder, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return self.last_checkpoint

    def load_checkpoint(self, checkpoint: str) -> None:
        """Continue where `checkpoint` stopped: weights, optimizer, scheduler (then a learning rate changed on
        resume, `learning_rate_factor`), KL coefficient, step, log history and this process's random state. Every
        file is read as data (`ppo_checkpoint`); the small ones first, so a refused file changes nothing."""
        folder = Path(checkpoint)
        state_path = folder / TRAINER_STATE
        if not state_path.is_file():
            raise UserError(f"resume_from_checkpoint: {checkpoint} is not a PPO checkpoint (no {TRAINER_STATE})")
        state = json.loads(state_path.read_text(encoding="utf-8"))
        random_state = read_rng_state(folder, self.accelerator.process_index)
        scheduler = read_tensors(folder / SCHEDULER)
        models = self.unwrapped
        load_weights(models.policy, folder / "policy")
        load_weights(models.value_model, folder / "value_model")
        load_optimizer_state(models, self.optimizer.optimizer, folder / OPTIMIZER, self.sharded)
        self.scheduler.load_state_dict(scheduler)
        if self.learning_rate_factor != 1.0:
            rescale_learning_rate(self.optimizer, self.scheduler, self.learning_rate_factor)
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.global_step = int(state["global_step"])
        self.log_history = list(state["log_history"])
        if random_state is not None:
            set_rng_state(random_state)
        self.last_checkpoint = str(folder)
        if self.accelerator.is_main_process:
            print(f"[ppo] resumed from {folder} at step {self.global_step}", flush=True)
