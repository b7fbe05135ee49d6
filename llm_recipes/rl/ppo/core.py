"""The mathematics of RLHF PPO as small pure tensor functions, each one unit-tested against hand-computed values.

TRL 1.x dropped its PPO trainer, so `llm_recipes.rl.ppo.trainer` owns the loop; this module holds what the loop
computes, kept free of models and processes so every formula can be checked on a few numbers by hand:

* `truncate_at_eos` / `missing_eos_penalty`: a response ends at its first EOS; one that never ends is penalised.
* `kl_penalty`: the per-token KL to the reference policy (k1 = log-ratio, k3 = Schulman's low-variance estimator).
* `FixedKLController` / `AdaptiveKLController`: the KL coefficient (Ziegler et al. 2019's proportional controller).
* `token_rewards`: -kl_coef * KL on every response token plus the sequence score on the last one.
* `gae`: generalised advantage estimation over the response tokens (Schulman et al. 2016).
* `whiten`: masked normalisation of rewards or advantages.
* `clipped_policy_loss` / `clipped_value_loss`: the PPO surrogate objectives (Schulman et al. 2017), with the
  clip fraction and approximate KL that say how far an update moved the policy.

Tensors are (batch, response_length); `mask` is 1 on real response tokens (the EOS included) and 0 on padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

KL_ESTIMATORS = ("k1", "k3")


# --------------------------------------------------------------------------------------------------------------
# Masked statistics


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is 1 (over all elements, or along `dim`)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `values` where `mask` is 1; unbiased (Bessel-corrected) by default."""
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    count = mask.sum()
    if unbiased and count > 1:
        variance = variance * count / (count - 1)
    return variance


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise `values` to unit variance over the masked elements; to zero mean too unless `shift_mean` is
    False (rewards keep their mean, so a uniformly good batch still reads as good). Padding comes back as 0."""
    mean, variance = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


# --------------------------------------------------------------------------------------------------------------
# Responses: EOS truncation and the missing-EOS penalty


@dataclass
class TruncatedResponses:
    ids: torch.Tensor  # (batch, length): tokens after the first EOS replaced by the pad id
    mask: torch.Tensor  # (batch, length): 1 up to and including the first EOS
    lengths: torch.Tensor  # (batch,): tokens kept per response
    contains_eos: torch.Tensor  # (batch,): bool, whether the response ended by itself


def truncate_at_eos(responses: torch.Tensor, eos_ids: Sequence[int] | int, pad_id: int) -> TruncatedResponses:
    """Cut each response after its first EOS (any of `eos_ids`); the EOS itself stays, it is the action that ends
    the episode and the one that receives the score."""
    eos = torch.tensor([eos_ids] if isinstance(eos_ids, int) else list(eos_ids), device=responses.device)
    is_eos = torch.isin(responses, eos)
    contains_eos = is_eos.any(dim=1)
    # argmax returns the first of equal maxima: the first EOS. (TRL's equivalent now lives in trl.experimental,
    # whose API may change between releases; this one line is not worth the dependency.)
    first_eos = is_eos.int().argmax(dim=1)
    lengths = torch.where(contains_eos, first_eos + 1, torch.full_like(first_eos, responses.shape[1]))
    positions = torch.arange(responses.shape[1], device=responses.device).unsqueeze(0)
    mask = (positions < lengths.unsqueeze(1)).long()
    ids = responses.masked_fill(mask == 0, pad_id)
    return TruncatedResponses(ids=ids, mask=mask, lengths=lengths, contains_eos=contains_eos)


def missing_eos_penalty(scores: torch.Tensor, contains_eos: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """Scores with `penalty` subtracted where the response hit the length limit without an EOS; a response that
    never ends would otherwise be judged on a cut-off text and learn to ramble."""
    if not penalty:
        return scores
    return scores - penalty * (~contains_eos.bool()).to(scores.dtype)


# --------------------------------------------------------------------------------------------------------------
# KL to the reference policy


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probabilities.

    k1 = log p - log q: unbiased, but a single token can be negative. k3 = (q/p - 1) - log(q/p): unbiased too,
    never negative and of lower variance (http://joschu.net/blog/kl-approx.html).
    """
    log_ratio = ref_logprobs - logprobs  # log(q/p)
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator '{estimator}'; choose from {', '.join(KL_ESTIMATORS)}")


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing changes; here so both controllers are driven the same way."""

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    """Steers the KL coefficient so the measured KL tracks `target` (Ziegler et al. 2019, section 2.2):
    coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon, where n_steps is episodes since the last
    update. Too much KL raises the penalty, too little lowers it."""

    def __init__(self, kl_coef: float, target: float, horizon: float):
        super().__init__(kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon


# --------------------------------------------------------------------------------------------------------------
# Rewards and advantages


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """The reward of every response token: -kl_coef * KL everywhere, plus the sequence's score on its last real
    token (the EOS, or the last token before the length limit)."""
    mask = mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns, (advantages, returns), both (batch, length).

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, where the value after the
    last real token is 0 (the episode is over) and padding contributes nothing. returns = A + V is the value
    target.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    length = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
    returns = advantages + values
    return advantages, returns * mask


# --------------------------------------------------------------------------------------------------------------
# Losses


@dataclass
class PolicyLoss:
    loss: torch.Tensor  # the clipped surrogate to minimise
    clip_fraction: torch.Tensor  # share of tokens where the clipped term was the one used
    approx_kl: torch.Tensor  # 0.5 * mean((log p_new - log p_old)^2): how far this update moved the policy


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float = 0.2,
) -> PolicyLoss:
    """PPO's clipped surrogate: mean over tokens of max(-A * r, -A * clip(r, 1 - eps, 1 + eps)),
    r = exp(log p_new - log p_old). The max is the pessimistic bound: no gain from moving r outside 1 +- eps."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
    approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    return PolicyLoss(loss=loss, clip_fraction=clip_fraction.detach(), approx_kl=approx_kl.detach())


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(0.5 * mean of max((V - R)^2, (V_clipped - R)^2), clip fraction), where V_clipped stays within
    +-cliprange_value of the value at rollout time, so one batch cannot drag the value function far."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    clip_fraction = masked_mean((clipped_loss > unclipped_loss).to(values.dtype), mask)
    return loss, clip_fraction.detach()
