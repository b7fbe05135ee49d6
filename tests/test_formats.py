"""Tests for llm_recipes.data.formats: format detection and conversion to TRL's standard columns."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from llm_recipes.data.formats import (
    FORMATS,
    DatasetFormatError,
    FormatReport,
    detect_format,
    to_standard_columns,
)

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _quiet_progress_bars():
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    yield
    if was_enabled:
        datasets.enable_progress_bars()


def load_real(name: str) -> datasets.Dataset:
    path = DATA_DIR / name
    if not path.is_file():
        pytest.skip(f"real test data {path} is absent (expected the shared data folder next to the project)")
    return datasets.load_dataset("json", data_files=str(path), split="train")


def roles(messages: list[dict[str, str]]) -> list[str]:
    return [m["role"] for m in messages]


# --- detect_format -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alpaca_en_demo.json", "alpaca"),
        ("identity.json", "alpaca"),
        ("dpo_en_demo.json", "sharegpt"),
        ("kto_en_demo.json", "messages"),
        ("c4_demo.jsonl", "text"),
    ],
)
def test_detect_format_on_real_files(name: str, expected: str) -> None:
    assert detect_format(load_real(name).column_names) == expected


def test_detect_format_synthetic_columns() -> None:
    assert detect_format(["prompt", "completion", "id"]) == "prompt_completion"
    # Alpaca wins over a stray text column: Alpaca dumps often carry one.
    assert detect_format(["instruction", "input", "output", "text"]) == "alpaca"
    assert set(FORMATS) == {"alpaca", "sharegpt", "messages", "prompt_completion", "text"}


def test_unknown_columns_error_names_columns_and_formats() -> None:
    with pytest.raises(DatasetFormatError) as excinfo:
        detect_format(["foo", "bar"])
    message = str(excinfo.value)
    assert "\n" not in message
    assert "['foo', 'bar']" in message
    for fragment in (
        "alpaca (instruction, output)",
        "sharegpt (conversations)",
        "messages (messages)",
        "prompt_completion (prompt, completion)",
        "text (text)",
        "set data_format and text_field",
    ):
        assert fragment in message
    assert isinstance(excinfo.value, ValueError)


def test_near_miss_error_says_what_is_missing() -> None:
    with pytest.raises(DatasetFormatError, match="alpaca needs 'output'"):
        detect_format(["instruction", "input"])
    with pytest.raises(DatasetFormatError, match="prompt_completion needs 'completion'"):
        to_standard_columns(datasets.Dataset.from_dict({"prompt": ["p"], "answer": ["a"]}))


# --- alpaca --------------------------------------------------------------------------------------


def test_alpaca_real_file() -> None:
    raw = load_real("alpaca_en_demo.json")
    converted, report = to_standard_columns(raw)

    assert converted.column_names == ["messages"]
    assert report == FormatReport(source_format="alpaca", rows_in=999, rows_out=999, dropped={})
    index = next(i for i, row in enumerate(raw) if row["input"].strip())
    row, messages = raw[index], converted[index]["messages"]
    assert roles(messages) == ["user", "assistant"]
    assert messages[0]["content"] == f"{row['instruction']}\n\n{row['input']}".strip()
    assert messages[-1] == {"role": "assistant", "content": row["output"].strip()}
    assert set(messages[0]) == {"role", "content"}


def test_alpaca_without_input_is_just_the_instruction() -> None:
    raw = load_real("identity.json")
    converted, _ = to_standard_columns(raw, "alpaca")
    assert converted[0]["messages"][0] == {"role": "user", "content": raw[0]["instruction"].strip()}
    assert "{{name}}" in converted[0]["messages"][1]["content"]  # placeholders are not our business


def test_alpaca_system_and_history() -> None:
    raw = datasets.Dataset.from_dict(
        {
            "instruction": ["  And now?  ", "Hi"],
            "input": ["", "  "],
            "output": [" Now 3. ", "Hello"],
            "system": ["You count.", ""],
            "history": [[["One?", "1"], ["Two?", "2"]], []],
        }
    )
    converted, report = to_standard_columns(raw)

    assert report.rows_out == 2
    assert converted[0]["messages"] == [
        {"role": "system", "content": "You count."},
        {"role": "user", "content": "One?"},
        {"role": "assistant", "content": "1"},
        {"role": "user", "content": "Two?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "Now 3."},
    ]
    # Empty system and whitespace-only input add nothing.
    assert converted[1]["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]


def test_alpaca_drops_empty_responses() -> None:
    raw = datasets.Dataset.from_dict(
        {
            "instruction": ["a", "b", "c", "d"],
            "input": ["", "", "", ""],
            "output": ["ok", "", None, "   "],
        }
    )
    converted, report = to_standard_columns(raw)
    assert report.dropped == {"empty response": 3}
    assert (report.rows_in, report.rows_out) == (4, 1)
    assert converted[0]["messages"][-1]["content"] == "ok"


# --- sharegpt ------------------------------------------------------------------------------------


def test_sharegpt_real_dpo_file_appends_chosen() -> None:
    raw = load_real("dpo_en_demo.json")
    converted, report = to_standard_columns(raw)

    assert report.source_format == "sharegpt"
    assert report.rows_out == raw.num_rows == 300
    assert converted.column_names == ["messages"]
    speaker_to_role = {"human": "user", "gpt": "assistant", "system": "system"}
    for row, out in zip(raw, converted, strict=True):
        messages = out["messages"]
        assert messages[-1] == {"role": "assistant", "content": row["chosen"]["value"].strip()}
        assert roles(messages[:-1]) == [speaker_to_role[t["from"]] for t in row["conversations"]]
        assert "rejected" not in out
    # The file has conversations that open with a system turn; they must survive as system messages.
    assert any(out["messages"][0]["role"] == "system" for out in converted)


def test_sharegpt_role_mapping_and_system_column() -> None:
    raw = [
        {
            "conversations": [
                {"from": "human", "value": "weather?"},
                {"from": "function_call", "value": '{"name": "weather"}'},
                {"from": "observation", "value": "sunny"},
                {"from": "chatgpt", "value": "It is sunny."},
            ],
            "system": "Be brief.",
            "tools": "[]",
        },
        {
            "conversations": [
                {"from": "user", "value": "hi"},
                {"from": "bard", "value": "hello"},
            ],
            "system": None,
            "tools": None,
        },
    ]
    converted, report = to_standard_columns(datasets.Dataset.from_list(raw))

    assert report.dropped == {}
    # a tools column makes it tool data (issue 19): the call becomes the assistant's tool_calls, no longer its text
    assert converted.column_names == ["messages", "tools"]
    assert roles(converted[0]["messages"]) == ["system", "user", "assistant", "tool", "assistant"]
    assert converted[0]["messages"][2]["tool_calls"] == [
        {"type": "function", "function": {"name": "weather", "arguments": {}}}
    ]
    assert converted[0]["messages"][0]["content"] == "Be brief."
    assert roles(converted[1]["messages"]) == ["user", "assistant"]


def test_sharegpt_drop_reasons() -> None:
    raw = [
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]},
        {"conversations": [{"from": "human", "value": "q"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "  "}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": None}]},
        {"conversations": [{"from": None, "value": "q"}, {"from": "gpt", "value": "a"}]},
        {"conversations": []},
    ]
    converted, report = to_standard_columns(datasets.Dataset.from_list(raw))

    assert report.dropped == {"no assistant turn": 3, "malformed turn": 2, "unknown role": 1}
    assert (report.rows_in, report.rows_out) == (7, 1)
    assert converted[0]["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]


def test_sharegpt_accepts_role_content_turns_and_string_chosen() -> None:
    raw = datasets.Dataset.from_list(
        [
            {"conversations": [{"role": "user", "content": "q"}], "chosen": "good", "rejected": "bad"},
            {"conversations": [{"role": "user", "content": "q"}], "chosen": "", "rejected": "bad"},
        ]
    )
    converted, report = to_standard_columns(raw, "sharegpt")
    assert report.dropped == {"empty response": 1}
    assert converted[0]["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "good"},
    ]


# --- messages ------------------------------------------------------------------------------------


def test_messages_real_kto_file() -> None:
    raw = load_real("kto_en_demo.json")
    converted, report = to_standard_columns(raw)
    assert report.source_format == "messages"
    assert report.rows_out == 150  # the rows labelled false are dropped
    assert converted.column_names == ["messages"]  # `label` is removed
    first_kept = next(row for row in raw if row["label"])
    assert converted[0]["messages"] == [{"role": m["role"], "content": m["content"]} for m in first_kept["messages"]]


def test_messages_normalization_and_drops() -> None:
    raw = [
        {
            "messages": [
                {"role": "user", "content": "q", "name": "x"},
                {"role": "assistant", "content": None, "name": None},
                {"role": "assistant", "content": "a", "name": None},
            ]
        },
        {"messages": [{"role": "user", "content": "q", "name": None}]},
        {
            "messages": [
                {"role": "user", "content": "q", "name": None},
                {"role": "assistant", "content": None, "name": None},
            ]
        },
    ]
    converted, report = to_standard_columns(datasets.Dataset.from_list(raw))

    assert report.dropped == {"no assistant turn": 2}
    assert converted[0]["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "a"},
    ]
    assert converted.features["messages"].feature.keys() == {"role", "content"}


def test_messages_column_with_from_value_keys() -> None:
    raw = datasets.Dataset.from_list(
        [
            {"messages": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
            {"messages": [{"from": "human", "value": "q"}, {"from": "alien", "value": "a"}]},
        ]
    )
    converted, report = to_standard_columns(raw)
    assert report.dropped == {"unknown role": 1}
    assert converted[0]["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]


# --- prompt_completion and text ------------------------------------------------------------------


def test_prompt_completion_kept_as_is_and_extra_columns_removed() -> None:
    raw = datasets.Dataset.from_dict({"prompt": ["2+2=", "x", "y"], "completion": [" 4", "", None], "id": [1, 2, 3]})
    converted, report = to_standard_columns(raw)
    assert converted.column_names == ["prompt", "completion"]
    assert converted[0] == {"prompt": "2+2=", "completion": " 4"}
    assert report.dropped == {"empty response": 2}

    conversational = datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": "hi"}],
                "completion": [{"role": "assistant", "content": "hello"}],
            }
        ]
    )
    converted, _ = to_standard_columns(conversational, "prompt_completion")
    assert converted[0] == conversational[0]


def test_text_field_rename_and_empty_text() -> None:
    raw = datasets.Dataset.from_dict(
        {"body": ["first doc", "", None, "second doc"], "text": ["x", "y", "z", "w"], "url": list("abcd")}
    )
    converted, report = to_standard_columns(raw, "text", text_field="body")
    assert converted.column_names == ["text"]
    assert converted["text"] == ["first doc", "second doc"]
    assert report.dropped == {"empty text": 2}

    # With auto detection the custom text field counts as the text column.
    auto, auto_report = to_standard_columns(raw.remove_columns("text"), text_field="body")
    assert auto_report.source_format == "text"
    assert auto["text"] == ["first doc", "second doc"]


def test_text_real_file() -> None:
    converted, report = to_standard_columns(load_real("c4_demo.jsonl"))
    assert report.source_format == "text"
    assert converted.column_names == ["text"]
    assert report.rows_out + sum(report.dropped.values()) == report.rows_in


# --- explicit formats and errors -----------------------------------------------------------------


def test_explicit_format_with_missing_columns_names_them() -> None:
    raw = datasets.Dataset.from_dict({"instruction": ["a"], "response": ["b"]})
    with pytest.raises(DatasetFormatError, match=r"alpaca.*\['output'\]"):
        to_standard_columns(raw, "alpaca")
    with pytest.raises(DatasetFormatError, match=r"\['content'\]"):
        to_standard_columns(raw, "text", text_field="content")
    with pytest.raises(DatasetFormatError, match="unknown data_format 'jsonl'"):
        to_standard_columns(raw, "jsonl")


# --- parallelism ---------------------------------------------------------------------------------


def test_num_proc_gives_identical_output() -> None:
    rows = []
    for i in range(40):
        extra = f"context {i}" if i % 2 else ""
        output = "" if i % 7 == 0 else f"answer {i}"
        rows.append({"instruction": f"question {i}", "input": extra, "output": output})
    raw = datasets.Dataset.from_list(rows)

    serial, serial_report = to_standard_columns(raw)
    parallel, parallel_report = to_standard_columns(raw, num_proc=2)

    assert serial_report == parallel_report
    assert serial_report.dropped == {"empty response": 6}
    assert serial.features == parallel.features
    assert serial.to_list() == parallel.to_list()


def test_unpaired_preference_rows_labelled_false_are_dropped():
    raw = load_real("kto_en_demo.json")
    undesirable = sum(1 for label in raw["label"] if label is False)
    converted, report = to_standard_columns(raw)
    assert undesirable > 0
    assert report.dropped.get("undesirable (label false)") == undesirable
    assert len(converted) == len(raw) - sum(report.dropped.values())


# --- rows of several formats in one file ---------------------------------------------------------------------------


def _jsonl(path: Path, rows: list[dict]) -> datasets.Dataset:
    import json

    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return datasets.load_dataset("json", data_files=str(path), split="train")  # every row gets every column


SHAREGPT_ROW = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
ALPACA_ROW = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}


def test_alpaca_and_sharegpt_rows_in_one_file_are_each_converted_and_counted(tmp_path) -> None:
    rows = [ALPACA_ROW, SHAREGPT_ROW] * 3 + [{"instruction": "Say nothing.", "output": ""}]
    converted, report = to_standard_columns(_jsonl(tmp_path / "mixed.jsonl", rows))

    assert report.formats == {"alpaca": 4, "sharegpt": 3} and report.source_format == "alpaca+sharegpt"
    assert report.dropped == {"empty response": 1}  # the Alpaca row without an answer, for its own reason
    assert converted["messages"][:2] == [
        [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    ]
    assert report.describe() == "6/7 (alpaca 4, sharegpt 3; dropped: empty response 1)"


def test_one_format_with_a_stray_column_is_still_one_format(tmp_path) -> None:
    rows = [{**ALPACA_ROW, "text": "a rendered copy"}, {**ALPACA_ROW, "text": None}]
    _, report = to_standard_columns(_jsonl(tmp_path / "alpaca.jsonl", rows))
    assert report.formats == {} and report.describe() == "2/2 (alpaca)"


def test_rows_that_would_make_different_shapes_are_refused_naming_the_formats(tmp_path) -> None:
    from llm_recipes.data.config import DatasetSpec
    from llm_recipes.data.loading import load_standard

    path = tmp_path / "mixed.jsonl"
    _jsonl(path, [ALPACA_ROW, {"text": "Plain text."}, {"text": "More text."}])
    with pytest.raises(DatasetFormatError) as caught:
        load_standard(DatasetSpec(path=str(path)))
    assert str(caught.value) == (
        f"dataset '{path}': the rows mix formats that make different kinds of data: text (2 rows, becomes text), "
        "alpaca (1 row, becomes messages); keep one kind per file, or set data_format to read only one"
    )
    forced, report = to_standard_columns(_jsonl(path, [ALPACA_ROW, {"text": "Plain text."}]), "text")
    assert forced["text"] == ["Plain text."] and report.dropped == {"empty text": 1}
