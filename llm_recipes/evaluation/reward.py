"""The win rate of one model over another on the same prompts, judged by a reward model.

Scoring itself (`reward_scores`) is `llm_recipes.rl.rewards.score_responses`: one place builds the text a reward model
reads, the way TRL's RewardTrainer trained it (chat template for conversations, prompt + response + EOS for text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llm_recipes.errors import UserError
from llm_recipes.evaluation.generation import Prompt, generate_responses
from llm_recipes.evaluation.loading import is_adapter, load_model
from llm_recipes.rl.rewards import load_reward_model as load_with_tokenizer  # a LoRA reward model's base
from llm_recipes.rl.rewards import score_responses as reward_scores

__all__ = ["RewardComparison", "compare_by_reward", "load_reward_model", "reward_scores", "win_rate"]


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


def load_reward_model(path: str, **kwargs: Any) -> Any:
    """A reward model (TRL's RewardTrainer output: a sequence classifier with one output) in eval mode."""
    if is_adapter(path):
        return load_with_tokenizer(path, dtype=kwargs.get("dtype"), device=kwargs.get("device"))[0]
    model = load_model(path, "sequence_classification", **kwargs)
    if model.config.num_labels != 1:
        raise UserError(f"reward_model: {path} has {model.config.num_labels} outputs; a reward model has 1")
    return model
