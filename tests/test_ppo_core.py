"""PPO mathematics against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from llm_recipes.rl.ppo.core import (
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalty,
    masked_mean,
    masked_var,
    missing_eos_penalty,
    token_rewards,
    truncate_at_eos,
    whiten,
)


def close(actual: torch.Tensor, expected: list | float, tol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=tol, rtol=0)


# ---------------------------------------------------------------------------------------------- GAE


def test_gae_matches_hand_computation_without_discount():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.5)
    # t=2: delta = 1 + 0 - 0.7 = 0.3                       A2 = 0.3
    # t=1: delta = 0 + 0.7 - 0.6 = 0.1                     A1 = 0.1 + 0.5 * 0.3  = 0.25
    # t=0: delta = 0 + 0.6 - 0.5 = 0.1                     A0 = 0.1 + 0.5 * 0.25 = 0.225
    close(advantages, [[0.225, 0.25, 0.3]])
    close(returns, [[0.725, 0.85, 1.0]])


def test_gae_discounts_and_ignores_padding():
    rewards = torch.tensor([[0.5, 2.0, 9.0]])
    values = torch.tensor([[1.0, 1.0, 9.0]])  # the 9s sit on padding: they must not leak in
    mask = torch.tensor([[1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # t=1 (last real token; the value after it is 0): delta = 2 - 1 = 1          A1 = 1
    # t=0: delta = 0.5 + 0.9 * 1 - 1 = 0.4                                       A0 = 0.4 + 0.9 * 0.8 * 1 = 1.12
    close(advantages, [[1.12, 1.0, 0.0]])
    close(returns, [[2.12, 2.0, 0.0]])


def test_gae_rows_are_independent():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [1.0, 1.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, _ = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    alone, _ = gae(rewards[1:], values[1:], mask[1:], gamma=1.0, lam=0.5)
    close(advantages[0], [0.225, 0.25, 0.3])
    torch.testing.assert_close(advantages[1:], alone)


# ---------------------------------------------------------------------------------------------- whitening


def test_masked_statistics():
    values = torch.tensor([2.0, 4.0, 6.0, 100.0])
    mask = torch.tensor([1, 1, 1, 0])
    close(masked_mean(values, mask), 4.0)
    # squared deviations 4, 0, 4: biased variance 8/3, unbiased 8/2 = 4
    close(masked_var(values, mask, unbiased=False), 8 / 3)
    close(masked_var(values, mask), 4.0)


def test_whiten_uses_only_masked_values():
    values = torch.tensor([[2.0, 4.0], [6.0, 100.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    # mean 4, unbiased std 2: (x - 4) / 2; padding comes back as 0
    close(whiten(values, mask), [[-1.0, 0.0], [1.0, 0.0]], tol=1e-4)
    # shift_mean=False keeps the mean: (x - 4) / 2 + 4
    close(whiten(values, mask, shift_mean=False), [[3.0, 4.0], [5.0, 0.0]], tol=1e-4)


# ---------------------------------------------------------------------------------------------- KL


def test_kl_estimators():
    logprobs = torch.tensor([-1.0, -2.0])
    ref_logprobs = torch.tensor([-1.5, -1.0])
    # k1 = log p - log q
    close(kl_penalty(logprobs, ref_logprobs, "k1"), [0.5, -1.0])
    # k3 = (q/p - 1) - log(q/p), log(q/p) = -0.5 and 1.0
    close(kl_penalty(logprobs, ref_logprobs, "k3"), [math.exp(-0.5) - 1 + 0.5, math.e - 1 - 1.0])
    assert (kl_penalty(logprobs, ref_logprobs, "k3") >= 0).all()
    close(kl_penalty(logprobs, logprobs, "k3"), [0.0, 0.0])
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_penalty(logprobs, ref_logprobs, "k2")


def test_kl_estimators_are_unbiased():
    # sampled from p = softmax([2, 0, -1]) against q = uniform, both estimators average to KL(p || q)
    p = torch.softmax(torch.tensor([2.0, 0.0, -1.0]), dim=0)
    q = torch.full((3,), 1 / 3)
    exact = float((p * (p / q).log()).sum())
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, logq = p.log()[samples], q.log()[samples]
    for estimator in ("k1", "k3"):
        assert abs(float(kl_penalty(logp, logq, estimator).mean()) - exact) < 0.01


def test_kl_controllers():
    fixed = FixedKLController(0.1)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.1
    adaptive = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    adaptive.update(9.0, 1000)  # error clip(9/6 - 1, +-0.2) = 0.2: coef *= 1 + 0.2 * 1000/10000 = 1.02
    assert adaptive.value == pytest.approx(0.102)
    adaptive.update(5.4, 1000)  # error 5.4/6 - 1 = -0.1: coef *= 0.99
    assert adaptive.value == pytest.approx(0.102 * 0.99)
    restored = AdaptiveKLController(0.5, target=6.0, horizon=10_000)
    restored.load_state_dict(adaptive.state_dict())
    assert restored.value == adaptive.value


# ---------------------------------------------------------------------------------------------- rewards


def test_token_rewards_put_the_score_on_the_last_real_token():
    scores = torch.tensor([1.0, 2.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # -0.5 * kl everywhere real, + score at the last real token
    close(token_rewards(scores, kl, mask, kl_coef=0.5), [[-0.05, -0.1, 0.85], [-0.2, 1.75, 0.0]])


def test_truncate_at_eos_keeps_the_eos_and_pads_after_it():
    responses = torch.tensor([[5, 0, 7, 0], [5, 6, 7, 8], [0, 9, 9, 9]])
    cut = truncate_at_eos(responses, eos_ids=0, pad_id=1)
    assert cut.ids.tolist() == [[5, 0, 1, 1], [5, 6, 7, 8], [0, 1, 1, 1]]
    assert cut.mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert cut.lengths.tolist() == [2, 4, 1]
    assert cut.contains_eos.tolist() == [True, False, True]


def test_truncate_at_the_first_of_several_stop_tokens():
    responses = torch.tensor([[5, 3, 0, 7], [5, 6, 7, 8]])
    cut = truncate_at_eos(responses, eos_ids=[0, 3], pad_id=1)
    assert cut.ids.tolist() == [[5, 3, 1, 1], [5, 6, 7, 8]]
    assert cut.contains_eos.tolist() == [True, False]


def test_missing_eos_penalty():
    scores = torch.tensor([1.0, 1.0, 0.5])
    contains_eos = torch.tensor([True, False, True])
    close(missing_eos_penalty(scores, contains_eos, 2.0), [1.0, -1.0, 0.5])
    close(missing_eos_penalty(scores, contains_eos, None), [1.0, 1.0, 0.5])


# ---------------------------------------------------------------------------------------------- losses


def test_clipped_policy_loss():
    ratios = torch.tensor([[1.5, 0.5, 1.1, 3.0]])
    logprobs = ratios.log().requires_grad_(True)
    old_logprobs = torch.zeros(1, 4)
    advantages = torch.tensor([[1.0, 1.0, -1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])  # the last token is padding
    result = clipped_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(-0.5, -0.8) = -0.5; token 2: max(1.1, 1.1) = 1.1
    close(result.loss.detach(), (-1.2 - 0.5 + 1.1) / 3)
    close(result.clip_fraction, 1 / 3)
    close(result.approx_kl, 0.5 * (math.log(1.5) ** 2 + math.log(0.5) ** 2 + math.log(1.1) ** 2) / 3)
    result.loss.backward()
    # the clipped token and the padding get no gradient; d/dlogp of -A * r / 3 = -A * r / 3 for the others
    close(logprobs.grad, [[0.0, -0.5 / 3, 1.1 / 3, 0.0]])


def test_clipped_value_loss():
    values = torch.tensor([1.0, 0.0])
    old_values = torch.tensor([0.5, 0.5])
    returns = torch.tensor([2.0, 0.4])
    loss, clip_fraction = clipped_value_loss(values, old_values, returns, torch.ones(2), cliprange_value=0.2)
    # token 0: clipped value 0.7, max((1 - 2)^2, (0.7 - 2)^2) = 1.69 (clipped)
    # token 1: clipped value 0.3, max((0 - 0.4)^2, (0.3 - 0.4)^2) = 0.16
    close(loss, 0.5 * (1.69 + 0.16) / 2)
    close(clip_fraction, 0.5)
