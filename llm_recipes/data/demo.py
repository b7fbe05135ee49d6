"""The demo's own data: small synthetic tasks a tiny model can visibly learn on a CPU in a minute.

Deterministic for a seed, so the committed files under configs/demo/data can be regenerated:
    python -m llm_recipes.data.demo configs/demo/data
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
ANIMALS = ["cat", "dog", "horse", "bird", "fish", "mouse", "lion", "bear"]


def arithmetic_alpaca(rows: int, seed: int = 0) -> list[dict[str, str]]:
    """Alpaca-format additions and subtractions, phrased a few ways."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        if rng.random() < 0.5:
            question, answer = f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
        else:
            a, b = max(a, b), min(a, b)
            question, answer = f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}."
        if rng.random() < 0.3:
            out.append({"instruction": "Answer the arithmetic question.", "input": question, "output": answer})
        else:
            out.append({"instruction": question, "input": "", "output": answer})
    return out


def describe_sharegpt(rows: int, seed: int = 1) -> list[dict]:
    """ShareGPT-format two-turn chats about coloured animals, with a system prompt on some rows."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        color, animal = rng.choice(COLORS), rng.choice(ANIMALS)
        turns = [
            {"from": "human", "value": f"I see a {color} {animal}. What animal is it?"},
            {"from": "gpt", "value": f"It is a {animal}."},
            {"from": "human", "value": "And what colour is it?"},
            {"from": "gpt", "value": f"The {animal} is {color}."},
        ]
        if rng.random() < 0.3:
            turns.insert(0, {"from": "system", "value": "You answer in one short sentence."})
        out.append({"conversations": turns})
    return out


PLACES = ["river", "forest", "farm", "city park", "mountain", "garden", "beach", "old barn"]
TIMES = ["in the morning", "at night", "in winter", "after the rain", "on sunny days", "in spring"]
FOODS = ["seeds", "grass", "small fish", "berries", "bread crumbs", "insects", "apples", "corn"]
SENTENCES = [
    "The {color} {animal} lives near the {place} and eats {food} {time}.",
    "Many people say that the {animal} is the most curious animal of the {place}.",
    "{Time}, the {animal} walks slowly to the {place} to look for {food}.",
    "A young {animal} learns from its parents where to find {food}.",
    "If you visit the {place} {time}, you may see a {color} {animal} resting in the shade.",
    "The {animal} has a {color} coat, which helps it hide from other animals.",
    "Scientists have counted more than {number} {animal}s around the {place} this year.",
    "Unlike the {other}, the {animal} does not like to swim in cold water.",
    "Children at the {place} often feed {food} to the {color} {animal}.",
    "The {animal} and the {other} sometimes share the same corner of the {place}.",
    "When it is hungry, the {animal} makes a loud noise that you can hear from far away.",
    "Old stories tell of a {color} {animal} that guarded the {place} for {number} years.",
]
BOILERPLATE = [
    "This website uses cookies to improve your experience. Accept all cookies.",
    "Share on Facebook | Share on Twitter",
    "Please enable JavaScript to view the comments.",
    "Copyright 2024. All rights reserved.",
]


def animal_page(rng: random.Random) -> str:
    """A short web page about animals: a title and two or three paragraphs of several sentences."""
    # each template at most once per page: a page that repeats itself is what the repetition filter removes
    templates = rng.sample(SENTENCES, len(SENTENCES))
    paragraphs = []
    for _ in range(rng.randint(2, 3)):
        sentences = []
        for template in [templates.pop() for _ in range(rng.randint(3, 4))]:
            time = rng.choice(TIMES)
            sentences.append(
                template.format(
                    color=rng.choice(COLORS),
                    animal=rng.choice(ANIMALS),
                    other=rng.choice(ANIMALS),
                    place=rng.choice(PLACES),
                    food=rng.choice(FOODS),
                    time=time,
                    Time=time[0].upper() + time[1:],
                    number=rng.randint(2, 900),
                )
            )
        paragraphs.append(" ".join(sentences))
    title = f"All about the {rng.choice(COLORS)} {rng.choice(ANIMALS)}"
    return title + "\n\n" + "\n\n".join(paragraphs)


def raw_web_corpus(rows: int, seed: int = 2) -> list[dict[str, str]]:
    """Raw web-like pages with the noise a corpus stage must handle: boilerplate lines, mojibake, stray
    whitespace, contact details, exact and near duplicates, too-short pages and a few non-English ones."""
    rng = random.Random(seed)
    pages: list[str] = []
    while len(pages) < rows:
        roll = rng.random()
        if roll < 0.08 and pages:
            pages.append(rng.choice(pages))  # exact copy
        elif roll < 0.15 and pages:
            words = rng.choice(pages).split(" ")
            at = rng.randrange(len(words))
            words[at] = rng.choice(ANIMALS)  # a near copy: one word changed
            pages.append(" ".join(words))
        elif roll < 0.20:
            pages.append(f"{rng.choice(ANIMALS).title()} photos. Click here!")  # too short to learn from
        elif roll < 0.23:
            pages.append(
                "Der Hund und die Katze leben zusammen auf dem Bauernhof. Jeden Morgen gehen sie zum Fluss, "
                "und am Abend schlafen sie im alten Stall neben den Pferden. Die Kinder des Dorfes besuchen "
                f"die Tiere oft und bringen ihnen Brot und Wasser. Seite {rng.randint(1, 99)}."
            )
        else:
            page = animal_page(rng)
            if rng.random() < 0.3:
                page += "\n" + rng.choice(BOILERPLATE)
            if rng.random() < 0.1:
                office, phone = rng.randint(1, 9), rng.randint(100, 199)
                page += f"\nContact the park office at office{office}@parks.example.org or +1 555 0{phone} 4567."
            if rng.random() < 0.1:
                # UTF-8 read as Windows-1252, the commonest mojibake on the web, plus stray whitespace
                page += "\n\nThe caf\u00e9 near the river sells coffee \u2013 and the owner\u2019s tea.  \n\n\n\n"
                page = page.encode("utf-8").decode("cp1252", errors="replace")
            pages.append(page)
    return [{"text": page} for page in pages]


def write_demo_data(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alpaca = folder / "arithmetic_alpaca.jsonl"
    alpaca.write_text("".join(json.dumps(row) + "\n" for row in arithmetic_alpaca(400)), encoding="utf-8")
    sharegpt = folder / "animals_sharegpt.json"
    sharegpt.write_text(json.dumps(describe_sharegpt(200), indent=1) + "\n", encoding="utf-8")
    corpus = folder / "raw_corpus.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in raw_web_corpus(800)), encoding="utf-8")
    # the reward/RL learning task: colour answers are preferred (llm_recipes/data/synthetic.py)
    from llm_recipes.data.synthetic import write_synthetic_demo_data

    return [alpaca, sharegpt, corpus, *write_synthetic_demo_data(folder)]


if __name__ == "__main__":
    for path in write_demo_data(sys.argv[1] if len(sys.argv) > 1 else "configs/demo/data"):
        print(path)
