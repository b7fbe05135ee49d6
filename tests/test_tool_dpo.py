"""Tool calling in preference data: pairs whose answers are tool calls keep their `tools` and `tool_calls` through
the conversion (OpenAI-style and ShareGPT/glaive-style rows), TRL's DPOTrainer tokenizes prompts that list the
schemas and answers that are the calls in our ChatML, and a tiny DPO run on such pairs trains through the console
script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT, write_yaml
from datasets import Dataset
from transformers import AutoTokenizer

from llm_recipes.cli import load_recipe
from llm_recipes.data.formats import DatasetFormatError
from llm_recipes.data.preferences import to_preference_columns
from llm_recipes.data.tool_demo import CURRENCY_TOOL, TOOLS, WEATHER_TOOL, tool_preferences
from llm_recipes.data.unpaired import to_unpaired_columns
from llm_recipes.models.chat import ensure_chat_template
from llm_recipes.rl.offline import build_dpo_trainer
from llm_recipes.runs.manifest import read_manifest

WRAPPED_TOOLS = [{"type": "function", "function": tool} for tool in TOOLS]


def weather_call(city: str) -> dict:
    return {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}


def openai_pair() -> dict:
    """OpenAI shape: arguments as a JSON string (as the API sends them), content None beside the call."""

    def answer(city: str) -> list[dict]:
        call = {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})},
        }
        return [{"role": "assistant", "content": None, "tool_calls": [call]}]

    return {
        "prompt": [{"role": "user", "content": "Is it raining in Oslo?"}],
        "chosen": answer("Oslo"),
        "rejected": answer("Rome"),
        "tools": WRAPPED_TOOLS,
    }


def glaive_pair() -> dict:
    """LLaMA-Factory's ShareGPT preference shape with glaive's tool turns: a `function_call` turn as chosen, a
    text answer as rejected, calls and schemas as JSON text."""
    return {
        "conversations": [{"from": "human", "value": "Convert 20 EUR to USD."}],
        "chosen": {
            "from": "function_call",
            "value": json.dumps(
                {"name": "convert_currency", "arguments": {"amount": 20, "from_currency": "EUR", "to_currency": "USD"}}
            ),
        },
        "rejected": {"from": "gpt", "value": "20 EUR is 20 USD."},
        "tools": json.dumps([WEATHER_TOOL, CURRENCY_TOOL]),
    }


@pytest.fixture(scope="module")
def chat_tokenizer(base_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    ensure_chat_template(tokenizer)
    return tokenizer


def test_openai_tool_pairs_keep_tools_and_calls(chat_tokenizer):
    pairs, report = to_preference_columns(Dataset.from_list([openai_pair()]))
    assert report.describe() == "1/1 (prompt_chosen_rejected)"
    row = pairs[0]
    assert row["tools"] == WRAPPED_TOOLS
    assert row["chosen"] == [{"role": "assistant", "content": "", "tool_calls": [weather_call("Oslo")]}]
    assert row["rejected"][0]["tool_calls"] == [weather_call("Rome")]
    assert row["prompt"] == [{"role": "user", "content": "Is it raining in Oslo?", "tool_calls": None}]

    # what TRL's DPOTrainer renders: the prompt with the tools, then prompt + answer
    prompt = chat_tokenizer.apply_chat_template(
        row["prompt"], tools=row["tools"], tokenize=False, add_generation_prompt=True
    )
    assert "<tools>\n" + json.dumps(WRAPPED_TOOLS[0]) + "\n" + json.dumps(WRAPPED_TOOLS[1]) + "\n</tools>" in prompt
    full = chat_tokenizer.apply_chat_template(row["prompt"] + row["chosen"], tools=row["tools"], tokenize=False)
    assert (
        full == prompt + '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
    )


def test_glaive_tool_pairs_keep_tools_and_calls():
    pairs, report = to_preference_columns(Dataset.from_list([glaive_pair(), glaive_pair()]))
    assert report.rows_out == 2 and report.source_format == "sharegpt"
    row = pairs[0]
    assert row["tools"] == WRAPPED_TOOLS
    arguments = {"amount": 20, "from_currency": "EUR", "to_currency": "USD"}
    call = {"type": "function", "function": {"name": "convert_currency", "arguments": arguments}}
    assert row["chosen"] == [{"role": "assistant", "content": "", "tool_calls": [call]}]
    assert row["rejected"] == [{"role": "assistant", "content": "20 EUR is 20 USD.", "tool_calls": None}]


def test_broken_tool_pairs_are_dropped_by_reason_and_text_pairs_with_tools_refused():
    broken = openai_pair()
    broken["chosen"][0]["tool_calls"][0]["function"]["arguments"] = "{city: Oslo"
    not_a_list = openai_pair()
    not_a_list["tools"] = WEATHER_TOOL
    rows = [openai_pair(), broken, not_a_list]
    for row in rows:  # as JSON text, as many files hold it (Arrow cannot hold a list beside an object)
        row["tools"] = json.dumps(row["tools"])
    pairs, report = to_preference_columns(Dataset.from_list(rows))
    assert report.rows_out == 1
    assert report.dropped == {"tool call arguments not JSON": 1, "tools not a JSON list": 1}

    text = Dataset.from_list([{"prompt": "Weather in Oslo?", "chosen": "a", "rejected": "b", "tools": "[]"}])
    with pytest.raises(DatasetFormatError, match="tool data needs conversations"):
        to_preference_columns(text)


def test_tool_pairs_split_for_kto_keep_their_tools():
    rows, report = to_unpaired_columns(Dataset.from_list([openai_pair()]))
    assert report.rows_out == 1 and len(rows) == 2
    assert [row["label"] for row in rows] == [True, False]
    assert [row["completion"][0]["tool_calls"] for row in rows] == [[weather_call("Oslo")], [weather_call("Rome")]]
    assert all(row["tools"] == WRAPPED_TOOLS for row in rows)


def test_plain_pairs_are_unchanged():
    rows = [{"prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go away."}]
    pairs, _ = to_preference_columns(Dataset.from_list(rows))
    assert pairs.column_names == ["prompt", "chosen", "rejected"]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "Hello!"}]


def write_pairs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_dpo_trainer_tokenizes_the_tools_into_the_prompt(tmp_path, base_model_dir):
    """What TRL 1.16's DPOTrainer tokenizes from our columns: the schemas in every prompt, the calls as answers."""
    data = write_pairs(tmp_path / "pairs.jsonl", tool_preferences(8))
    args = ["--dataset_path", str(data), "--model_name_or_path", str(base_model_dir), "--eval_split_size", "0"]
    args += ["--output_dir", str(tmp_path / "dpo"), "--max_length", "2048", "--use_cpu", "true", "--bf16", "false"]
    trainer, pairs = build_dpo_trainer(*load_recipe("dpo").parse_args(args))
    assert len(pairs.train) == 8 and "tools" in pairs.train.column_names
    tokenizer = trainer.processing_class
    for row, tokenized in zip(pairs.train, trainer.train_dataset, strict=True):
        prompt = tokenizer.decode(tokenized["prompt_ids"])
        assert all(json.dumps(tool) in prompt for tool in row["tools"]), prompt
        assert prompt.endswith(row["prompt"][0]["content"] + "<|im_end|>\n<|im_start|>assistant\n")
        chosen_call = row["chosen"][0]["tool_calls"][0]["function"]
        assert tokenizer.decode(tokenized["chosen_ids"]).startswith(
            "<tool_call>\n" + json.dumps({"name": chosen_call["name"], "arguments": chosen_call["arguments"]})
        )


@pytest.mark.slow
def test_dpo_on_tool_preferences_through_the_console_script(tmp_path, base_model_dir):
    data = write_pairs(tmp_path / "tool_pairs.jsonl", tool_preferences(48))
    out = tmp_path / "dpo-tools"
    config = {
        "model_name_or_path": str(base_model_dir),
        "dataset_path": str(data),
        "eval_split_size": 16,
        "output_dir": str(out),
        "max_steps": 8,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "max_length": 2048,
        "logging_steps": 2,
        "save_strategy": "no",
        "bf16": False,
        "gradient_checkpointing": False,
        "use_cpu": True,
        "seed": 0,
    }
    command = [
        sys.executable,
        "-m",
        "llm_recipes.cli",
        "dpo",
        "--config",
        str(write_yaml(tmp_path / "dpo.yaml", config)),
    ]
    result = subprocess.run([*command, "--cpu"], capture_output=True, text=True, timeout=900, cwd=PROJECT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "48/48 (prompt_chosen_rejected)" in result.stdout  # no pair lost to the tool columns
    summary = read_manifest(out)["metrics"]
    assert summary["training pairs"] == 32 and summary["optimizer steps"] == 8
    print(
        f"\nDPO on tool calls: eval reward accuracy {summary['eval reward accuracy']}, "
        f"margin {summary['eval reward margin']}, final train loss {summary['final train loss']}"
    )
    # the loss starts at log 2 (chosen and rejected equally likely); a few steps on the calls must lower it
    assert summary["final train loss"] < 0.6931
