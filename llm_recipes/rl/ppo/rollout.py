"""PPO's models and sampling: the policy, value model and reference as one module, and the rollout's building
blocks (prompts -> sampled responses -> scores -> log-probabilities), shared by training and evaluation.

`PolicyAndValue` holds the models one `accelerator.prepare` sees: the policy and the value model (trained, by one
optimizer) and the frozen reference when it is a copy (with a PEFT policy the reference is the policy with its
adapter disabled). Every pass goes through a method of that one module -- `forward` (training), `generate` and
`logits` -- because under FSDP2 only a module's registered forward methods gather its sharded weights
(`register_fsdp_forward_method`); a plain model (DDP, one device) runs them as they are.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method
from transformers import GenerationConfig
from trl.trainer.utils import selective_log_softmax

from llm_recipes.errors import UserError
from llm_recipes.evaluation.generation import render_prompt
from llm_recipes.rl.ppo.core import kl_penalty, truncate_at_eos

Prompt = str | list[dict[str, str]]
RewardFunction = Callable[..., Sequence[float]]


def is_peft_model(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def is_sharded(model: nn.Module) -> bool:
    """Whether FSDP2 has sharded `model` (`fully_shard` turns its class into an `FSDPModule`)."""

    return isinstance(model, FSDPModule)


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
    """The models of a PPO run as one module: one `accelerator.prepare`, one DDP gradient sync or one FSDP2
    sharding. `value_model` may be None (sampling and evaluation only); `ref_model` is None with a PEFT policy."""

    def __init__(self, policy: nn.Module, value_model: nn.Module | None = None, ref_model: nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.ref_model = ref_model
        # accelerate's FSDP2 auto-wrap gives every class named here (the decoder layers) its own shard unit
        self._no_split_modules = sorted(
            {
                name
                for model in (policy, value_model, ref_model)
                if model is not None
                for name in (getattr(model, "_no_split_modules", None) or [])
            }
        )
        self.reshard_layers_after_forward = True  # FSDP2's setting for the decoder layers, restored after generate

    def train(self, mode: bool = True) -> PolicyAndValue:
        super().train(mode)
        if self.ref_model is not None:
            self.ref_model.eval()
        return self

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
        for model in self.trained_models:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def gradient_checkpointing_disable(self) -> None:
        for model in self.trained_models:
            model.gradient_checkpointing_disable()

    @property
    def trained_models(self) -> list[nn.Module]:
        return [model for model in (self.policy, self.value_model) if model is not None]

    @property
    def generation_config(self) -> Any:
        return getattr(self.policy, "generation_config", None)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, context_length: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy logits and values of the response positions (the training pass)."""
        logits = policy_logits(self.policy, input_ids, attention_mask, context_length)
        values = value_head_forward(self.value_model, input_ids, attention_mask, position_ids_for(attention_mask))
        return logits, values[:, context_length - 1 : -1]

    def logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, context_length: int, reference: bool = False
    ) -> torch.Tensor:
        """Logits of the policy, or of the reference: the frozen copy, or the PEFT policy with its adapter off."""
        if not reference:
            return policy_logits(self.policy, input_ids, attention_mask, context_length)
        if self.ref_model is not None:
            return policy_logits(self.ref_model, input_ids, attention_mask, context_length)
        if is_peft_model(self.policy):
            with self.policy.disable_adapter():
                return policy_logits(self.policy, input_ids, attention_mask, context_length)
        raise UserError("a reference model is needed: pass ref_model, or a PEFT (LoRA) policy")

    def generate(self, **kwargs: Any) -> torch.Tensor:
        """The policy's `generate`. Sharded (FSDP2), every forward is a collective: the processes generate in step
        (`synced_gpus`, until the last one is done), and the policy's layers stay gathered from the first new token
        to the last instead of being gathered again for each one."""
        if not is_sharded(self):
            return self.policy.generate(**kwargs)
        layers = [module for module in self.policy.modules() if is_sharded(module)]
        for layer in layers:
            layer.set_reshard_after_forward(False, recurse=False)
        try:
            return self.policy.generate(synced_gpus=True, **kwargs)
        finally:
            for layer in layers:
                layer.reshard()
                layer.set_reshard_after_forward(self.reshard_layers_after_forward, recurse=False)


def as_models(policy: nn.Module, ref_model: nn.Module | None = None) -> PolicyAndValue:
    """`policy` as the sampling code expects it: a PolicyAndValue already, or a plain model wrapped in one."""
    if isinstance(policy, PolicyAndValue):
        return policy
    return PolicyAndValue(policy, None, ref_model)


def register_forward_methods(model: nn.Module) -> None:
    """Under FSDP2, `generate` and `logits` gather the weights as `forward` does (a no-op on other models)."""

    for name in ("generate", "logits"):
        register_fsdp_forward_method(model, name)
    if is_sharded(model):
        # the response positions are slices (views) of the logits and values; nothing modifies them in place, which
        # is what FSDP2 warns about on every view a sharded module returns
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPPolicyAndValue\) returned a view")


# --------------------------------------------------------------------------------------------------------------
# Sampling and scoring, shared by training rollouts and evaluation


def encode_prompts(
    tokenizer: Any, prompts: Sequence[Prompt], max_prompt_length: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as left-padded ids and attention mask: every prompt ends where its response begins. Message lists
    go through the chat template with the generation prompt; strings are continued as they are."""

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
    models: PolicyAndValue,
    query_responses: torch.Tensor,
    attention_mask: torch.Tensor,
    context_length: int,
    response_ids: torch.Tensor,
    temperature: float,
    batch_size: int,
    reference: bool = False,
) -> torch.Tensor:
    """Log-probabilities of the response tokens under the policy (or the reference), at the sampling temperature."""

    chunks = []
    for begin in range(0, len(query_responses), batch_size):
        rows = slice(begin, begin + batch_size)
        logits = models.logits(query_responses[rows], attention_mask[rows], context_length, reference=reference)
        chunks.append(selective_log_softmax(logits.float(), response_ids[rows], temperature=temperature))
    return torch.cat(chunks)


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
    """Sample one response per prompt (batched, KV cache on), cut it at EOS, decode it and score it. `policy` is
    a causal LM or a PolicyAndValue."""
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
def sequence_kl(models: PolicyAndValue, batch: SampleBatch, settings: SamplingSettings, estimator: str) -> torch.Tensor:
    """KL(policy || reference) of each sampled response: the per-token estimates summed over its tokens."""
    args = (batch.query_responses, batch.attention_mask, batch.query_ids.shape[1], batch.response_ids)
    logprobs = response_logprobs(models, *args, settings.temperature, settings.batch_size)
    ref_logprobs = response_logprobs(models, *args, settings.temperature, settings.batch_size, reference=True)
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
    counted: int | None = None,
) -> tuple[torch.Tensor, SampleBatch | None]:
    """(sums of score, KL, response length and missing EOS, and the count, as one tensor; the samples). Sampling
    is seeded and leaves the caller's random state alone, so evaluations compare like with like. `policy` is a
    causal LM (with `ref_model`, or a PEFT policy) or a PolicyAndValue; only the first `counted` prompts count
    (default: all; the rest pad a process's share so that sharded processes run the same passes)."""
    models = as_models(policy, ref_model)
    device = device or next(models.parameters()).device
    counted = len(prompts) if counted is None else counted
    if not prompts:
        return torch.zeros(5, device=device), None
    was_training = models.training
    models.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        batch = sample_and_score(models, tokenizer, prompts, reward_function, settings, device)
        kl = sequence_kl(models, batch, settings, kl_estimator)
    models.train(was_training)
    rows = slice(0, counted)
    sums = torch.stack(
        [
            batch.scores[rows].sum(),
            kl[rows].sum(),
            batch.response_mask[rows].sum().float(),
            (~batch.contains_eos[rows]).sum().float(),
            torch.tensor(float(counted), device=device),
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
