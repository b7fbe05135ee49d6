"""Scoring responses with a reward model, and the win rate of one model over another on the same prompts.

A reward model here is what TRL's RewardTrainer writes: a sequence classifier with one output, read at the last
token of prompt + response. The text is built the way the reward model saw it in training: through its chat
template when it has one, else prompt and response concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llm_recipes.errors import UserError
from llm_recipes.evaluation.generation import Prompt, generate_responses, prompt_text
from llm_recipes.evaluation.loading import model_device


def reward_text(tokenizer: Any, prompt: Prompt, response: str) -> tuple[str, bool]:
    """(prompt + response as the reward model reads it, whether a chat template produced it)."""
    if tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        messages = [*messages, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False), True
    if isinstance(prompt, str):
        return prompt + response, False
    return prompt_text(prompt) + "\n" + response, False


@torch.no_grad()
def reward_scores(
    reward_model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[float]:
    """The reward of each (prompt, response) pair. Texts too long for the reward model keep their end (the
    response), which is what the score is about."""
    if len(prompts) != len(responses):
        raise UserError(f"{len(prompts)} prompts but {len(responses)} responses")
    device = model_device(reward_model)
    max_length = max_length or getattr(reward_model.config, "max_position_embeddings", None) or 2048
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores: list[float] = []
    for begin in range(0, len(prompts), batch_size):
        encoded = []
        for prompt, response in zip(
            prompts[begin : begin + batch_size], responses[begin : begin + batch_size], strict=True
        ):
            text, templated = reward_text(tokenizer, prompt, response)
            encoded.append(tokenizer(text, add_special_tokens=not templated)["input_ids"][-max_length:])
        width = max(len(ids) for ids in encoded)
        # right padding: the classifier reads the last non-padding token of each row
        input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in encoded], device=device)
        attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in encoded], device=device)
        logits = reward_model(input_ids=input_ids, attention_mask=attention_mask).logits
        scores += logits[:, 0].float().tolist()
    return scores


def win_rate(scores_a: Sequence[float], scores_b: Sequence[float]) -> float:
    """The share of prompts where A's response scores higher than B's; a tie counts half (so A vs A is 0.5)."""
    if len(scores_a) != len(scores_b):
        raise UserError(f"win rate needs paired scores: {len(scores_a)} vs {len(scores_b)}")
    if not scores_a:
        raise UserError("win rate of no prompts")
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores_a, scores_b, strict=True))
    return wins / len(scores_a)


@dataclass
class RewardComparison:
    responses_a: list[str]
    responses_b: list[str]
    scores_a: list[float]
    scores_b: list[float]

    @property
    def mean_reward_a(self) -> float:
        return sum(self.scores_a) / len(self.scores_a)

    @property
    def mean_reward_b(self) -> float:
        return sum(self.scores_b) / len(self.scores_b)

    @property
    def win_rate(self) -> float:
        """A over B."""
        return win_rate(self.scores_a, self.scores_b)


def compare_by_reward(
    model_a: tuple[Any, Any],
    model_b: tuple[Any, Any],
    reward_model: tuple[Any, Any],
    prompts: Sequence[Prompt],
    *,
    generation_config_a: Any | None = None,
    generation_config_b: Any | None = None,
    batch_size: int = 8,
) -> RewardComparison:
    """Generate with A and B (each a (model, tokenizer) pair) on the same prompts and score both under the reward
    model ((model, tokenizer)): mean rewards and A's win rate over B."""
    responses_a = generate_responses(*model_a, prompts, generation_config=generation_config_a, batch_size=batch_size)
    responses_b = generate_responses(*model_b, prompts, generation_config=generation_config_b, batch_size=batch_size)
    scores_a = reward_scores(*reward_model, prompts, responses_a, batch_size=batch_size)
    scores_b = reward_scores(*reward_model, prompts, responses_b, batch_size=batch_size)
    return RewardComparison(responses_a, responses_b, scores_a, scores_b)
