"""Tool calling in SFT: glaive-style ShareGPT and OpenAI-style rows become TRL's tool shape (assistant `tool_calls`,
`tool` results, a `tools` column), our ChatML renders them with the loss on the calls and answers only, and a tiny
model trained on them through the console script answers a question with a call in the template's form."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEMO_CONFIGS, DEMO_DATA, PROJECT, SHARED_DATA
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_recipes.data.config import DatasetSpec
from llm_recipes.data.formats import to_standard_columns
from llm_recipes.data.io import load_dataset_source
from llm_recipes.data.loading import load_training_data
from llm_recipes.data.tool_demo import write_tool_demo_data
from llm_recipes.evaluation.tool_calls import evaluate_tool_calls, read_tool_requests, score_tool_calls
from llm_recipes.models.chat import CHATML_TEMPLATE, ensure_chat_template, parse_tool_calls

GLAIVE_FILE = SHARED_DATA / "glaive_toolcall_en_demo.json"

WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ADD = {
    "name": "add",
    "description": "Add two numbers",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
}
CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Delhi", "Tokyo", "Quito"]


def glaive_row(city: str, temperature: int) -> dict:
    """One row as LLaMA-Factory's glaive_toolcall files have it: calls and schemas as JSON text."""
    return {
        "conversations": [
            {"from": "human", "value": f"What is the weather in {city}?"},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": city}})},
            {"from": "observation", "value": json.dumps({"city": city, "temperature": temperature})},
            {"from": "gpt", "value": f"It is {temperature} degrees in {city}."},
        ],
        "tools": json.dumps([WEATHER, ADD]),
    }


def openai_row() -> dict:
    """OpenAI-style: arguments as a JSON string (as the API sends them), content None beside the call."""
    return {
        "messages": [
            {"role": "system", "content": "Use the tools."},
            {"role": "user", "content": "Add 2 and 3."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
                ],
            },
            {"role": "tool", "content": "5"},
            {"role": "assistant", "content": "2 plus 3 is 5."},
        ],
        "tools": [{"type": "function", "function": ADD}],
    }


def write_json(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def standard(path: Path):
    return to_standard_columns(load_dataset_source(str(path)))


@pytest.fixture(scope="module")
def chat_tokenizer(base_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    ensure_chat_template(tokenizer)
    return tokenizer


def rendered_and_trained(tokenizer, row: dict) -> tuple[str, str]:
    """The text the template renders for a standard row, and the part of it the assistant mask trains on."""
    text = tokenizer.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False)
    encoded = tokenizer.apply_chat_template(
        row["messages"], tools=row["tools"], return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [token for token, keep in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if keep]
    return text, tokenizer.decode(trained)


def test_glaive_rows_become_tool_calls_and_schemas(tmp_path, chat_tokenizer):
    dataset, report = standard(write_json(tmp_path / "glaive.json", [glaive_row("Paris", 21)]))
    assert report.describe() == "1/1 (sharegpt)"
    row = dataset[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "tool", "assistant"]
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    assert row["messages"][1]["tool_calls"] == [call]
    assert row["tools"] == [{"type": "function", "function": WEATHER}, {"type": "function", "function": ADD}]

    text, trained = rendered_and_trained(chat_tokenizer, row)
    assert "<tools>\n" + json.dumps(row["tools"][0]) + "\n" + json.dumps(row["tools"][1]) + "\n</tools>" in text
    call_text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
    assert "<|im_start|>assistant\n" + call_text in text
    assert '<|im_start|>tool\n{"city": "Paris", "temperature": 21}<|im_end|>' in text
    # the loss is on the call and the answer, each with its stop token; never on the schemas or the tool's result
    assert trained == call_text + "It is 21 degrees in Paris.<|im_end|>"
    assert parse_tool_calls(text) == [call]


def test_openai_rows_keep_content_and_calls(tmp_path, chat_tokenizer):
    dataset, report = standard(write_json(tmp_path / "openai.json", [openai_row()]))
    assert report.describe() == "1/1 (messages)"
    row = dataset[0]
    assert row["messages"][2]["tool_calls"] == [
        {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}
    ]
    text, trained = rendered_and_trained(chat_tokenizer, row)
    # the conversation's system prompt opens the tools block, once
    assert text.startswith("<|im_start|>system\nUse the tools.\n\n# Tools\n") and text.count("<|im_start|>system") == 1
    assert json.dumps({"type": "function", "function": ADD}) in text
    assert trained == (
        '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>2 plus 3 is 5.<|im_end|>'
    )
    assert "<|im_start|>tool\n5<|im_end|>" in text


def test_plain_chats_render_as_before(chat_tokenizer):
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "tool", "content": "unused"},
    ]
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n"
        "<|im_start|>assistant\nBlue.<|im_end|>\n<|im_start|>tool\nunused<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat_tokenizer.chat_template == CHATML_TEMPLATE
    for tools in (None, []):
        assert chat_tokenizer.apply_chat_template(chat, tools=tools, tokenize=False, add_generation_prompt=True) == (
            expected
        )


def test_malformed_tool_json_is_dropped_and_counted(tmp_path):
    broken_call = glaive_row("Rome", 18)
    broken_call["conversations"][1]["value"] = "get_weather(city='Rome')"
    tools_not_list = glaive_row("Oslo", 3)
    tools_not_list["tools"] = json.dumps(WEATHER)
    tools_not_json = glaive_row("Lima", 19)
    tools_not_json["tools"] = "[{name: get_weather}"
    no_tools = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}], "tools": "[]"}
    rows = [glaive_row("Paris", 21), broken_call, tools_not_list, tools_not_json, no_tools]
    dataset, report = standard(write_json(tmp_path / "mixed.json", rows))
    assert report.rows_out == 2
    assert report.dropped == {"function call not JSON": 1, "tools not JSON": 1, "tools not a JSON list": 1}
    assert dataset[1]["tools"] is None  # `[]` means no tools: templates render nothing for them


def test_plain_chats_mix_with_tool_data(tmp_path):
    tool_file = write_json(tmp_path / "tools.json", [glaive_row(city, 20) for city in CITIES[:3]])
    plain_file = write_json(
        tmp_path / "plain.json",
        [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}] * 2,
    )
    data = load_training_data([DatasetSpec(path=str(tool_file)), DatasetSpec(path=str(plain_file))])
    assert len(data.train) == 5 and set(data.train.column_names) == {"messages", "tools"}
    assert sum(row["tools"] is None for row in data.train) == 2


def test_the_shared_glaive_file_keeps_its_tools(shared_data):
    if not GLAIVE_FILE.is_file():
        pytest.skip(f"{GLAIVE_FILE.name} is not in {shared_data}")
    dataset, report = standard(GLAIVE_FILE)
    assert report.rows_out > 0.9 * report.rows_in, report.describe()
    calls = [m["tool_calls"] for row in dataset for m in row["messages"] if m["tool_calls"]]
    assert calls and all(call["function"]["name"] for turn in calls for call in turn)
    assert any(row["tools"] for row in dataset)


def test_committed_tool_demo_data_is_what_the_generator_writes(tmp_path):
    """`python -m llm_recipes.data.tool_demo configs/demo/data`; no held-out request (phrasing with its city or
    currency pair) is in the training file, and the file converts whole, every row with both tools and one call."""
    for path in write_tool_demo_data(tmp_path):
        relative = path.relative_to(tmp_path)
        assert path.read_bytes() == (DEMO_DATA / relative).read_bytes(), f"{relative}: regenerate the tool demo data"
    requests = read_tool_requests(DEMO_DATA / "heldout" / "tool_requests.jsonl")
    assert [row["expected"]["name"] for row in requests] == ["get_weather"] * 24 + ["convert_currency"] * 24
    dataset, report = standard(DEMO_DATA / "tools_glaive.json")
    assert report.describe() == "600/600 (sharegpt)"
    asked = {m["content"] for row in dataset for m in row["messages"] if m["role"] == "user"}
    assert not asked & {row["messages"][0]["content"] for row in requests}
    for row in dataset.select(range(50)):
        assert sorted(tool["function"]["name"] for tool in row["tools"]) == ["convert_currency", "get_weather"]
        calls = [m["tool_calls"] for m in row["messages"] if m["tool_calls"]]
        assert len(calls) == 1 and len(calls[0]) == 1


def test_tool_call_scores_are_nested_levels():
    expected = {"name": "convert_currency", "arguments": {"amount": 50, "from_currency": "EUR", "to_currency": "USD"}}

    def reply(name: str, arguments: dict) -> str:
        return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"

    replies = [
        reply("convert_currency", {"amount": 50.0, "from_currency": "EUR", "to_currency": "USD"}),  # 50.0 == 50
        reply("convert_currency", {"amount": 50, "from_currency": "EUR", "to_currency": "GBP"}),  # a wrong value
        reply("convert_currency", {"amount": 50, "currency": "EUR"}),  # wrong argument names
        reply("get_weather", {"city": "Oslo"}),  # the other tool
        '<tool_call>\n{"name": "convert_currency", "arguments": {"amount": 50\n</tool_call>',  # not JSON
        reply("get_weather", {"city": "Oslo"}) + reply("get_weather", {"city": "Rome"}),  # two calls
        "50 EUR is 54 USD.",  # no call
    ]
    scores = score_tool_calls(replies, [expected] * len(replies))
    assert scores.counts == {"call parsed": 4, "right tool": 3, "argument names": 2, "exact arguments": 1}
    assert [level for level, _ in scores.misses] == [
        "exact arguments",
        "argument names",
        "right tool",
        "call parsed",
        "call parsed",
        "call parsed",
    ]
    assert scores.rates()["call parsed"] == 4 / 7


@pytest.mark.slow
def test_the_demo_tool_config_trains_calls_that_parse(tmp_path, base_model_dir):
    """configs/demo/sft_tools.yaml through the console script, on its glaive-shaped file, from a tinier model and
    for fewer steps than the demo: held-out requests are answered with one call in the template's form, mostly to
    the right tool. The arguments are printed, not asserted: a tiny model copies them poorly (0/16 exact here; the
    demo's figures are in the README)."""
    out = tmp_path / "sft-tools"
    overrides = ["--model_name_or_path", str(base_model_dir), "--output_dir", str(out), "--max_steps", "300"]
    overrides += ["--per_device_train_batch_size", "8", "--eval_strategy", "no", "--save_strategy", "no"]
    command = [sys.executable, "-m", "llm_recipes.cli", "sft", "--config", str(DEMO_CONFIGS / "sft_tools.yaml")]
    result = subprocess.run([*command, *overrides, "--cpu"], capture_output=True, text=True, timeout=900, cwd=PROJECT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "600/600 (sharegpt)" in result.stdout  # no row lost to the tool columns

    requests = read_tool_requests(DEMO_DATA / "heldout" / "tool_requests.jsonl")
    requests = requests[:8] + requests[-8:]  # both tools
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    scores, replies = evaluate_tool_calls(model, tokenizer, requests)
    print(f"\ntool calls after 300 steps: {scores.describe()}")
    # the structure the template gives a call: every reply opens one, and nearly all close it as JSON that parses
    # (measured: 16/16 after 300 steps, 13/16 after 200, 0/16 after 120); most name the tool the request needs
    assert all(reply.startswith('<tool_call>\n{"name": "') for reply in replies), replies
    assert scores.rates()["call parsed"] >= 0.9, replies
    assert scores.rates()["right tool"] >= 0.75, replies
