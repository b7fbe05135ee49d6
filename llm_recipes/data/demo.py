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


def write_demo_data(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alpaca = folder / "arithmetic_alpaca.jsonl"
    alpaca.write_text("".join(json.dumps(row) + "\n" for row in arithmetic_alpaca(400)), encoding="utf-8")
    sharegpt = folder / "animals_sharegpt.json"
    sharegpt.write_text(json.dumps(describe_sharegpt(200), indent=1) + "\n", encoding="utf-8")
    return [alpaca, sharegpt]


if __name__ == "__main__":
    for path in write_demo_data(sys.argv[1] if len(sys.argv) > 1 else "configs/demo/data"):
        print(path)
