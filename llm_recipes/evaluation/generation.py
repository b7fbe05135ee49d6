"""Batched generation from prompts, and the metrics that compare generations with references.

Prompts are text (continued as is) or chat messages (rendered with the tokenizer's chat template when it has one,
else as plain lines, as a base model would read them). Generation starts from the model's own generation config
(the SFT stage saves one that stops at the end of a turn) with the user's changes on top; greedy by default, so
two models compare on their most likely answers rather than on sampling noise.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from functools import cache
from typing import Any

import torch
from transformers import GenerationConfig

from llm_recipes.errors import UserError
from llm_recipes.evaluation.loading import model_device
from llm_recipes.metrics import load_metric

GENERATION_METRICS = ("bleu", "chrf", "rouge", "exact_match")
# models that read padding as input (no attention mask): generated one prompt at a time
UNPADDABLE_MODEL_TYPES = ("recurrent_lm",)

Prompt = str | list[dict[str, str]]


def prompt_text(prompt: Prompt) -> str:
    """A prompt as plain text, for tables and for models without a chat template."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(turn["content"] for turn in prompt)


def render_prompt(tokenizer: Any, prompt: Prompt) -> tuple[str, bool]:
    """(the text the model continues, whether a chat template produced it -- it then holds its special tokens)."""
    if isinstance(prompt, str):
        return prompt, False
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), True
    return prompt_text(prompt) + "\n", False


def check_generation_overrides(overrides: dict[str, Any]) -> None:
    """Every key must be a GenerationConfig field (GenerationConfig itself keeps unknown keys without a word)."""
    valid = list(GenerationConfig().to_dict())
    for key in overrides:
        if key not in valid:
            match = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {match[0]}?" if match else ""
            raise UserError(f"generation_config: unknown field '{key}'{hint}")


def build_generation_config(
    model: Any, tokenizer: Any, *, max_new_tokens: int = 64, overrides: dict[str, Any] | None = None
) -> Any:
    """The model's generation config, greedy, with `max_new_tokens` and `overrides` (GenerationConfig fields)."""
    base = getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    config.do_sample = False
    config.max_new_tokens = max_new_tokens
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    overrides = dict(overrides or {})
    check_generation_overrides(overrides)
    config.update(**overrides)
    if not config.do_sample:
        # sampling knobs inherited from a saved config mean nothing for greedy search and make transformers warn
        config.temperature, config.top_p, config.top_k = None, None, None
    try:
        config.validate(strict=True)
    except ValueError as err:
        raise UserError(f"generation_config: {str(err).strip().splitlines()[0]}") from None
    return config


def _encode(tokenizer: Any, prompt: Prompt, max_tokens: int) -> list[int]:
    text, templated = render_prompt(tokenizer, prompt)
    ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
    return ids[-max_tokens:]  # a prompt longer than the room left keeps its end, next to the answer


@torch.no_grad()
def generate_responses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    generation_config: Any | None = None,
    batch_size: int = 8,
) -> list[str]:
    """The model's answer to each prompt (new tokens only, special tokens dropped, whitespace stripped)."""
    config = generation_config or build_generation_config(model, tokenizer)
    limit = getattr(model.config, "max_position_embeddings", None) or 1_000_000
    room = max(1, limit - (config.max_new_tokens or 0))
    if getattr(model.config, "model_type", None) in UNPADDABLE_MODEL_TYPES:
        batch_size = 1
    device = model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    responses: list[str] = []
    for begin in range(0, len(prompts), batch_size):
        encoded = [_encode(tokenizer, prompt, room) for prompt in prompts[begin : begin + batch_size]]
        width = max(len(ids) for ids in encoded)
        # left padding: every prompt ends where its answer begins
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in encoded], device=device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        responses += [text.strip() for text in tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)]
    return responses


@cache
def _metric(name: str):
    try:
        return load_metric(name)
    except ImportError:
        # evaluate names the missing library in a long message; ours says how to get all of them
        raise UserError(f"the {name} metric needs sacrebleu and rouge-score: pip install 'llm-recipes[eval]'") from None


def generation_metrics(
    predictions: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    metrics: Sequence[str] = GENERATION_METRICS,
) -> dict[str, float]:
    """BLEU and chrF (0-100, sacrebleu), ROUGE-1/2/L/Lsum (0-1, rouge-score) and exact match (0-1, whitespace
    runs collapsed) of `predictions` against `references`, through our local `evaluate` metric modules."""
    if len(predictions) != len(references):
        raise UserError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise UserError("no predictions to score")
    unknown = [name for name in metrics if name not in GENERATION_METRICS]
    if unknown:
        raise UserError(f"unknown generation metric(s) {unknown}; choose from {', '.join(GENERATION_METRICS)}")
    predictions, references = list(predictions), [r if isinstance(r, str) else list(r) for r in references]
    results: dict[str, float] = {}
    if "bleu" in metrics:
        results["bleu"] = _metric("bleu").compute(predictions=predictions, references=references)["bleu"]
    if "chrf" in metrics:
        results["chrf"] = _metric("chrf").compute(predictions=predictions, references=references)["chrf"]
    if "rouge" in metrics:
        results.update(_metric("rouge").compute(predictions=predictions, references=references))
    if "exact_match" in metrics:
        em = _metric("exact_match").compute(predictions=predictions, references=references, ignore_whitespace=True)
        results["exact_match"] = em["exact_match"]
    return {name: float(value) for name, value in results.items()}
