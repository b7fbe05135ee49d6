"""A synthetic preference task with a known right answer, small enough for a tiny model to learn on a CPU.

The task: asked about an animal ("Tell me about the cat."), a good answer is about *that* animal and describes it
with a colour. A bad answer has another adjective, none, or is about another animal, in the same sentence shapes:

    good: "The cat is red and lives near the farm."
    bad:  "The cat is calm and lives near the farm."    "The cat lives near the farm."
          "The dog is red and lives near the farm."     (the wrong animal: a policy that names one animal for
                                                          every question must not collect the reward)

So the properties are two words: the colour anywhere in the answer, and the animal, which must be the one asked.
Length and sentence shape carry no signal (chosen and rejected share a template half of the time). It proves each
stage learns: a reward model must find the colour and compare the answer's animal with the question's (held-out
pairwise accuracy near 1); SFT answers are always about the asked animal, half of them with a colour, so the SFT
policy starts near half the maximum reward; RL (PPO, GRPO, RLOO) and DPO should push it towards colours without
changing the animal.

The public measures, for RL and for the evaluation protocol:

- :func:`check_answer` (prompt, answer) -> :class:`AnswerCheck`: the asked animal, the animals the answer names,
  whether it is about the asked animal, whether it names another one, whether it names a colour.
- :func:`true_reward` (prompt, answer) -> 1.0 when the answer is about the asked animal and names a colour, else 0.0.
- :func:`synthetic_reward` the same as a TRL reward function (lists of prompts and completions), and
  :func:`wrong_animal` (1.0 where an answer names an animal other than the asked one) in the same shape.

Held out: three of the eight question phrasings of each animal (:data:`HELDOUT_PROMPTS`) are never drawn for
training data; :func:`heldout_prompts` lists them for evaluation. Deterministic for a seed;
:func:`write_synthetic_demo_data` writes the demo's files.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm_recipes.models.loading import init_decoder
from llm_recipes.tokenizer.training import train_bpe_tokenizer

__all__ = [
    "ANIMALS",
    "COLORS",
    "HELDOUT_PROMPTS",
    "OTHER_ADJECTIVES",
    "PLAIN_ANSWERS",
    "AnswerCheck",
    "as_conversation",
    "colour_only_reward",
    "check_answer",
    "has_color",
    "heldout_prompts",
    "named_animals",
    "plural",
    "synthetic_preferences",
    "synthetic_prompts",
    "synthetic_reward",
    "synthetic_sft_rows",
    "synthetic_texts",
    "true_reward",
    "write_synthetic_base_model",
    "write_synthetic_demo_data",
    "write_synthetic_heldout_data",
    "wrong_animal",
]

ANIMALS = ["cat", "dog", "horse", "bird", "fish", "mouse", "lion", "bear", "fox", "owl"]
COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
OTHER_ADJECTIVES = ["happy", "calm", "small", "quick", "quiet", "young", "brave", "lazy"]
PLACES = ["river", "forest", "farm", "park", "hill", "garden", "beach", "barn"]
# no animal among the foods: the only animal an answer names is the one it is about
FOODS = ["seeds", "grass", "nuts", "berries", "bread", "insects", "apples", "corn"]

PROMPTS = [
    "Tell me about the {animal}.",
    "Describe the {animal}.",
    "What is the {animal} like?",
    "What can you say about the {animal}?",
    "Please describe the {animal}.",
    "Tell me something about the {animal}.",
    "What do you know about the {animal}?",
    "Write a sentence about the {animal}.",
]
# Every answer starts "The <animal>", as a reader's question is answered on the web pages the demo model is
# pretrained on ("What colour is the cat? The cat is red."), so SFT builds on the copying pretraining taught
ANSWERS = [
    "The {animal} is {adjective} and lives near the {place}.",
    "The {animal} is {adjective}. It eats {food} near the {place}.",
    "The {animal} here is {adjective} and sleeps near the {place}.",
    "The {animal} likes to eat {food} and is {adjective}.",
]
# The same sentences with no adjective at all: bad answers too. Without them a reward model can get every pair
# right by penalizing the wrong adjectives alone, and RL then learns to use none (reward hacking, measured).
PLAIN_ANSWERS = [
    "The {animal} lives near the {place}.",
    "The {animal} eats {food} near the {place}.",
    "The {animal} here sleeps near the {place}.",
    "The {animal} likes to eat {food}.",
]


def _heldout_templates(seed: int = 1234) -> dict[str, tuple[int, ...]]:
    # three phrasings per animal, drawn once with their own seed; every phrasing and every animal still occurs in
    # training, only these pairings do not
    rng = random.Random(seed)
    return {animal: tuple(sorted(rng.sample(range(len(PROMPTS)), 3))) for animal in ANIMALS}


_HELDOUT_TEMPLATES = _heldout_templates()
HELDOUT_PROMPTS: frozenset[str] = frozenset(
    PROMPTS[index].format(animal=animal) for animal, indices in _HELDOUT_TEMPLATES.items() for index in indices
)

_COLOR_WORD = re.compile(r"\b(" + "|".join(COLORS) + r")\b", re.IGNORECASE)
_PLURALS = {"mouse": "mice", "fish": "fish", "fox": "foxes"}
_ANIMAL_FORMS = {form: animal for animal in ANIMALS for form in (animal, _PLURALS.get(animal, animal + "s"))}
_ANIMAL_WORD = re.compile(r"\b(" + "|".join(sorted(_ANIMAL_FORMS, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def plural(animal: str) -> str:
    """The plural of one of the task's animals ("mouse" -> "mice")."""
    return _PLURALS.get(animal, animal + "s")


def has_color(text: str) -> bool:
    """Does the text name a colour?"""
    return bool(_COLOR_WORD.search(text))


def named_animals(text: str) -> list[str]:
    """The task's animals the text names, in order of first mention (plurals count: "mice" is the mouse)."""
    found: list[str] = []
    for match in _ANIMAL_WORD.finditer(text):
        animal = _ANIMAL_FORMS[match.group(1).lower()]
        if animal not in found:
            found.append(animal)
    return found


@dataclass(frozen=True)
class AnswerCheck:
    """What an answer to a colour-task question does right and wrong."""

    asked_animal: str | None  # the animal the question is about (the last one its last user turn names)
    animals: tuple[str, ...]  # the animals the answer names
    has_color: bool

    @property
    def about_asked_animal(self) -> bool:
        """The answer names the asked animal and no other."""
        return self.asked_animal is not None and self.animals == (self.asked_animal,)

    @property
    def wrong_animal(self) -> bool:
        """The answer names an animal other than the asked one (the reward hack of a one-animal policy)."""
        return any(animal != self.asked_animal for animal in self.animals)

    @property
    def good(self) -> bool:
        """The task's right answer: about the asked animal, with a colour."""
        return self.about_asked_animal and self.has_color


def _text(value: Any) -> str:
    """A prompt or completion as text: a string, or the content of its messages (a prompt: its last user turn)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("content") or "")
    messages = list(value or [])
    users = [message for message in messages if message.get("role") == "user"]
    return "".join(str(message.get("content") or "") for message in (users[-1:] or messages))


def check_answer(prompt: Any, completion: Any) -> AnswerCheck:
    """Judge an answer to a colour-task question. `prompt` and `completion` are strings or chat messages (a
    conversational prompt is judged by its last user turn, a text prompt by the last animal it names)."""
    answer = _text(completion)
    return AnswerCheck(
        asked_animal=_last_animal(_text(prompt)), animals=tuple(named_animals(answer)), has_color=has_color(answer)
    )


def _last_animal(text: str) -> str | None:
    matches = list(_ANIMAL_WORD.finditer(text))
    return _ANIMAL_FORMS[matches[-1].group(1).lower()] if matches else None


def true_reward(prompt: Any, completion: Any) -> float:
    """The task's exact reward: 1.0 when the answer is about the asked animal (and no other) and names a colour."""
    return 1.0 if check_answer(prompt, completion).good else 0.0


def synthetic_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """:func:`true_reward` as a TRL reward function: one float per completion. Prompts and completions are strings
    or (conversational) message lists."""
    return [true_reward(prompt, completion) for prompt, completion in zip(prompts, completions, strict=True)]


def heldout_prompts() -> list[str]:
    """The held-out questions (three phrasings per animal that no training row uses), in a fixed order."""
    return [PROMPTS[index].format(animal=animal) for animal, indices in _HELDOUT_TEMPLATES.items() for index in indices]


def _prompt(rng: random.Random, animal: str) -> str:
    # the training phrasings of this animal only: the held-out questions stay unseen by every stage
    indices = [i for i in range(len(PROMPTS)) if i not in _HELDOUT_TEMPLATES[animal]]
    return PROMPTS[rng.choice(indices)].format(animal=animal)


def _answer(template: str, animal: str, adjective: str, place: str, food: str) -> str:
    # a leading space: prompt + answer reads as one text, and byte-level BPE keeps the word tokens it learned
    return " " + template.format(animal=animal, adjective=adjective, place=place, food=food)


def _fillers(rng: random.Random) -> dict[str, str]:
    return {"place": rng.choice(PLACES), "food": rng.choice(FOODS)}


def _no_color_answer(rng: random.Random, animal: str, template: str, fillers: dict[str, str]) -> str:
    """An answer about the right animal without a colour: the same sentence with another adjective, or none."""
    if rng.random() < 0.5:
        return _answer(template, animal, rng.choice(OTHER_ADJECTIVES), **fillers)
    return _answer(PLAIN_ANSWERS[ANSWERS.index(template)], animal, "", **fillers)


def _other_animal(rng: random.Random, animal: str) -> str:
    return rng.choice([other for other in ANIMALS if other != animal])


def synthetic_preferences(n: int, seed: int = 0, wrong_animal_share: float = 0.5) -> list[dict[str, str]]:
    """`n` rows of prompt/chosen/rejected strings. Chosen is about the asked animal and names a colour; rejected
    is about another animal with a colour (a `wrong_animal_share` of the rows: a reward model that ignores the
    question's animal gets those pairs wrong) or about the asked animal without a colour. A share of 0 leaves the
    colour alone to learn, as a model trained from scratch in seconds can (the unit tests)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        animal, color = rng.choice(ANIMALS), rng.choice(COLORS)
        chosen_template = rng.choice(ANSWERS)
        # half the pairs share the sentence and its details (the animal or the colour is then the only difference);
        # the rest differ there too, so shape is no clue
        fillers = _fillers(rng)
        same = rng.random() < 0.5
        template, details = (chosen_template, fillers) if same else (rng.choice(ANSWERS), _fillers(rng))
        if rng.random() < 1 - wrong_animal_share:
            rejected = _no_color_answer(rng, animal, template, details)
        else:
            other_color = color if same else rng.choice(COLORS)
            rejected = _answer(template, _other_animal(rng, animal), other_color, **details)
        rows.append(
            {
                "prompt": _prompt(rng, animal),
                "chosen": _answer(chosen_template, animal, color, **fillers),
                "rejected": rejected,
            }
        )
    return rows


def synthetic_prompts(n: int, seed: int = 1) -> list[str]:
    """`n` training questions for RL (a different seed from the preference data's; never a held-out question)."""
    rng = random.Random(seed)
    return [_prompt(rng, rng.choice(ANIMALS)) for _ in range(n)]


def synthetic_sft_rows(n: int, seed: int = 2) -> list[dict[str, str]]:
    """`n` prompt/completion rows, all about the asked animal, half with a colour and half without (another
    adjective or none), so an SFT policy starts at about half the maximum reward and RL has somewhere to go."""
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        animal = rng.choice(ANIMALS)
        template, fillers = rng.choice(ANSWERS), _fillers(rng)
        if index % 2 == 0:
            completion = _answer(template, animal, rng.choice(COLORS), **fillers)
        else:
            completion = _no_color_answer(rng, animal, template, fillers)
        rows.append({"prompt": _prompt(rng, animal), "completion": completion})
    return rows


def synthetic_texts(n: int = 400, seed: int = 3) -> list[str]:
    """Whole texts of the task (prompts with good and bad answers), e.g. to train a tokenizer for it."""
    return [row["prompt"] + row["completion"] for row in synthetic_sft_rows(n, seed)]


def colour_only_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """Half the task, as a TRL reward function: 1.0 when the answer names a colour, whatever animal it is about.
    For tests of RL mechanics from a random policy, which names the asked animal too rarely to learn from the full
    reward in a few steps; the demo and the protocol use :func:`synthetic_reward`."""
    return [float(has_color(_text(completion))) for completion in completions]


def wrong_animal(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 for each answer that names an animal other than the asked one, else 0.0 (a TRL reward function's
    signature, so the evaluation protocol reads it as a `share` task's check)."""
    return [float(check_answer(p, c).wrong_animal) for p, c in zip(prompts, completions, strict=True)]


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


def write_synthetic_demo_data(
    folder: str | Path, conversational: bool = True, wrong_animal_share: float = 0.5
) -> list[Path]:
    """The demo's colour task: preferences.jsonl (reward model, DPO), rl_prompts.jsonl (PPO, GRPO, RLOO) and
    colour_sft.jsonl (SFT data so the policy knows the task). `conversational` (the demo's chat models): message
    lists, and the SFT rows as `messages` so they mix with other chat data; otherwise plain strings and
    prompt/completion rows. None of them holds a held-out question (:func:`heldout_prompts`). `wrong_animal_share`:
    see :func:`synthetic_preferences`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = synthetic_preferences(1200, seed=0, wrong_animal_share=wrong_animal_share)
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


def write_synthetic_heldout_data(folder: str | Path) -> Path:
    """colour_prompts.jsonl: every held-out question as a user turn, with the animal it asks about."""
    rows = [
        {"prompt": [{"role": "user", "content": prompt}], "animal": check_answer(prompt, "").asked_animal}
        for prompt in heldout_prompts()
    ]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return _write_jsonl(folder / "colour_prompts.jsonl", rows)


def write_synthetic_base_model(
    folder: str | Path, *, preset: str = "llama-tiny", vocab_size: int = 600, seed: int = 0
) -> Path:
    """A randomly initialised tiny decoder with a BPE tokenizer trained on the task's text (every word of the task
    is one token, so a ~0.1M-parameter model learns it in seconds): the starting point of the learning proofs."""

    folder = Path(folder)
    tokenizer = train_bpe_tokenizer(synthetic_texts(400), vocab_size=vocab_size)
    torch.manual_seed(seed)
    init_decoder(preset, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
