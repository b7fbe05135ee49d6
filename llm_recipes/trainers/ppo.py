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

The policy and the value model are separate models trained by one optimizer, wrapped in one module so DDP sees a
single model. The reference is a frozen copy of the starting policy, or -- with a PEFT (LoRA) policy -- the same
model with its adapter disabled. TRL utilities do what they already do: `selective_log_softmax`,
`entropy_from_logits`, `disable_dropout_in_model`, `unwrap_model_for_generation`. The mathematics is in
`ppo_core`, unit-tested on hand-computed values.

Multi-process: every process generates, scores and trains on its own prompts; gradients are averaged by DDP and
statistics by `gather`. Whitening is per process. Checkpoints hold full optimizer state and suit DDP or a single
device (not FSDP/DeepSpeed sharding).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llm_recipes.errors import UserError
from llm_recipes.trainers.ppo_core import (
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalty,
    masked_mean,
    missing_eos_penalty,
    token_rewards,
    truncate_at_eos,
    whiten,
)

Prompt = str | list[dict[str, str]]
RewardFunction = Callable[..., Sequence[float]]

TRAINER_STATE = "trainer_state.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


class TrainingDiverged(UserError):
    """PPO stopped on a NaN or a KL blow-up; the message names the last good checkpoint."""


# --------------------------------------------------------------------------------------------------------------
# Models: policy and value in one module, values from a sequence classifier's backbone


def is_peft_model(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def value_head_forward(
    value_model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
) -> torch.Tensor:
    """A value for every position, (batch, length): a sequence classifier's scalar head applied to every hidden
    state of its backbone instead of only the last one (a reward model reads the last; a value model needs all)."""
    model = value_model.get_base_model() if is_peft_model(value_model) else value_model
    backbone = getattr(model, model.base_model_prefix)
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    head = getattr(model, "score", None) or getattr(model, "classifier", None)
    if head is None:
        raise UserError(f"the value model ({type(model).__name__}) has no `score` head: use a decoder classifier")
    return head(hidden).squeeze(-1).float()


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as `generate` counts them with left padding."""
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def policy_logits(
    policy: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, context_length: int
) -> torch.Tensor:
    """The logits that predict each response token (positions context_length - 1 ... -2)."""
    output = policy(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_for(attention_mask),
        use_cache=False,
    )
    return output.logits[:, context_length - 1 : -1]


class PolicyAndValue(nn.Module):
    """The two trained models as one module: one `accelerator.prepare`, one DDP gradient sync."""

    def __init__(self, policy: nn.Module, value_model: nn.Module):
        super().__init__()
        self.policy = policy
        self.value_model = value_model

    # TRL's unwrap_model_for_generation switches gradient checkpointing off for generation and back on after
    @property
    def is_gradient_checkpointing(self) -> bool:
        for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # renamed in transformers 5
            if hasattr(type(self.policy), name) or hasattr(self.policy, name):
                return bool(getattr(self.policy, name))
        return False

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        # non-reentrant checkpointing also works when the inputs need no gradient (a frozen LoRA base)
        kwargs = gradient_checkpointing_kwargs or {"use_reentrant": False}
        for model in (self.policy, self.value_model):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def gradient_checkpointing_disable(self) -> None:
        for model in (self.policy, self.value_model):
            model.gradient_checkpointing_disable()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, context_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = policy_logits(self.policy, input_ids, attention_mask, context_length)
        values = value_head_forward(self.value_model, input_ids, attention_mask, position_ids_for(attention_mask))
        return logits, values[:, context_length - 1 : -1]


# --------------------------------------------------------------------------------------------------------------
# Sampling and scoring, shared by training rollouts and evaluation


def encode_prompts(
    tokenizer: Any, prompts: Sequence[Prompt], max_prompt_length: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as left-padded ids and attention mask: every prompt ends where its response begins. Message lists
    go through the chat template with the generation prompt; strings are continued as they are."""
    from llm_recipes.evaluation.generation import render_prompt

    encoded = []
    for prompt in prompts:
        text, templated = render_prompt(tokenizer, prompt)
        ids = tokenizer(text, add_special_tokens=not templated)["input_ids"][-max_prompt_length:]
        encoded.append(ids or [tokenizer.eos_token_id])
    width = max(len(ids) for ids in encoded)
    pad_id = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded], device=device)
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
    return input_ids, attention_mask


def stop_token_ids(policy: nn.Module, tokenizer: Any) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and those of the model's generation config (the SFT
    stage adds the end-of-turn token there)."""
    ids = [tokenizer.eos_token_id]
    generation_config = getattr(policy, "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    return sorted({i for i in ids if i is not None})


@dataclass
class SamplingSettings:
    response_length: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    stop_at_eos: bool = True
    max_prompt_length: int = 512
    batch_size: int = 32
    use_cache: bool = True  # the KV cache; off only to measure what it saves

    def generation_config(self, eos_ids: list[int], pad_id: int) -> Any:
        from transformers import GenerationConfig

        return GenerationConfig(
            max_new_tokens=self.response_length,
            do_sample=True,
            temperature=self.temperature,
            # 0, not None: a None is filled with transformers' global default (top-k 50), silently changing the
            # distribution the policy's log-probabilities describe
            top_k=self.top_k or 0,
            top_p=self.top_p,
            # [] rather than None: generate fills a None from the model's own config and would stop anyway
            eos_token_id=eos_ids if self.stop_at_eos else [],
            pad_token_id=pad_id,
            use_cache=self.use_cache,
        )


@torch.no_grad()
def sample_responses(
    policy: nn.Module,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    generation_config: Any,
    batch_size: int,
    pad_id: int,
) -> torch.Tensor:
    """Sampled response ids, (batch, response_length), right-padded with `pad_id` after a stop."""
    width = query_ids.shape[1]
    length = generation_config.max_new_tokens
    chunks = []
    for begin in range(0, len(query_ids), batch_size):
        output = policy.generate(
            input_ids=query_ids[begin : begin + batch_size],
            attention_mask=query_mask[begin : begin + batch_size],
            generation_config=generation_config,
        )
        responses = output[:, width:]
        if responses.shape[1] < length:  # every row stopped early
            padding = responses.new_full((responses.shape[0], length - responses.shape[1]), pad_id)
            responses = torch.cat([responses, padding], dim=1)
        chunks.append(responses)
    return torch.cat(chunks)


def completions_for(prompts: Sequence[Prompt], texts: Sequence[str]) -> list[Any]:
    """Completions as TRL reward functions receive them: text for text prompts, an assistant message for chats."""
    return [
        text if isinstance(prompt, str) else [{"role": "assistant", "content": text}]
        for prompt, text in zip(prompts, texts, strict=True)
    ]


def call_reward(reward_function: RewardFunction, prompts: Sequence[Prompt], texts: Sequence[str]) -> list[float]:
    scores = reward_function(prompts=list(prompts), completions=completions_for(prompts, texts))
    scores = [float("nan") if score is None else float(score) for score in scores]
    if len(scores) != len(prompts):
        raise UserError(f"the reward function returned {len(scores)} scores for {len(prompts)} completions")
    return scores


@torch.no_grad()
def response_logprobs(
    model: nn.Module,
    query_responses: torch.Tensor,
    attention_mask: torch.Tensor,
    context_length: int,
    response_ids: torch.Tensor,
    temperature: float,
    batch_size: int,
) -> torch.Tensor:
    """Log-probabilities of the response tokens under `model`, at the sampling temperature."""
    from trl.trainer.utils import selective_log_softmax

    chunks = []
    for begin in range(0, len(query_responses), batch_size):
        rows = slice(begin, begin + batch_size)
        logits = policy_logits(model, query_responses[rows], attention_mask[rows], context_length)
        chunks.append(selective_log_softmax(logits.float(), response_ids[rows], temperature=temperature))
    return torch.cat(chunks)


@contextlib.contextmanager
def reference_policy(policy: nn.Module, ref_model: nn.Module | None):
    """The reference model: the frozen copy, or a PEFT policy with its adapter switched off."""
    if ref_model is not None:
        yield ref_model
    elif is_peft_model(policy):
        with policy.disable_adapter():
            yield policy
    else:
        raise UserError("a reference model is needed: pass ref_model, or a PEFT (LoRA) policy")


@dataclass
class SampleBatch:
    """Prompts with sampled responses, scored: what a rollout and an evaluation share."""

    prompts: list[Prompt]
    texts: list[str]
    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor  # truncated after the first EOS, padded
    response_mask: torch.Tensor
    contains_eos: torch.Tensor
    scores: torch.Tensor  # the reward as returned, before the missing-EOS penalty

    @property
    def query_responses(self) -> torch.Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)


@torch.no_grad()
def sample_and_score(
    policy: nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    reward_function: RewardFunction,
    settings: SamplingSettings,
    device: torch.device,
) -> SampleBatch:
    """Sample one response per prompt (batched, KV cache on), cut it at EOS, decode it and score it."""
    pad_id = tokenizer.pad_token_id
    eos_ids = stop_token_ids(policy, tokenizer)
    query_ids, query_mask = encode_prompts(tokenizer, prompts, settings.max_prompt_length, device)
    generation_config = settings.generation_config(eos_ids, pad_id)
    responses = sample_responses(policy, query_ids, query_mask, generation_config, settings.batch_size, pad_id)
    if settings.stop_at_eos:
        cut = truncate_at_eos(responses, eos_ids, pad_id)
        response_ids, response_mask, contains_eos = cut.ids, cut.mask, cut.contains_eos
    else:
        response_ids, response_mask = responses, torch.ones_like(responses)
        contains_eos = torch.isin(responses, torch.tensor(eos_ids, device=device)).any(dim=1)
    width = max(int(response_mask.sum(dim=1).max()), 1)  # drop columns that are padding in every row
    response_ids, response_mask = response_ids[:, :width], response_mask[:, :width]
    texts = tokenizer.batch_decode(response_ids.masked_fill(response_mask == 0, pad_id), skip_special_tokens=True)
    scores = torch.tensor(call_reward(reward_function, prompts, texts), device=device, dtype=torch.float32)
    return SampleBatch(
        prompts=list(prompts),
        texts=texts,
        query_ids=query_ids,
        query_mask=query_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        contains_eos=contains_eos,
        scores=scores,
    )


@torch.no_grad()
def sequence_kl(
    policy: nn.Module, ref_model: nn.Module | None, batch: SampleBatch, settings: SamplingSettings, estimator: str
) -> torch.Tensor:
    """KL(policy || reference) of each sampled response: the per-token estimates summed over its tokens."""
    args = (batch.query_responses, batch.attention_mask, batch.query_ids.shape[1], batch.response_ids)
    logprobs = response_logprobs(policy, *args, settings.temperature, settings.batch_size)
    with reference_policy(policy, ref_model) as reference:
        ref_logprobs = response_logprobs(reference, *args, settings.temperature, settings.batch_size)
    return (kl_penalty(logprobs, ref_logprobs, estimator) * batch.response_mask).sum(dim=1)


def evaluation_sums(
    policy: nn.Module,
    ref_model: nn.Module | None,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    reward_function: RewardFunction,
    settings: SamplingSettings,
    *,
    seed: int,
    kl_estimator: str = "k1",
    device: torch.device | None = None,
) -> tuple[torch.Tensor, SampleBatch | None]:
    """(sums of score, KL, response length and missing EOS, and the count, as one tensor; the samples). Sampling
    is seeded and leaves the caller's random state alone, so evaluations compare like with like."""
    device = device or next(policy.parameters()).device
    if not prompts:
        return torch.zeros(5, device=device), None
    was_training = policy.training
    policy.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        batch = sample_and_score(policy, tokenizer, prompts, reward_function, settings, device)
        kl = sequence_kl(policy, ref_model, batch, settings, kl_estimator)
    policy.train(was_training)
    sums = torch.stack(
        [
            batch.scores.sum(),
            kl.sum(),
            batch.response_mask.sum().float(),
            (~batch.contains_eos).sum().float(),
            torch.tensor(float(len(prompts)), device=device),
        ]
    )
    return sums, batch


def means_from_sums(sums: torch.Tensor, prefix: str = "eval_") -> dict[str, float]:
    count = max(float(sums[4]), 1.0)
    names = ("score", "kl", "response_length", "missing_eos")
    return {f"{prefix}{name}": float(value) / count for name, value in zip(names, sums[:4].tolist(), strict=True)}


def evaluate_policy(
    policy: nn.Module,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    reward_function: RewardFunction,
    *,
    ref_model: nn.Module | None = None,
    response_length: int = 64,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    stop_at_eos: bool = True,
    batch_size: int = 32,
    seed: int = 0,
    kl_estimator: str = "k1",
) -> dict[str, float]:
    """Mean reward, KL to the reference (nats per response), response length and missing-EOS share of a policy's
    sampled answers to `prompts` -- the same measurement for any RL or preference method's output."""
    settings = SamplingSettings(response_length, temperature, top_k, top_p, stop_at_eos, batch_size=batch_size)
    sums, _ = evaluation_sums(
        policy, ref_model, tokenizer, prompts, reward_function, settings, seed=seed, kl_estimator=kl_estimator
    )
    return means_from_sums(sums, prefix="")


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


def make_accelerator(config: Any) -> Any:
    """The Accelerator of a PPO run (CPU or not, bf16 or not). A Trainer that ran earlier in this process (a
    pipeline, a notebook) may have fixed other settings in accelerate's process-wide state; they are reset first,
    as `transformers.TrainingArguments` does, keeping the process group."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(cpu=config.use_cpu, mixed_precision="bf16" if config.bf16 else "no")


class PPOTrainer:
    """PPO on a causal LM policy with a learned value model.

    `config` is `llm_recipes.configs.PPOConfig`. `value_model` is a sequence classifier with one output (its head
    gives a value per token). `ref_model` is a frozen copy of the starting policy; leave it None for a PEFT policy
    (the adapter-disabled policy is then the reference). `reward_function` takes (prompts=, completions=) and
    returns one float per completion; `llm_recipes.rewards.reward_model_function` makes one from a reward model.
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
        from trl.trainer.utils import disable_dropout_in_model

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
        wrapper = PolicyAndValue(policy, value_model)
        if config.gradient_checkpointing:
            wrapper.gradient_checkpointing_enable()
        if ref_model is not None:
            ref_model.requires_grad_(False).eval().to(self.accelerator.device)
        self.ref_model = ref_model

        trainable = [p for p in wrapper.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay, eps=1e-5)
        self.model, self.optimizer = self.accelerator.prepare(wrapper, optimizer)
        self.scheduler = self.build_scheduler()
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
        # every process samples differently; DDP already made the weights identical
        from accelerate.utils import set_seed

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
        from transformers import get_scheduler

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
        from trl.models.utils import unwrap_model_for_generation
        from trl.trainer.utils import entropy_from_logits, selective_log_softmax

        config, device = self.config, self.accelerator.device
        self.model.eval()
        with unwrap_model_for_generation(self.model, self.accelerator) as unwrapped, self.accelerator.autocast():
            batch = sample_and_score(
                unwrapped.policy, self.tokenizer, prompts, self.reward_function, self.settings, device
            )
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
                with reference_policy(unwrapped.policy, self.ref_model) as reference:
                    ref_logits = policy_logits(reference, *inputs, context).float()
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
        from trl.trainer.utils import selective_log_softmax

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
        from trl.models.utils import unwrap_model_for_generation

        with unwrap_model_for_generation(self.model, self.accelerator) as unwrapped, self.accelerator.autocast():
            sums, _ = evaluation_sums(
                unwrapped.policy,
                self.ref_model,
                self.tokenizer,
                prompts[rank::world],
                self.reward_function,
                self.settings,
                seed=self.config.seed + 1000 + rank,
                kl_estimator=self.config.kl_estimator,
                device=self.accelerator.device,
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
        from llm_recipes.evaluation.generation import prompt_text

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
        from llm_recipes.manifest import write_json_atomically

        if self.accelerator.is_main_process:
            write_json_atomically(Path(output_dir or self.config.output_dir) / TRAINER_STATE, self.state())

    # ---------------------------------------------------------------------------------------------- saving

    def save_model(self, output_dir: str | None = None) -> None:
        """The policy, loadable by `AutoModelForCausalLM`: full weights, or with a PEFT policy the base with the
        adapter merged in (`merge_adapter`, default) or the adapter alone. With the tokenizer."""
        output_dir = output_dir or self.config.output_dir
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            policy = self.policy
            if is_peft_model(policy) and self.config.merge_adapter:
                policy = copy.deepcopy(policy).merge_and_unload()
            policy.save_pretrained(output_dir)
            self.tokenizer.save_pretrained(output_dir)
        self.accelerator.wait_for_everyone()

    def save_checkpoint(self, random_state: dict[str, Any] | None = None) -> str:
        """checkpoint-N/: policy/ and value_model/ (save_pretrained), optimizer, scheduler, each process's RNG
        (`random_state`, default: now) and trainer_state.json. Written under a temporary name, renamed when
        complete."""
        name = f"checkpoint-{self.global_step}"
        final = Path(self.config.output_dir) / name
        partial = Path(self.config.output_dir) / f".{name}.partial"
        accelerator = self.accelerator
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        accelerator.wait_for_everyone()
        torch.save(random_state or rng_state(), partial / f"rng_state_{accelerator.process_index}.pt")
        if accelerator.is_main_process:
            self.unwrapped.policy.save_pretrained(partial / "policy")
            self.tokenizer.save_pretrained(partial / "policy")
            self.unwrapped.value_model.save_pretrained(partial / "value_model")
            torch.save(self.optimizer.state_dict(), partial / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), partial / "scheduler.pt")
            self.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
            self.rotate_checkpoints()
        accelerator.wait_for_everyone()
        self.last_checkpoint = str(final)
        return str(final)

    def rotate_checkpoints(self) -> None:
        limit = self.config.save_total_limit
        if not limit:
            return
        for folder in checkpoints_in(self.config.output_dir)[:-limit]:
            shutil.rmtree(folder, ignore_errors=True)

    def load_checkpoint(self, checkpoint: str) -> None:
        """Continue where `checkpoint` stopped: weights, optimizer, scheduler, KL coefficient, step, log history
        and this process's random state."""
        folder = Path(checkpoint)
        state_path = folder / TRAINER_STATE
        if not state_path.is_file():
            raise UserError(f"resume_from_checkpoint: {checkpoint} is not a PPO checkpoint (no {TRAINER_STATE})")
        state = json.loads(state_path.read_text(encoding="utf-8"))
        load_weights(self.unwrapped.policy, folder / "policy")
        load_weights(self.unwrapped.value_model, folder / "value_model")
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.global_step = int(state["global_step"])
        self.log_history = list(state["log_history"])
        rng_path = folder / f"rng_state_{self.accelerator.process_index}.pt"
        if rng_path.is_file():
            set_rng_state(torch.load(rng_path, weights_only=False))
        self.last_checkpoint = str(folder)
        if self.accelerator.is_main_process:
            print(f"[ppo] resumed from {folder} at step {self.global_step}", flush=True)


def checkpoints_in(output_dir: str | Path) -> list[Path]:
    """The complete checkpoint-N folders of a run, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))]
    return [path for _, path in sorted(found)]


def load_weights(model: nn.Module, folder: Path) -> None:
    """Load what `save_pretrained` wrote into an existing model: an adapter into a PEFT model, else the full
    weights (shards included; tied weights follow the tensor they share)."""
    from safetensors.torch import load_file

    if is_peft_model(model):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        return
    index = folder / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    )
    unexpected: list[str] = []
    for name in files:
        result = model.load_state_dict(load_file(folder / name), strict=False)
        unexpected += result.unexpected_keys
    if unexpected:
        raise UserError(f"checkpoint {folder} does not fit the model: unexpected weights {unexpected[:3]}")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
