"""The demo's synthetic tasks: the colour task's true reward (the asked animal and a colour), its data, and held-out
evaluation data that no training file contains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from llm_recipes.data import demo
from llm_recipes.data.synthetic import (
    ANIMALS,
    COLORS,
    HELDOUT_PROMPTS,
    check_answer,
    has_color,
    heldout_prompts,
    synthetic_preferences,
    synthetic_prompts,
    synthetic_reward,
    synthetic_sft_rows,
    true_reward,
    write_synthetic_demo_data,
    wrong_animal,
)

PROJECT = Path(__file__).resolve().parents[1]
DEMO_DATA = PROJECT / "configs" / "demo" / "data"


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# ---------------------------------------------------------------------------------------------------------------
# The true reward


def test_true_reward_needs_the_asked_animal_and_a_colour():
    assert true_reward("Describe the cat.", "The cat is purple and lives near the beach.") == 1.0
    # the reward hack the demo showed: any animal with a colour
    assert true_reward("Describe the cat.", "The horse is purple and lives near the beach.") == 0.0
    assert true_reward("Describe the cat.", "The cat is calm and lives near the beach.") == 0.0  # no colour
    assert true_reward("Describe the cat.", "It is purple.") == 0.0  # about no animal
    assert true_reward("Describe the cat.", "The cat and the dog are red.") == 0.0  # not only the cat
    assert true_reward("What is 3 plus 4?", "The fox is purple.") == 0.0  # no animal asked
    # case, plurals and chat messages
    assert true_reward([user("Tell me about the mouse.")], [assistant("Mice are RED.")]) == 1.0
    assert true_reward([user("Hi"), assistant("Hello"), user("And the owl?")], "The owl is white.") == 1.0
    assert {c for c in COLORS if has_color(f"it is {c}")} == set(COLORS)


def test_check_answer_says_what_is_right_and_wrong():
    check = check_answer("What is the lion like?", "The horse is blue. The lion is not.")
    assert (check.asked_animal, check.animals, check.has_color) == ("lion", ("horse", "lion"), True)
    assert check.wrong_animal and not check.about_asked_animal and not check.good
    right = check_answer([user("Describe the fish.")], "The fish is green.")
    assert right.about_asked_animal and not right.wrong_animal and right.good


def test_reward_functions_take_trl_lists():
    prompts = ["Describe the cat.", "Describe the dog.", "Describe the bear."]
    answers = ["The cat is red.", "The cat is red.", "The bear is calm."]
    assert synthetic_reward(prompts, answers) == [1.0, 0.0, 0.0]
    assert synthetic_reward(prompts=[[user(p)] for p in prompts], completions=[[assistant(a)] for a in answers]) == [
        1.0,
        0.0,
        0.0,
    ]
    assert wrong_animal(prompts, answers, completion_ids=None) == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        synthetic_reward(prompts, answers[:2])


# ---------------------------------------------------------------------------------------------------------------
# The task's data


def test_preferences_reject_the_wrong_animal_and_the_missing_colour():
    pairs = synthetic_preferences(300)
    assert pairs == synthetic_preferences(300)  # deterministic
    assert all(true_reward(row["prompt"], row["chosen"]) == 1.0 for row in pairs)
    assert all(true_reward(row["prompt"], row["rejected"]) == 0.0 for row in pairs)
    kinds = [check_answer(row["prompt"], row["rejected"]) for row in pairs]
    wrong = sum(kind.wrong_animal and kind.has_color for kind in kinds)
    no_colour = sum(kind.about_asked_animal and not kind.has_color for kind in kinds)
    assert wrong + no_colour == 300 and 120 < wrong < 180  # about half each
    # both ways of missing the colour: another adjective, and none
    assert any(" is " in row["rejected"] for row, kind in zip(pairs, kinds, strict=True) if not kind.has_color)
    assert any(" is " not in row["rejected"] for row, kind in zip(pairs, kinds, strict=True) if not kind.has_color)


def test_sft_rows_answer_about_the_asked_animal_half_with_a_colour():
    rows = synthetic_sft_rows(100)
    checks = [check_answer(row["prompt"], row["completion"]) for row in rows]
    assert all(check.about_asked_animal for check in checks)
    assert sum(check.good for check in checks) == 50  # the SFT policy starts at half the maximum reward


def test_training_data_never_asks_a_heldout_question():
    questions = heldout_prompts()
    assert len(questions) == len(set(questions)) == 3 * len(ANIMALS) and set(questions) == HELDOUT_PROMPTS
    assert {check_answer(q, "").asked_animal for q in questions} == set(ANIMALS)
    asked = {row["prompt"] for row in synthetic_preferences(2000)} | set(synthetic_prompts(2000))
    asked |= {row["prompt"] for row in synthetic_sft_rows(2000)}
    assert len(asked) == 5 * len(ANIMALS) and not asked & HELDOUT_PROMPTS  # every other phrasing, none held out


def test_written_task_files(tmp_path):
    from llm_recipes.data.formats import to_standard_columns
    from llm_recipes.data.preferences import to_preference_columns, to_prompt_column

    pairs = synthetic_preferences(1200, seed=0)
    for conversational in (False, True):
        folder = tmp_path / str(conversational)
        written = write_synthetic_demo_data(folder, conversational=conversational)
        assert sorted(p.name for p in written) == ["colour_sft.jsonl", "preferences.jsonl", "rl_prompts.jsonl"]
        converted, report = to_preference_columns(Dataset.from_json(str(folder / "preferences.jsonl")))
        assert report.source_format == "prompt_chosen_rejected" and report.rows_out == 1200
        prompts, _ = to_prompt_column(Dataset.from_json(str(folder / "rl_prompts.jsonl")))
        sft, sft_report = to_standard_columns(Dataset.from_json(str(folder / "colour_sft.jsonl")))
        assert len(prompts) == 128 and len(sft) == 400
        if conversational:
            assert converted[0]["chosen"] == [assistant(pairs[0]["chosen"].strip())]
            assert prompts[0]["prompt"] == [user(synthetic_prompts(1, seed=1)[0])]
            assert sft_report.source_format == "messages"  # mixes with the demo's other chat data
        else:
            assert converted[0] == pairs[0] and isinstance(prompts[0]["prompt"], str)
            assert sft_report.source_format == "prompt_completion"


# ---------------------------------------------------------------------------------------------------------------
# The demo's files and their held-out part


def test_arithmetic_answers_count_and_heldout_questions_are_new():
    assert demo.arithmetic_answer("plus", 3, 2) == "Counting 2 up from 3: 3, 4, 5. So 3 plus 2 is 5."
    assert demo.arithmetic_answer("minus", 3, 0) == "Counting 0 down from 3: 3. So 3 minus 0 is 3."
    heldout = demo.arithmetic_alpaca(60, seed=100, distinct=True)
    keys = [demo.arithmetic_key(row) for row in heldout]
    assert len(set(keys)) == 60
    train = demo.arithmetic_alpaca(400, seed=0, exclude=set(keys))
    assert not {demo.arithmetic_key(row) for row in train} & set(keys)
    for op, a, b in keys:
        assert 0 <= a <= 20 and 0 <= b <= 9 and (op == "plus" or b <= a)


def test_committed_demo_data_is_what_the_generator_writes(tmp_path):
    """configs/demo/data is regenerated, not hand-edited: `python -m llm_recipes.data.demo configs/demo/data`."""
    written = demo.write_demo_data(tmp_path)
    for path in written:
        relative = path.relative_to(tmp_path)
        assert path.read_bytes() == (DEMO_DATA / relative).read_bytes(), f"{relative}: regenerate the demo data"
    names = {str(path.relative_to(tmp_path)) for path in written}
    assert {"heldout/arithmetic_alpaca.jsonl", "heldout/animals_sharegpt.json", "heldout/colour_prompts.jsonl"} <= names


def test_heldout_data_is_disjoint_from_training_data(tmp_path):
    demo.check_heldout_disjoint(DEMO_DATA)
    heldout = [json.loads(line) for line in (DEMO_DATA / "heldout" / "colour_prompts.jsonl").read_text().splitlines()]
    assert [row["prompt"][0]["content"] for row in heldout] == heldout_prompts()
    assert all(check_answer(row["prompt"], "").asked_animal == row["animal"] for row in heldout)

    # a held-out question, sum or chat copied into training data is caught
    demo.write_demo_data(tmp_path)
    leaks = [
        ("colour_sft.jsonl", {"messages": [user(heldout_prompts()[0]), assistant("The cat is red.")]}),
        ("arithmetic_alpaca.jsonl", json.loads((tmp_path / "heldout" / "arithmetic_alpaca.jsonl").open().readline())),
    ]
    for name, row in leaks:
        folder = tmp_path / name.split(".")[0]
        demo.write_demo_data(folder)
        with (folder / name).open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        with pytest.raises(ValueError, match="held-out"):
            demo.check_heldout_disjoint(folder)
    chats = json.loads((tmp_path / "animals_sharegpt.json").read_text())
    chats.append(json.loads((tmp_path / "heldout" / "animals_sharegpt.json").read_text())[0])
    (tmp_path / "animals_sharegpt.json").write_text(json.dumps(chats))
    with pytest.raises(ValueError, match="held-out chat"):
        demo.check_heldout_disjoint(tmp_path)
