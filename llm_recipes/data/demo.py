"""The demo's own data: small synthetic tasks a tiny model can visibly learn on a CPU in a minute.

Deterministic for a seed, so the committed files under configs/demo/data can be regenerated:
    python -m llm_recipes.data.demo configs/demo/data
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Collection
from pathlib import Path

from llm_recipes.data.synthetic import ANIMALS as CHAT_ANIMALS
from llm_recipes.data.synthetic import plural, write_synthetic_demo_data, write_synthetic_heldout_data

COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
ANIMALS = ["cat", "dog", "horse", "bird", "fish", "mouse", "lion", "bear"]  # the task demos' (task_demo.py)
# the pages and chats name every animal the chat tasks ask about (CHAT_ANIMALS), so the tokenizer and the pretrained
# model know them all
TRAIN_ARITHMETIC = 400  # rows drawn from the questions not held out
HELDOUT_ARITHMETIC = 60  # distinct questions
PAGE_CHATS = 300


Arithmetic = tuple[str, int, int]  # ("plus" | "minus", a, b): one question, however it is phrased
_ARITHMETIC = re.compile(r"What is (\d+) (plus|minus) (\d+)\?")


def _arithmetic_question(rng: random.Random, max_number: int, max_count: int) -> Arithmetic:
    a = rng.randint(0, max_number)
    if rng.random() < 0.5:
        return ("plus", a, rng.randint(0, max_count))
    return ("minus", a, rng.randint(0, min(a, max_count)))


def arithmetic_answer(op: str, a: int, b: int) -> str:
    """The answer counts up (or down) from `a`, one number per step, then states the result: "Counting 2 up from 3:
    3, 4, 5. So 3 plus 2 is 5." A tiny model learns this procedure from the questions it sees and applies it to
    new ones; a bare "3 plus 2 is 5." it can only memorise (measured: 0.2 exact match on held-out questions against
    0.8 for counting)."""
    sign = 1 if op == "plus" else -1
    steps = ", ".join(str(a + sign * k) for k in range(b + 1))
    return f"Counting {b} {'up' if sign > 0 else 'down'} from {a}: {steps}. So {a} {op} {b} is {a + sign * b}."


def arithmetic_alpaca(
    rows: int,
    seed: int = 0,
    *,
    exclude: Collection[Arithmetic] = (),
    distinct: bool = False,
    max_number: int = 20,
    max_count: int = 9,
) -> list[dict[str, str]]:
    """Alpaca-format additions and subtractions (a number up to `max_number`, plus or minus one up to `max_count`),
    phrased two ways; never a question in `exclude` (the held-out ones), each question once when `distinct`."""
    rng = random.Random(seed)
    out: list[dict[str, str]] = []
    seen: set[Arithmetic] = set()
    while len(out) < rows:
        key = _arithmetic_question(rng, max_number, max_count)
        instruction_first = rng.random() < 0.3
        if key in exclude or (distinct and key in seen):
            continue
        seen.add(key)
        op, a, b = key
        question, answer = f"What is {a} {op} {b}?", arithmetic_answer(op, a, b)
        if instruction_first:
            out.append({"instruction": "Answer the arithmetic question.", "input": question, "output": answer})
        else:
            out.append({"instruction": question, "input": "", "output": answer})
    return out


def arithmetic_key(row: dict[str, str]) -> Arithmetic:
    """The question an alpaca arithmetic row asks, whichever way it is phrased."""
    match = _ARITHMETIC.search(row["instruction"] + " " + row["input"])
    if match is None:
        raise ValueError(f"not an arithmetic row: {row}")
    return (match.group(2), int(match.group(1)), int(match.group(3)))


def heldout_sightings(seed: int = 1001) -> frozenset[tuple[str, str]]:
    """The (colour, animal) pairs of the held-out chats: one colour per animal, never in a training chat."""
    rng = random.Random(seed)
    return frozenset((rng.choice(COLORS), animal) for animal in CHAT_ANIMALS)


def describe_sharegpt(rows: int, seed: int = 1, *, heldout: bool = False) -> list[dict]:
    """ShareGPT-format two-turn chats about coloured animals, with a system prompt on some rows: about the held-out
    (colour, animal) pairs when `heldout`, else about every other pair."""
    rng = random.Random(seed)
    sightings = heldout_sightings()
    out = []
    while len(out) < rows:
        color, animal = rng.choice(COLORS), rng.choice(CHAT_ANIMALS)
        system = rng.random() < 0.3
        if ((color, animal) in sightings) != heldout:
            continue
        turns = [
            {"from": "human", "value": f"I see a {color} {animal}. What animal is it?"},
            {"from": "gpt", "value": f"It is a {animal}."},
            {"from": "human", "value": "And what colour is it?"},
            {"from": "gpt", "value": f"The {animal} is {color}."},
        ]
        if system:
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
    "Scientists have counted more than {number} {animals} around the {place} this year.",
    "Unlike the {other}, the {animal} does not like to swim in cold water.",
    "Children at the {place} often feed {food} to the {color} {animal}.",
    "The {animal} and the {other} sometimes share the same corner of the {place}.",
    "When it is hungry, the {animal} makes a loud noise that you can hear from far away.",
    "Old stories tell of a {color} {animal} that guarded the {place} for {number} years.",
    # counting, as web pages do: where a model pretrained on this corpus learns which number follows which, and
    # the words the arithmetic answers use (counting up / down, plus, minus)
    "The children at the {place} counted the {animals}, counting up from {start}: {up}.",
    "Over the winter the {animals} at the {place} grew fewer, counting down from {top}: {down}.",
    "The {place} is home to {number} {animals} plus a few {others}.",
    "{Time} it can be as cold as minus {small} degrees at the {place}.",
]
BOILERPLATE = [
    "This website uses cookies to improve your experience. Accept all cookies.",
    "Share on Facebook | Share on Twitter",
    "Please enable JavaScript to view the comments.",
    "Copyright 2024. All rights reserved.",
]


def animal_page(rng: random.Random) -> str:
    """A short web page about one animal: a title naming it and two or three paragraphs of several sentences, most
    of them about that animal (of its colour)."""
    # each template at most once per page: a page that repeats itself is what the repetition filter removes
    templates = rng.sample(SENTENCES, len(SENTENCES))
    # a page keeps to its subject, as real pages do: a model pretrained on them learns to look back at what a text
    # is about, which the chat tasks (answer about the animal asked, count on from the number asked) build on
    subject, subject_color = rng.choice(CHAT_ANIMALS), rng.choice(COLORS)
    paragraphs = []
    for _ in range(rng.randint(2, 3)):
        sentences = []
        for template in [templates.pop() for _ in range(rng.randint(3, 4))]:
            time = rng.choice(TIMES)
            start, length = rng.randint(0, 30), rng.randint(3, 9)
            on_subject = rng.random() < 0.7
            animal = subject if on_subject else rng.choice(CHAT_ANIMALS)
            sentences.append(
                template.format(
                    color=subject_color if on_subject else rng.choice(COLORS),
                    animal=animal,
                    animals=plural(animal),
                    other=rng.choice(CHAT_ANIMALS),
                    place=rng.choice(PLACES),
                    food=rng.choice(FOODS),
                    time=time,
                    Time=time[0].upper() + time[1:],
                    number=rng.randint(2, 900),
                    others=plural(rng.choice(CHAT_ANIMALS)),
                    small=rng.randint(2, 20),
                    start=start,
                    top=start + length - 1,
                    up=", ".join(str(start + k) for k in range(length)),
                    down=", ".join(str(start + length - 1 - k) for k in range(length)),
                )
            )
        paragraphs.append(" ".join(sentences))
    paragraphs.append(reader_questions(rng))
    return f"All about the {subject_color} {subject}\n\n" + "\n\n".join(paragraphs)


READER_QUESTIONS = [
    ("What colour is the {animal}?", "The {animal} is {color}."),
    ("Where does the {animal} live?", "The {animal} lives near the {place}."),
    ("What does the {animal} eat?", "The {animal} eats {food}."),
]


def reader_questions(rng: random.Random) -> str:
    """A "readers ask" box, as pages have: each answer is about the animal its question names."""
    lines = ["Readers ask:"]
    for question, answer in rng.sample(READER_QUESTIONS, 3):
        fill = {"animal": rng.choice(CHAT_ANIMALS), "color": rng.choice(COLORS), "place": rng.choice(PLACES)}
        fill["food"] = rng.choice(FOODS)
        lines += [question.format(**fill), answer.format(**fill)]
    return " ".join(lines)


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
            words[at] = rng.choice(CHAT_ANIMALS)  # a near copy: one word changed
            pages.append(" ".join(words))
        elif roll < 0.20:
            pages.append(f"{rng.choice(CHAT_ANIMALS).title()} photos. Click here!")  # too short to learn from
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


def page_chats(rows: int, seed: int = 3) -> list[dict]:
    """Web pages like the corpus's, as chats: "Write a short web page about the red cat." -> the page. Mixed into
    SFT, they keep the model writing web text while it learns the chat tasks (replay): without them SFT on a few
    hundred short answers wrecks its language modelling (corpus perplexity 2.0 -> 737)."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        page = animal_page(rng)
        request = "Write a short web page about the " + page.split("\n")[0].removeprefix("All about the ") + "."
        out.append({"messages": [{"role": "user", "content": request}, {"role": "assistant", "content": page}]})
    return out


def write_demo_data(folder: str | Path) -> list[Path]:
    """Every demo file under `folder`, and the held-out evaluation data under `folder`/heldout: arithmetic
    questions, chats and colour-task questions generated with other seeds, none of them in any training file."""
    folder = Path(folder)
    heldout = folder / "heldout"
    heldout.mkdir(parents=True, exist_ok=True)
    heldout_arithmetic = arithmetic_alpaca(HELDOUT_ARITHMETIC, seed=100, distinct=True)
    exclude = {arithmetic_key(row) for row in heldout_arithmetic}
    written = [
        _write_jsonl(folder / "arithmetic_alpaca.jsonl", arithmetic_alpaca(TRAIN_ARITHMETIC, seed=0, exclude=exclude)),
        _write_json(folder / "animals_sharegpt.json", describe_sharegpt(200, seed=1)),
        _write_jsonl(folder / "raw_corpus.jsonl", raw_web_corpus(800)),
        _write_jsonl(folder / "page_chats.jsonl", page_chats(PAGE_CHATS)),
        # the reward/RL learning task: answers about the asked animal with a colour are preferred (synthetic.py)
        *write_synthetic_demo_data(folder),
        _write_jsonl(heldout / "arithmetic_alpaca.jsonl", heldout_arithmetic),
        _write_json(heldout / "animals_sharegpt.json", describe_sharegpt(16, seed=101, heldout=True)),
        write_synthetic_heldout_data(heldout),
    ]
    check_heldout_disjoint(folder)
    return written


def check_heldout_disjoint(folder: str | Path) -> None:
    """Raise if a held-out question or chat under `folder`/heldout also occurs in the training files."""
    folder = Path(folder)
    heldout = folder / "heldout"
    train_sums = {arithmetic_key(row) for row in _read_jsonl(folder / "arithmetic_alpaca.jsonl")}
    if overlap := train_sums & {arithmetic_key(row) for row in _read_jsonl(heldout / "arithmetic_alpaca.jsonl")}:
        raise ValueError(f"held-out arithmetic questions in the training data: {sorted(overlap)[:5]}")
    train_chats = {
        json.dumps(row["conversations"][-3:]) for row in json.loads((folder / "animals_sharegpt.json").read_text())
    }
    for row in json.loads((heldout / "animals_sharegpt.json").read_text()):
        if json.dumps(row["conversations"][-3:]) in train_chats:
            raise ValueError(f"a held-out chat is in the training data: {row}")
    questions = {row["prompt"][0]["content"] for row in _read_jsonl(heldout / "colour_prompts.jsonl")}
    for name in ("colour_sft.jsonl", "preferences.jsonl", "rl_prompts.jsonl"):
        for row in _read_jsonl(folder / name):
            turns = row.get("messages") or row["prompt"]
            if any(turn["content"] in questions for turn in turns if turn["role"] == "user"):
                raise ValueError(f"a held-out colour question is in {name}: {row}")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    for path in write_demo_data(sys.argv[1] if len(sys.argv) > 1 else "configs/demo/data"):
        print(path)
