"""Preference data in every shape -> prompt/chosen/rejected; RL prompts from any format (the synthetic task:
test_synthetic.py)."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from llm_recipes.data.formats import DatasetFormatError
from llm_recipes.data.preferences import (
    detect_preference_format,
    load_preference_data,
    parse_hh_transcript,
    to_preference_columns,
    to_prompt_column,
)


def _convert(rows, data_format="auto"):
    return to_preference_columns(Dataset.from_list(rows), data_format)


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


# ---------------------------------------------------------------------------------------------------------------
# The shapes


def test_explicit_prompt_strings_stay_strings_and_extra_columns_go():
    rows = [
        {"prompt": "Sky colour?", "chosen": " Blue.", "rejected": " Green.", "id": 1, "source": "x"},
        {"prompt": "Grass colour?", "chosen": " Green.", "rejected": " Red.", "id": 2, "source": "y"},
    ]
    converted, report = _convert(rows)
    assert report.source_format == "prompt_chosen_rejected"
    assert (report.rows_in, report.rows_out, report.dropped) == (2, 2, {})
    assert converted.column_names == ["prompt", "chosen", "rejected"]
    assert converted[1] == {"prompt": "Grass colour?", "chosen": " Green.", "rejected": " Red."}


def test_explicit_prompt_mixing_strings_and_messages_becomes_all_messages():
    rows = [{"prompt": "Sky colour?", "chosen": [assistant("Blue.")], "rejected": [assistant("Green.")]}]
    converted, _ = _convert(rows)
    assert converted[0] == {
        "prompt": [user("Sky colour?")],
        "chosen": [assistant("Blue.")],
        "rejected": [assistant("Green.")],
    }


def test_implicit_prompt_text_is_split_between_words():
    rows = [
        {"chosen": "Q: sky colour? A: It is blue", "rejected": "Q: sky colour? A: It is black"},
        {"chosen": "Say hi. Hello there!", "rejected": "Say hi. Go away."},
    ]
    converted, report = _convert(rows)
    assert report.source_format == "implicit_prompt"
    # "blue" and "black" share "bl": the prompt stops at the word boundary, the answers keep their space
    assert converted[0] == {"prompt": "Q: sky colour? A: It is", "chosen": " blue", "rejected": " black"}
    assert converted[1] == {"prompt": "Say hi.", "chosen": " Hello there!", "rejected": " Go away."}
    for row, original in zip(converted, rows, strict=True):
        assert row["prompt"] + row["chosen"] == original["chosen"]  # nothing lost, nothing added


def test_implicit_prompt_conversations_share_whole_turns():
    rows = [
        {
            "chosen": [user("Hi"), assistant("Hello!"), user("Sky colour?"), assistant("Blue.")],
            "rejected": [user("Hi"), assistant("Hello!"), user("Sky colour?"), assistant("Green.")],
        },
        {"chosen": [assistant("Unprompted.")], "rejected": [assistant("Also unprompted.")]},
    ]
    converted, report = _convert(rows)
    assert converted[0]["prompt"] == [user("Hi"), assistant("Hello!"), user("Sky colour?")]
    assert converted[0]["chosen"] == [assistant("Blue.")]
    assert report.dropped == {"no shared prompt": 1}


def test_sharegpt_preferences_from_the_shared_demo_file(shared_data):
    raw = json.loads((shared_data / "dpo_en_demo.json").read_text())
    converted, report = to_preference_columns(Dataset.from_list(raw))
    assert report.source_format == "sharegpt"
    assert report.rows_out == len(raw) == 300
    for index in (0, 1, 150, 299):
        row, source = converted[index], raw[index]
        # every ShareGPT turn is kept in order with its role mapped; the answers are single assistant turns
        roles = {"human": "user", "gpt": "assistant", "system": "system"}
        assert row["prompt"] == [{"role": roles[t["from"]], "content": t["value"]} for t in source["conversations"]]
        assert row["chosen"] == [assistant(source["chosen"]["value"])]
        assert row["rejected"] == [assistant(source["rejected"]["value"])]
    assert any(row["prompt"][0]["role"] == "system" for row in converted)


def test_sharegpt_system_column_is_put_first():
    rows = [
        {
            "conversations": [{"from": "human", "value": "Hi"}],
            "system": "Be brief.",
            "chosen": {"from": "gpt", "value": "Hello."},
            "rejected": {"from": "gpt", "value": "Greetings to you, dear friend."},
        }
    ]
    converted, _ = _convert(rows)
    assert converted[0]["prompt"] == [{"role": "system", "content": "Be brief."}, user("Hi")]


HH_CHOSEN = (
    "\n\nHuman: What colour is the sky?\n\nAssistant: Do you mean by day?\n\nHuman: Yes.\n\nAssistant: It is blue."
)
HH_REJECTED = (
    "\n\nHuman: What colour is the sky?\n\nAssistant: Do you mean by day?\n\nHuman: Yes.\n\nAssistant: No idea."
)


def test_hh_rlhf_transcripts_become_conversations_with_a_margin():
    rows = [
        {"chosen": HH_CHOSEN, "rejected": HH_REJECTED, "margin": 2},
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.",
            "margin": 0.5,
        },
        # the last assistant turn is empty: nothing to compare
        {"chosen": "\n\nHuman: Hi\n\nAssistant:", "rejected": "\n\nHuman: Hi\n\nAssistant: Hey.", "margin": 1.0},
    ]
    converted, report = _convert(rows)
    assert report.source_format == "hh_rlhf"
    assert report.dropped == {"empty response": 1}
    assert converted[0]["prompt"] == [user("What colour is the sky?"), assistant("Do you mean by day?"), user("Yes.")]
    assert converted[0]["chosen"] == [assistant("It is blue.")]
    assert converted[0]["rejected"] == [assistant("No idea.")]
    assert converted["margin"] == [2.0, 0.5]
    assert converted.features["margin"].dtype == "float32"


def test_parse_hh_transcript_keeps_turns_in_order():
    assert parse_hh_transcript("\n\nHuman: a\nb\n\nAssistant: c\n\nHuman: d") == [
        user("a\nb"),
        assistant("c"),
        user("d"),
    ]


def test_margin_is_kept_for_explicit_pairs_and_rows_without_one_are_dropped():
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "margin": 1},
        {"prompt": "q", "chosen": "c", "rejected": "d", "margin": None},
    ]
    converted, report = _convert(rows)
    assert converted.column_names == ["prompt", "chosen", "rejected", "margin"]
    assert converted["margin"] == [1.0]
    assert report.dropped == {"missing margin": 1}


def test_unusable_pairs_are_dropped_and_counted():
    rows = [
        {"prompt": "p", "chosen": "same", "rejected": "same"},
        {"prompt": "p", "chosen": "  ", "rejected": "b"},
        {"prompt": None, "chosen": "a", "rejected": "b"},
        {"prompt": "p", "chosen": "a", "rejected": "b"},
    ]
    converted, report = _convert(rows)
    assert len(converted) == 1
    assert report.dropped == {"chosen equals rejected": 1, "empty response": 1, "missing prompt": 1}


# ---------------------------------------------------------------------------------------------------------------
# Detection and errors


def test_detection_by_columns_and_first_row():
    assert detect_preference_format(["conversations", "chosen", "rejected"], {}) == "sharegpt"
    assert detect_preference_format(["prompt", "chosen", "rejected", "margin"], {}) == "prompt_chosen_rejected"
    assert detect_preference_format(["chosen", "rejected"], {"chosen": HH_CHOSEN}) == "hh_rlhf"
    assert detect_preference_format(["chosen", "rejected"], {"chosen": "plain text"}) == "implicit_prompt"


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["prompt", "chosen"], r"needs 'rejected'"),
        (["prompt", "completion", "label"], r"needs 'chosen' and 'rejected' \(this looks like unpaired KTO data"),
        (["messages"], r"this looks like SFT data"),
    ],
)
def test_an_error_names_what_is_missing(columns, message):
    with pytest.raises(DatasetFormatError, match=message):
        _convert([dict.fromkeys(columns, "x")])


def test_a_forced_format_checks_its_columns_and_unknown_formats_are_named():
    with pytest.raises(DatasetFormatError, match=r"'sharegpt' needs column\(s\) \['conversations'\]"):
        _convert([{"chosen": "a", "rejected": "b"}], "sharegpt")
    with pytest.raises(DatasetFormatError, match="unknown preference data_format 'dpo'"):
        _convert([{"chosen": "a", "rejected": "b"}], "dpo")


def test_forced_hh_format_drops_rows_that_are_not_transcripts():
    converted, report = _convert(
        [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}, {"chosen": "a", "rejected": "b"}], "hh_rlhf"
    )
    assert len(converted) == 1 and report.dropped == {"not an HH-RLHF transcript": 1}


# ---------------------------------------------------------------------------------------------------------------
# Loading for the stages, RL prompts


def test_load_preference_data_holds_out_eval_pairs(tmp_path):
    from llm_recipes.data.synthetic import synthetic_preferences

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in synthetic_preferences(50)))
    data = load_preference_data(str(path), eval_size=10, max_train_samples=30, seed=1)
    assert (len(data.train), len(data.eval)) == (30, 10)
    assert not data.conversational
    train_rows = {json.dumps(row, sort_keys=True) for row in data.train}
    assert not any(json.dumps(row, sort_keys=True) in train_rows for row in data.eval)


def test_rl_prompts_from_every_kind_of_data():
    prompts, report = to_prompt_column(
        Dataset.from_list([{"prompt": "Hi", "completion": " there"}, {"prompt": " ", "completion": "x"}])
    )
    assert prompts["prompt"] == ["Hi"] and report.dropped == {"empty prompt": 1}

    alpaca = Dataset.from_list([{"instruction": "Add 1 and 2.", "input": "", "output": "3"}])
    prompts, _ = to_prompt_column(alpaca)
    assert prompts["prompt"] == [[user("Add 1 and 2.")]]

    chats = Dataset.from_list(
        [
            {"messages": [user("Hi"), assistant("Hello"), user("Sky?"), assistant("Blue")]},
            {"messages": [assistant("x")]},
        ]
    )
    prompts, report = to_prompt_column(chats)
    assert prompts["prompt"] == [[user("Hi"), assistant("Hello"), user("Sky?")]]
    assert report.dropped == {"no prompt before the answer": 1}

    prompts, _ = to_prompt_column(Dataset.from_list([{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}]))
    assert prompts["prompt"] == [[user("What colour is the sky?"), assistant("Do you mean by day?"), user("Yes.")]]

    with pytest.raises(DatasetFormatError, match="RL needs prompts"):
        to_prompt_column(Dataset.from_list([{"text": "just text"}]))


# ---------------------------------------------------------------------------------------------------------------
# Rows of several shapes in one file


def _jsonl_dataset(path, rows):
    from datasets import load_dataset

    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return load_dataset("json", data_files=str(path), split="train")  # every row gets every column


@pytest.mark.parametrize("hh_first", [True, False])
def test_hh_transcripts_and_explicit_pairs_in_one_file_are_each_read(tmp_path, hh_first):
    hh = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}
    explicit = {"prompt": "Name an animal.", "chosen": "A lion.", "rejected": "A rock."}
    rows = [hh, explicit] * 2 if hh_first else [explicit, hh] * 2
    converted, report = to_preference_columns(_jsonl_dataset(tmp_path / "pairs.jsonl", rows))

    assert report.rows_out == 4 and report.dropped == {}
    assert report.formats == {"hh_rlhf": 2, "prompt_chosen_rejected": 2}
    assert report.describe().startswith("4/4 (") and "hh_rlhf 2" in report.describe()
    # one conversational shape makes every pair a conversation
    by_prompt = {row["prompt"][-1]["content"]: row for row in converted}
    assert by_prompt["Hi"]["chosen"] == [assistant("Hello!")]
    assert by_prompt["Name an animal."]["prompt"] == [user("Name an animal.")]
    assert by_prompt["Name an animal."]["rejected"] == [assistant("A rock.")]


def test_a_format_error_names_the_file(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"messages": [user("Hi"), assistant("Hello")]}) + "\n")
    with pytest.raises(DatasetFormatError, match=rf"^dataset '{path}': dataset has columns \['messages'\]"):
        load_preference_data(str(path))
