"""KTO: unpaired thumbs-up/thumbs-down rows (or pairs split into them) read into prompt/completion/label, bad data
refused in one line, and a few steps of TRL's KTOTrainer through the recipe and the console script -> a policy (or a
LoRA adapter) that loads back."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT, write_yaml
from test_rl_trl import sft_policy, task, true_reward  # noqa: F401  (fixtures: the colour task and its SFT policy)

from llm_recipes.cli import load_recipe
from llm_recipes.data.io import load_dataset_source
from llm_recipes.data.unpaired import load_unpaired_data, to_unpaired_columns
from llm_recipes.errors import UserError
from llm_recipes.runs.manifest import read_manifest

KTO = load_recipe("kto")
TRAINING = {
    "bf16": False,
    "use_cpu": True,
    "gradient_checkpointing": False,
    "save_strategy": "no",
    "eval_strategy": "no",
    "dtype": "float32",
    "seed": 42,
    "max_length": 128,
    "per_device_train_batch_size": 4,
    "learning_rate": 1.0e-3,
    "logging_steps": 1,
    "report_to": "none",
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def text_rows(count: int = 16) -> list[dict]:
    """Prompt/completion/label text rows: answers that name the animal's colour are good (the colour task)."""
    animals = ["cat", "dog", "lion", "mouse", "fish", "horse", "bird", "frog"]
    rows = []
    for index in range(count):
        animal = animals[index % len(animals)]
        good = index % 2 == 0
        answer = f" The {animal} is orange." if good else f" The {animal} sleeps near the farm."
        rows.append({"prompt": f"Describe the {animal}.", "completion": answer, "label": good})
    return rows


def pairs(count: int = 5) -> list[dict]:
    rows = [
        {"prompt": f"Question {i}?", "chosen": f"A good answer {i}.", "rejected": f"A bad answer {i}."}
        for i in range(count - 1)
    ]
    return [*rows, {"prompt": "Same?", "chosen": "Same.", "rejected": "Same."}]  # unusable: chosen equals rejected


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llm_recipes.cli", *map(str, args)], capture_output=True, text=True, cwd=PROJECT
    )


# ---------------------------------------------------------------------------------------------------------------
# Reading the data


def test_kto_en_demo_reads_as_conversations_with_both_labels(shared_data):
    data = load_unpaired_data(str(shared_data / "kto_en_demo.json"))
    rows = data.train
    assert len(rows) == 300 and data.conversational
    assert sum(rows["label"]) == 150  # 150 thumbs up, 150 down
    for row in rows.select(range(20)):
        assert row["prompt"][-1]["role"] == "user" and [m["role"] for m in row["completion"]] == ["assistant"]
    assert data.reports[0][1].describe() == "300/300 (messages/label)"


def test_pairs_become_a_true_and_a_false_row_each_and_are_held_out_whole(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", pairs(5))
    rows, report = to_unpaired_columns(load_dataset_source(str(path)))
    assert (report.rows_in, report.rows_out, report.dropped) == (5, 4, {"chosen equals rejected": 1})
    assert len(rows) == 8 and sum(rows["label"]) == 4
    for row in rows:
        assert row["completion"].startswith("A good" if row["label"] else "A bad")

    data = load_unpaired_data(str(path), eval_size=1)  # one pair held out: its two rows, and no prompt in both
    assert (len(data.train), len(data.eval)) == (6, 2)
    assert set(data.train["prompt"]).isdisjoint(data.eval["prompt"]) and sorted(data.eval["label"]) == [False, True]
    # the rows are shuffled once (KTO's sampler keeps their order): the pairs' true/false rows are not alternating
    assert load_unpaired_data(str(path), seed=1).train["label"] != [True, False] * 4


def test_unpaired_rows_in_their_shapes_and_what_is_dropped(tmp_path):
    rows = [{**row, "label": int(row["label"])} for row in text_rows(6)]  # a csv's 1/0 labels
    rows += [{"prompt": "Describe the cow.", "completion": " The cow is white.", "label": None}]
    data = load_unpaired_data(str(write_jsonl(tmp_path / "rows.jsonl", rows)))
    assert len(data.train) == 6 and not data.conversational and sum(data.train["label"]) == 3
    assert data.reports[0][1].dropped == {"missing label": 1}

    chats = [
        {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}], "label": True},
        {
            "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}],
            "label": False,
        },
        {"messages": [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Hi?"}], "label": True},
    ]
    data = load_unpaired_data(str(write_jsonl(tmp_path / "chats.jsonl", chats)))
    assert len(data.train) == 2 and data.reports[0][1].dropped == {"last turn is not the assistant's answer": 1}


def test_data_with_one_label_or_no_label_column_is_refused_naming_the_file(tmp_path):
    only_good = write_jsonl(tmp_path / "only_good.jsonl", [row for row in text_rows(8) if row["label"]])
    with pytest.raises(UserError, match=r"only_good.jsonl': all 4 rows are labelled true .*KTO needs both"):
        load_unpaired_data(str(only_good))
    no_label = write_jsonl(tmp_path / "no_label.jsonl", [{"prompt": "Hi?", "completion": "Hello."}] * 4)
    with pytest.raises(UserError, match=r"no_label.jsonl'.*needs a 'label' column"):
        load_unpaired_data(str(no_label))
    with pytest.raises(UserError, match="needs a 'label' column"):
        load_unpaired_data(str(write_jsonl(tmp_path / "pairs.jsonl", pairs(4))), "unpaired")


def test_config_checks_fail_before_a_model_loads(tmp_path, base_model_dir):
    data = write_jsonl(tmp_path / "rows.jsonl", text_rows())
    base = ["--dataset_path", str(data), "--model_name_or_path", str(base_model_dir), "--output_dir", str(tmp_path)]
    base += ["--use_cpu", "true", "--bf16", "false"]
    with pytest.raises(UserError, match="KL estimate needs at least 2 rows per batch"):
        KTO.parse_args([*base, "--per_device_train_batch_size", "1"])
    with pytest.raises(UserError, match="desirable_weight: 0.0 must be > 0"):
        KTO.parse_args([*base, "--desirable_weight", "0"])
    with pytest.raises(UserError, match="dataset_path is required"):
        KTO.parse_args(["--model_name_or_path", str(base_model_dir), "--use_cpu", "true", "--bf16", "false"])


# ---------------------------------------------------------------------------------------------------------------
# Training


def _loads_as_policy(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = model.generate(**tokenizer("Describe the cat.", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > 0
    assert read_manifest(folder)["complete"] is True


@pytest.mark.slow
def test_kto_on_kto_en_demo_from_a_base_model_without_a_chat_template(shared_data, base_model_dir, tmp_path):
    """The chat template adds tokens, so the reference is a copy with their rows (as for DPO)."""
    output = tmp_path / "kto"
    config = {**TRAINING, "dataset_path": str(shared_data / "kto_en_demo.json"), "eval_split_size": 0.1}
    config |= {"model_name_or_path": str(base_model_dir), "output_dir": str(output), "num_train_epochs": 1}
    config |= {"per_device_train_batch_size": 8, "logging_steps": 5, "max_length": 512}
    start = time.perf_counter()
    summary = KTO.main(*KTO.parse_args(["--config", str(write_yaml(tmp_path / "kto.yaml", config))]))
    seconds = time.perf_counter() - start
    assert summary["training rows"] == 270 and summary["eval rows"] == 30 and summary["conversational"]
    # TRL drops the rows whose prompt fills max_length (the tiny tokenizer spends many tokens on a word): 161 here
    trained = summary["rows trained on (prompt within max_length)"]
    assert 100 < trained < 270 and summary["optimizer steps"] == math.ceil(trained / 8)
    assert summary["desirable rows (label true)"] + summary["undesirable rows (label false)"] == 270
    _loads_as_policy(output)
    print(
        f"\nKTO on kto_en_demo.json: {summary['training rows']} rows ({summary['desirable rows (label true)']} true, "
        f"{trained} within max_length 512), "
        f"{summary['optimizer steps']} steps, mean loss {summary['mean train loss']:.4f} "
        f"(last logged {summary['final train loss']:.4f}), "
        f"eval loss {summary['eval loss']:.4f}, eval margin {summary['eval reward margin']:.3f}, {seconds:.1f} s"
    )


@pytest.mark.slow
def test_kto_through_the_console_script_writes_a_policy_that_loads(base_model_dir, tmp_path):
    output = tmp_path / "kto"
    config = {**TRAINING, "dataset_path": str(write_jsonl(tmp_path / "rows.jsonl", text_rows(16)))}
    config |= {"eval_split_size": 0, "model_name_or_path": str(base_model_dir), "output_dir": str(output)}
    result = run_cli("kto", "--config", write_yaml(tmp_path / "kto.yaml", config), "--max_steps", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "KTO finished" in result.stdout
    _loads_as_policy(output)
    manifest = read_manifest(output)
    assert manifest["stage"] == "kto" and manifest["metrics"]["optimizer steps"] == 3
    assert manifest["metrics"]["training rows"] == 16


@pytest.mark.slow
def test_kto_with_lora_saves_an_adapter(chat_model_dir, tmp_path):
    output = tmp_path / "kto-lora"
    config = {**TRAINING, "dataset_path": str(write_jsonl(tmp_path / "pairs.jsonl", pairs(9)))}
    config |= {"eval_split_size": 0, "model_name_or_path": str(chat_model_dir), "output_dir": str(output)}
    config |= {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"]}
    summary = KTO.main(
        *KTO.parse_args(["--config", str(write_yaml(tmp_path / "kto.yaml", config)), "--max_steps", "2"])
    )
    assert summary["training rows"] == 16 and summary["trainable parameters"] < summary["total parameters"]
    assert (output / "adapter_config.json").is_file() and (output / "adapter_model.safetensors").is_file()
    assert not (output / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "rows, message",
    [
        ([row for row in text_rows(8) if not row["label"]], "all 4 rows are labelled false"),
        ([{"prompt": "Hi?", "completion": "Hello."}] * 4, "needs a 'label' column"),
    ],
    ids=["one label", "no label column"],
)
def test_bad_kto_data_is_one_error_line_through_the_console_script(rows, message, base_model_dir, tmp_path):
    output = tmp_path / "out"
    config = {**TRAINING, "dataset_path": str(write_jsonl(tmp_path / "bad_kto.jsonl", rows)), "eval_split_size": 0}
    config |= {"model_name_or_path": str(base_model_dir), "output_dir": str(output)}
    result = run_cli("kto", "--config", write_yaml(tmp_path / "kto.yaml", config))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert "bad_kto.jsonl" in errors[0] and message in errors[0], errors[0]
    assert "Traceback" not in result.stderr and not output.exists()


@pytest.mark.slow
def test_kto_on_the_synthetic_colour_task(task, sft_policy, tmp_path):  # noqa: F811  (the imported fixtures)
    """The colour task's pairs as thumbs up/down: good answers' implied reward rises above bad ones' on held-out rows;
    the true reward of sampled answers before and after is printed (as for DPO in test_rl_trl.py)."""
    output = tmp_path / "kto"
    config = {**TRAINING, "dataset_path": str(task / "data" / "preferences.jsonl"), "eval_split_size": 64}
    config |= {"model_name_or_path": str(sft_policy), "output_dir": str(output), "max_steps": 20}
    config |= {"per_device_train_batch_size": 16, "per_device_eval_batch_size": 32, "logging_steps": 5}
    summary = KTO.main(*KTO.parse_args(["--config", str(write_yaml(tmp_path / "kto.yaml", config))]))
    assert summary["optimizer steps"] == 20 and summary["training rows"] == 2 * (1200 - 64)
    _loads_as_policy(output)
    before, after = true_reward(sft_policy), true_reward(output)
    print(
        f"\nKTO: eval reward good {summary['eval reward (desirable)']:.3f}, bad "
        f"{summary['eval reward (undesirable)']:.3f} (margin {summary['eval reward margin']:.3f}, KL "
        f"{summary['eval KL']:.3f}); true reward of sampled answers {before:.3f} (SFT) -> {after:.3f} (KTO)"
    )
    assert summary["eval reward margin"] > 0
