"""The QA demo's README example is one the demo data teaches (the asked-about animal alone has a fact of the asked
kind) and the README's held-out figures count the stories the generator makes. Training the demo model takes longer
than a unit test should, so the model's answers themselves are measured by hand (README, "Task fine-tuning")."""

from __future__ import annotations

import json
import re

from conftest import DEMO_DATA, PROJECT

from llm_recipes.data.task_demo import STORY_FACTS, qa_rows

README = PROJECT / "README.md"


def _fact_pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(r"\{animal\}", r"(\w+)").replace(r"\{value\}", r"([\w ]+)"))


SENTENCES = {kind: _fact_pattern(sentence) for kind, (sentence, _) in STORY_FACTS.items()}
QUESTIONS = {kind: _fact_pattern(question) for kind, (_, question) in STORY_FACTS.items()}


def story_facts(context: str) -> list[tuple[str, str, str]]:
    """(animal, kind, value) of every sentence of a demo story; fails on a sentence the generator does not write."""
    facts = []
    for sentence in re.findall(r"[^.]+\.", context):
        matches = [(kind, SENTENCES[kind].fullmatch(sentence.strip())) for kind in STORY_FACTS]
        kind, match = next((kind, match) for kind, match in matches if match)
        facts.append((match.group(1), kind, match.group(2)))
    return facts


def asked(question: str) -> tuple[str, str]:
    """(kind, animal) a demo question asks about."""
    return next((kind, match.group(1)) for kind, pattern in QUESTIONS.items() if (match := pattern.fullmatch(question)))


def others_of_the_asked_kind(question: str, context: str) -> int:
    kind, animal = asked(question)
    return sum(1 for subject, fact_kind, _ in story_facts(context) if fact_kind == kind and subject != animal)


def readme_example() -> tuple[str, str, str]:
    """(question, context, answer shown) of the README's QA pipeline example."""
    match = re.search(
        r'question="([^"]+)", context="([^"]+)"\n\)  # \{\'answer\': \'(\w+)\'', README.read_text(encoding="utf-8")
    )
    assert match, "the README's QA example (question=..., context=..., its answer) was not found"
    return match.group(1), match.group(2), match.group(3)


def test_the_readme_example_is_a_story_the_demo_data_teaches():
    question, context, answer = readme_example()
    kind, animal = asked(question)
    facts = story_facts(context)
    assert (animal, kind, answer) in facts
    assert len({subject for subject, _, _ in facts}) > 1  # another animal is in the story ...
    assert others_of_the_asked_kind(question, context) == 0  # ... without a fact of the asked kind
    rows = [json.loads(line) for line in (DEMO_DATA / "qa.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows == qa_rows(400)  # the committed demo data is the generator's
    like_the_example = [row for row in rows if others_of_the_asked_kind(row["question"], row["context"]) == 0]
    assert len(like_the_example) > len(rows) / 2


def test_the_readme_figures_count_the_held_out_stories_of_each_kind():
    text = " ".join(README.read_text(encoding="utf-8").split())
    match = re.search(
        r"measured on (\d+) stories.*?qa_rows\((\d+), seed=(\d+)\).*?(\d+) of (\d+) when .*?(\d+) of (\d+)", text
    )
    assert match, "the README's held-out QA figures were not found"
    count, rows_arg, seed, _, alone, _, shared = (int(group) for group in match.groups())
    held_out = qa_rows(rows_arg, seed=seed)
    assert count == rows_arg == len(held_out)
    shared_kind = sum(others_of_the_asked_kind(row["question"], row["context"]) > 0 for row in held_out)
    assert (alone, shared) == (len(held_out) - shared_kind, shared_kind)
    for row in held_out:
        start, text_answer = row["answers"]["answer_start"][0], row["answers"]["text"][0]
        assert row["context"][start : start + len(text_answer)] == text_answer
