"""A synthetic preference task with a known right answer, small enough for a tiny model to learn on a CPU.

The task: asked about an animal ("Tell me about the cat."), a good answer describes it with a colour, a bad one
with any other adjective or with none, in the same sentence shapes:

    good: "The cat is red and lives near the farm."
    bad:  "The cat is calm and lives near the farm."    "The cat lives near the farm."

So the property is one word, anywhere in the answer; length and sentence shape carry no signal (chosen and
rejected share a template half of the time, and otherwise draw templates independently). It proves each stage
learns: a reward model must find the word (held-out pairwise accuracy near 1); SFT data mixes good and bad
answers so the SFT policy starts near half the maximum reward; RL (PPO, GRPO, RLOO) and DPO should push the
policy towards colours. :func:`synthetic_reward` is the exact reward, for RL without a reward model.

Deterministic for a seed; :func:`write_synthetic_demo_data` writes the demo's files.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "COLORS",
    "OTHER_ADJECTIVES",
    "PLAIN_ANSWERS",
    "as_conversation",
    "has_color",
    "synthetic_preferences",
    "synthetic_prompts",
    "synthetic_reward",
    "synthetic_sft_rows",
    "synthetic_texts",
    "write_synthetic_base_model",
    "write_synthetic_demo_data",
]

ANIMALS = ["cat", "dog", "horse", "bird", "fish", "mouse", "lion", "bear", "fox", "owl"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
OTHER_ADJECTIVES = ["happy", "calm", "small", "quick", "quiet", "young", "brave", "lazy"]
PLACES = ["river", "forest", "farm", "park", "hill", "garden", "beach", "barn"]
FOODS = ["seeds", "grass", "fish", "berries", "bread", "insects", "apples", "corn"]

PROMPTS = ["Tell me about the {animal}.", "Describe the {animal}.", "What is the {animal} like?"]
ANSWERS = [
    "The {animal} is {adjective} and lives near the {place}.",
    "A {adjective} {animal} likes to eat {food}.",
    "This {animal} is {adjective}. It eats {food} near the {place}.",
    "Every {animal} here is {adjective} and sleeps near the {place}.",
]
# The same sentences with no adjective at all: bad answers too. Without them a reward model can get every pair
# right by penalizing the wrong adjectives alone, and RL then learns to use none (reward hacking, measured).
PLAIN_ANSWERS = [
    "The {animal} lives near the {place}.",
    "A {animal} likes to eat {food}.",
    "This {animal} eats {food} near the {place}.",
    "Every {animal} here sleeps near the {place}.",
]

_COLOR_WORD = re.compile(r"\b(" + "|".join(COLORS) + r")\b", re.IGNORECASE)


def has_color(text: str) -> bool:
    """The task's right answer: does the text name a colour?"""
    return bool(_COLOR_WORD.search(text))


def _prompt(rng: random.Random, animal: str) -> str:
    return rng.choice(PROMPTS).format(animal=animal)


def _answer(template: str, animal: str, adjective: str, place: str, food: str) -> str:
    # a leading space: prompt + answer reads as one text, and byte-level BPE keeps the word tokens it learned
    return " " + template.format(animal=animal, adjective=adjective, place=place, food=food)


def _fillers(rng: random.Random) -> dict[str, str]:
    return {"place": rng.choice(PLACES), "food": rng.choice(FOODS)}


def _bad_answer(rng: random.Random, animal: str, template: str, fillers: dict[str, str]) -> str:
    """A bad answer: the same sentence with another adjective, or a plain sentence with none."""
    if rng.random() < 0.5:
        return _answer(template, animal, rng.choice(OTHER_ADJECTIVES), **fillers)
    return _answer(rng.choice(PLAIN_ANSWERS), animal, "", **fillers)


def synthetic_preferences(n: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` rows of prompt/chosen/rejected strings: chosen names a colour; rejected has another adjective or none."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        animal = rng.choice(ANIMALS)
        chosen_template = rng.choice(ANSWERS)
        # half the pairs share the sentence and its details; the rest differ there too, so shape is no clue
        fillers = _fillers(rng)
        same = rng.random() < 0.5
        rows.append(
            {
                "prompt": _prompt(rng, animal),
                "chosen": _answer(chosen_template, animal, rng.choice(COLORS), **fillers),
                "rejected": _bad_answer(
                    rng, animal, chosen_template if same else rng.choice(ANSWERS), fillers if same else _fillers(rng)
                ),
            }
        )
    return rows


def synthetic_prompts(n: int, seed: int = 1) -> list[str]:
    """`n` prompts for RL (a different seed from the preference data's: held out in the pairs drawn)."""
    rng = random.Random(seed)
    return [_prompt(rng, rng.choice(ANIMALS)) for _ in range(n)]


def synthetic_sft_rows(n: int, seed: int = 2) -> list[dict[str, str]]:
    """`n` prompt/completion rows, half with a colour and half without (another adjective or none), so an SFT
    policy starts at about half the maximum reward and RL has somewhere to go."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        animal = rng.choice(ANIMALS)
        template, fillers = rng.choice(ANSWERS), _fillers(rng)
        if index % 2 == 0:
            completion = _answer(template, animal, rng.choice(COLORS), **fillers)
        else:
            completion = _bad_answer(rng, animal, template, fillers)
        rows.append({"prompt": _prompt(rng, animal), "completion": completion})
    return rows


def synthetic_texts(n: int = 400, seed: int = 3) -> list[str]:
    """Whole texts of the task (prompts with good and bad answers), e.g. to train a tokenizer for it."""
    return [row["prompt"] + row["completion"] for row in synthetic_sft_rows(n, seed)]


def synthetic_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """The exact reward as a TRL reward function: 1.0 when the completion names a colour, else 0.0. Completions
    are strings or (conversational) lists of assistant messages."""
    from llm_recipes.rewards import completion_text

    return [1.0 if has_color(completion_text(completion)) else 0.0 for completion in completions]


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def as_conversation(row: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """A task row (prompt with chosen/rejected or completion) as chat messages: the prompt a user turn, each answer
    an assistant turn (without the leading space text needs)."""
    out = {"prompt": [{"role": "user", "content": row["prompt"]}]}
    for key in ("chosen", "rejected", "completion"):
        if key in row:
            out[key] = [{"role": "assistant", "content": row[key].strip()}]
    return out


def write_synthetic_demo_data(folder: str | Path, conversational: bool = True) -> list[Path]:
    """The demo's colour task: preferences.jsonl (reward model, DPO), rl_prompts.jsonl (PPO, GRPO, RLOO) and
    colour_sft.jsonl (SFT data so the policy knows the task). `conversational` (the demo's chat models): message
    lists, and the SFT rows as `messages` so they mix with other chat data; otherwise plain strings and
    prompt/completion rows."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = synthetic_preferences(600, seed=0)
    prompts = [{"prompt": prompt} for prompt in synthetic_prompts(128, seed=1)]
    sft = synthetic_sft_rows(400, seed=2)
    if conversational:
        pairs, prompts = [as_conversation(row) for row in pairs], [as_conversation(row) for row in prompts]
        sft = [{"messages": [*row["prompt"], *row["completion"]]} for row in map(as_conversation, sft)]
    return [
        _write_jsonl(folder / "preferences.jsonl", pairs),
        _write_jsonl(folder / "rl_prompts.jsonl", prompts),
        _write_jsonl(folder / "colour_sft.jsonl", sft),
    ]


def write_synthetic_base_model(
    folder: str | Path, *, preset: str = "llama-tiny", vocab_size: int = 600, seed: int = 0
) -> Path:
    """A randomly initialised tiny decoder with a BPE tokenizer trained on the task's text (every word of the task
    is one token, so a ~0.1M-parameter model learns it in seconds): the starting point of the learning proofs."""
    import torch

    from llm_recipes.modeling import init_decoder
    from llm_recipes.tokenizer import train_bpe_tokenizer

    folder = Path(folder)
    tokenizer = train_bpe_tokenizer(synthetic_texts(400), vocab_size=vocab_size)
    torch.manual_seed(seed)
    init_decoder(preset, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
