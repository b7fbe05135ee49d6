"""Demo data of the task fine-tuning stage: three small synthetic tasks a tiny encoder visibly learns on a CPU in
about half a minute -- review sentiment from keywords (imbalanced: 3 classes), names and cities in template
sentences (NER, BIO tags), and "What colour is the X? / Where does it live? / What does it eat?" over a short story
(extractive QA, SQuAD-style answers).

Deterministic for a seed, so the committed files under configs/demo/data can be regenerated:
    python -m llm_recipes.data.task_demo configs/demo/data
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from pathlib import Path

from llm_recipes.data.demo import ANIMALS, COLORS, FOODS, PLACES, TIMES

# --------------------------------------------------------------------------------------------------------------
# Sentiment: the label follows the opinion words; the rest of the sentence is noise

OPINIONS = {
    "positive": ["wonderful", "great", "lovely", "amazing", "delightful", "excellent", "charming", "fantastic"],
    "negative": ["awful", "terrible", "boring", "dirty", "disappointing", "horrible", "sad", "dreadful"],
    "neutral": ["ordinary", "average", "unremarkable", "standard", "plain", "typical"],
}
NEGATED = {"positive": "negative", "negative": "positive"}  # a label and the opinions that, negated, express it
NEGATION_SHARE = 0.2
SENTIMENT_SHARES = {"positive": 0.5, "negative": 0.35, "neutral": 0.15}  # imbalanced on purpose (class_weights)
REVIEW_TEMPLATES = [
    "The {animal} show at the {place} was {opinion}.",
    "We visited the {place} {time} and the {animal} was {opinion}.",
    "Honestly, the tour of the {place} felt {opinion} to me.",
    "It was {opinion} to watch the {color} {animal} near the {place}.",
    "Our guide said the {animal} is {opinion} {time}, and she was right.",
    "The food at the {place} cafe was {opinion}.",
    "I would call the {color} {animal} exhibit {opinion}.",
    "{Time}, the walk along the {place} is {opinion}.",
]


def sentiment_rows(rows: int, seed: int = 0) -> list[dict[str, str]]:
    """{"text", "label"} reviews; the label is the class of the opinion word, or the opposite after "not"."""
    rng = random.Random(seed)
    labels, shares = zip(*SENTIMENT_SHARES.items(), strict=True)
    out = []
    for _ in range(rows):
        label = rng.choices(labels, weights=shares)[0]
        opinion = rng.choice(OPINIONS[label])
        if label in NEGATED and rng.random() < NEGATION_SHARE:
            # "not great" is negative: the model must read "not", not just the opinion word
            opinion = "not " + rng.choice(OPINIONS[NEGATED[label]])
        time = rng.choice(TIMES)
        text = rng.choice(REVIEW_TEMPLATES).format(
            animal=rng.choice(ANIMALS),
            place=rng.choice(PLACES),
            color=rng.choice(COLORS),
            opinion=opinion,
            time=time,
            Time=time[0].upper() + time[1:],
        )
        out.append({"text": text, "label": label})
    return out


# --------------------------------------------------------------------------------------------------------------
# NER: people (first name, sometimes a surname) and cities (some of several words) in template sentences

FIRST_NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Lena", "Omar"]
SURNAMES = ["Smith", "Garcia", "Novak", "Brown", "Meyer", "Rossi", "Tanaka", "Okafor"]
CITIES = [
    "Paris",
    "Berlin",
    "Lima",
    "Oslo",
    "Cairo",
    "Tokyo",
    "Madrid",
    "Vienna",
    "New York",
    "San Diego",
    "Buenos Aires",
    "Rio de Janeiro",
]
NER_TEMPLATES = [
    "{PER} lives in {LOC} .",
    "{PER} took the {color} {animal} to {LOC} {time} .",
    "In {LOC} , {PER} met {PER2} near the {place} .",
    "{PER} and {PER2} flew from {LOC} to {LOC2} .",
    "The {animal} of {PER} sleeps by the {place} .",
    "Yesterday {PER} wrote a letter to {PER2} about {LOC} .",
    "People in {LOC} say the {animal} is {color} .",
]


def _entity(words: str, entity_type: str) -> list[tuple[str, str]]:
    parts = words.split()
    return [(part, ("B-" if index == 0 else "I-") + entity_type) for index, part in enumerate(parts)]


def ner_rows(rows: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """{"tokens", "ner_tags"} rows with BIO tags for PER and LOC."""
    rng = random.Random(seed)

    def person() -> str:
        name = rng.choice(FIRST_NAMES)
        return f"{name} {rng.choice(SURNAMES)}" if rng.random() < 0.4 else name

    out = []
    for _ in range(rows):
        first_city, second_city = rng.sample(CITIES, 2)
        slots = {
            "PER": _entity(person(), "PER"),
            "PER2": _entity(person(), "PER"),
            "LOC": _entity(first_city, "LOC"),
            "LOC2": _entity(second_city, "LOC"),
        }
        fillers = {
            "color": rng.choice(COLORS),
            "animal": rng.choice(ANIMALS),
            "place": rng.choice(PLACES),
            "time": rng.choice(TIMES),
        }
        tokens, tags = [], []
        for word in rng.choice(NER_TEMPLATES).split():
            slot = word.strip("{}")
            if word.startswith("{") and slot in slots:
                for token, tag in slots[slot]:
                    tokens.append(token)
                    tags.append(tag)
            else:
                for token in word.format(**fillers).split():
                    tokens.append(token)
                    tags.append("O")
        out.append({"tokens": tokens, "ner_tags": tags})
    return out


# --------------------------------------------------------------------------------------------------------------
# Extractive QA: what colour is the animal, where does it live, what does it eat? A story gives the asked-about
# animal all three and another animal one of them, so the answer's type alone is not always enough.

STORY_FACTS = {
    "colour": ("The {animal} is {value}.", "What colour is the {animal}?"),
    "place": ("The {animal} lives near the {value}.", "Where does the {animal} live?"),
    "food": ("The {animal} eats {value}.", "What does the {animal} eat?"),
}


def qa_rows(rows: int, seed: int = 0) -> list[dict]:
    """SQuAD-style rows: {"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}."""
    rng = random.Random(seed)
    values = {"colour": COLORS, "place": PLACES, "food": FOODS}
    out = []
    for index in range(rows):
        animal, other = rng.sample(ANIMALS, 2)
        facts = [(animal, kind, rng.choice(values[kind])) for kind in STORY_FACTS]
        distractor_kind = rng.choice(list(STORY_FACTS))
        taken = next(value for _, kind, value in facts if kind == distractor_kind)
        distractor = rng.choice([value for value in values[distractor_kind] if value != taken])
        facts.append((other, distractor_kind, distractor))
        rng.shuffle(facts)
        asked = rng.choice([fact for fact in facts if fact[0] == animal])
        sentences, answer = [], None
        for fact in facts:
            subject, kind, value = fact
            before_value = STORY_FACTS[kind][0].split("{value}")[0].format(animal=subject)
            if fact == asked:
                start = sum(len(sentence) + 1 for sentence in sentences) + len(before_value)
                answer = {"text": [value], "answer_start": [start]}
            sentences.append(STORY_FACTS[kind][0].format(animal=subject, value=value))
        out.append(
            {
                "id": f"story-{index:04d}",
                "question": STORY_FACTS[asked[1]][1].format(animal=animal),
                "context": " ".join(sentences),
                "answers": answer,
            }
        )
    return out


# --------------------------------------------------------------------------------------------------------------


def _csv(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def write_task_demo_data(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "sentiment.csv": _csv(sentiment_rows(800)),
        "ner.jsonl": _jsonl(ner_rows(500)),
        "qa.jsonl": _jsonl(qa_rows(400)),
    }
    paths = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for path in write_task_demo_data(sys.argv[1] if len(sys.argv) > 1 else "configs/demo/data"):
        print(path)
