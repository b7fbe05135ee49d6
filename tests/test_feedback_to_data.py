"""feedback-to-data: a feedback store (SQLite and a real PostgreSQL) filled through the store's API, read back through
the console script into KTO/DPO/SFT files -- exact rows, PII redacted, duplicates and conflicts dropped, report
counts -- and those files read by the kto, dpo and sft stages' own parsing and data loading."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from conftest import PROJECT

from llm_recipes.cli import load_recipe
from llm_recipes.data.config import dataset_specs
from llm_recipes.data.loading import load_training_data
from llm_recipes.data.preferences import load_preference_data
from llm_recipes.data.unpaired import load_unpaired_data
from llm_recipes.runs.manifest import read_manifest
from llm_recipes.serving.feedback_data import build_rows, read_store
from llm_recipes.serving.store import FeedbackItem, FeedbackStore, ResponseRecord, open_store

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
SUM = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "I am ann@example.com: 2 + 3?"}]
ADD = [{"role": "user", "content": "What is 3 + 4?"}]
COLOUR = [{"role": "user", "content": "Name a colour."}]
# the OpenAI shapes a request may use: a developer message, content as typed parts
GREET = [
    {"role": "developer", "content": "Be kind."},
    {"role": "user", "content": [{"type": "text", "text": "Say hi."}]},
]
# id -> (version, messages, answer); None: the conversation was not stored (another replica answered it)
RESPONSES = {
    "r1": ("v1", SUM, "5. Ask bob@example.org."),
    "r2": ("v1", ADD, "7"),
    "r3": ("v2", ADD, "Seven"),
    "r4": ("v1", COLOUR, "Blue"),
    "r5": ("v2", COLOUR, "Red, as 192.168.0.1 says"),
    "r6": ("v2", None, None),
    "r7": ("v1", ADD, "6"),
    "r8": ("v2", [{"role": "user", "content": "Hi"}], "Hello"),
    "r9": ("v1", GREET, "Hi!"),
}
# (response, kind, value, other), given a minute apart from T0 in this order
FEEDBACK = [
    ("r1", "rating", "up", None),
    ("r1", "rating", "up", None),  # the same thumbs twice: one row
    ("r2", "rating", "down", None),
    ("r3", "rating", "up", None),  # up and down on one answer: both dropped
    ("r3", "rating", "down", None),
    ("r5", "choice", "r5", "r4"),
    ("r5", "choice", "r5", "r4"),  # the same choice twice: one pair
    ("r6", "rating", "up", None),  # no text stored
    ("r6", "choice", "r6", "r4"),  # no text on the chosen side
    ("r7", "edit", "7 (or call 555-123-4567)", None),
    ("r7", "comment", "wrong sum", None),
    ("r8", "choice", "r8", "r2"),  # different prompts
    ("r9", "rating", "down", None),
]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


REDACTED_SUM = [SUM[0], {"role": "user", "content": "I am <EMAIL>: 2 + 3?"}]
KTO_ROWS = [
    {"prompt": REDACTED_SUM, "completion": assistant("5. Ask <EMAIL>."), "label": True},
    {"prompt": ADD, "completion": assistant("7"), "label": False},
    {
        "prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Say hi."}],
        "completion": assistant("Hi!"),
        "label": False,
    },
]
EDITED = "7 (or call <PHONE>)"
DPO_ROWS = [
    {"prompt": COLOUR, "chosen": assistant("Red, as <IP_ADDRESS> says"), "rejected": assistant("Blue")},
    {"prompt": ADD, "chosen": assistant(EDITED), "rejected": assistant("6")},
]
SFT_ROWS = [{"messages": [*ADD, *assistant(EDITED)]}]


def fill_store(url: str) -> None:
    store = FeedbackStore(url)
    for index, (response_id, (version, messages, answer)) in enumerate(RESPONSES.items()):
        record = ResponseRecord(response_id, version, T0 - timedelta(hours=1, minutes=-index), messages or [], answer)
        store.record_response(record, with_text=messages is not None)
    for index, (response_id, kind, value, other) in enumerate(FEEDBACK):
        store.add_feedback([FeedbackItem(response_id, kind, value, other, T0 + timedelta(minutes=index))])
    store.close()


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llm_recipes.cli", "feedback-to-data", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
    )


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def export(url: str, out: Path) -> Path:
    fill_store(url)
    result = run_cli("--db", url, "--output_dir", out)
    assert result.returncode == 0, result.stderr
    assert "feedback-to-data finished" in result.stdout and "kto rows" in result.stdout
    return out


def test_feedback_becomes_exact_rows_with_pii_redacted_and_a_report(store_url, tmp_path):
    exported = export(store_url, tmp_path / "feedback_data")
    assert sorted(p.name for p in exported.iterdir()) == [
        "dpo.jsonl",
        "kto.jsonl",
        "llm_recipes_manifest.json",
        "report.json",
        "report.md",
        "sft.jsonl",
    ]
    assert read_jsonl(exported / "kto.jsonl") == KTO_ROWS
    assert read_jsonl(exported / "dpo.jsonl") == DPO_ROWS
    assert read_jsonl(exported / "sft.jsonl") == SFT_ROWS
    written = "".join(p.read_text(encoding="utf-8") for p in exported.glob("*.jsonl"))
    for secret in ("ann@example.com", "bob@example.org", "192.168.0.1", "555-123-4567"):
        assert secret not in written

    report = json.loads((exported / "report.json").read_text(encoding="utf-8"))
    assert report["feedback"] == {
        "read": 13,
        "outside_filters": 0,
        "selected": 13,
        "by_kind": {"choice": 4, "comment": 1, "edit": 1, "rating": 7},
        "by_version": {"v1": {"comment": 1, "edit": 1, "rating": 4}, "v2": {"choice": 4, "rating": 3}},
        "comments": 1,
    }
    assert report["rows"] == {"kto": 3, "dpo": 2, "sft": 1}
    assert report["rows_by_source"] == {"choice": {"dpo": 1}, "edit": {"dpo": 1, "sft": 1}, "rating": {"kto": 3}}
    assert report["rows_by_version"] == {"v1": {"dpo": 1, "kto": 3, "sft": 1}, "v2": {"dpo": 1}}
    assert report["kto_labels"] == {"true": 1, "false": 2}
    assert report["dropped"] == {
        "conflicting ratings (up and down on one answer)": 2,
        "the answer's text was not stored": 2,
        "a choice between answers to different prompts": 1,
    }
    assert report["duplicates"] == {"kto": 1, "dpo": 1, "sft": 0}
    assert report["pii_redactions"] == {"email": 2, "phone": 1, "ip_address": 1}
    page = (exported / "report.md").read_text(encoding="utf-8")
    assert "| total | 3 | 2 | 1 |" in page and "- conflicting ratings (up and down on one answer): 2" in page
    manifest = read_manifest(exported)
    assert manifest["stage"] == "feedback-to-data" and manifest["complete"]
    assert manifest["metrics"]["kto rows"] == 3 and manifest["metrics"]["pii redactions"] == 4


def test_the_kto_dpo_and_sft_stages_read_the_files(chat_model_dir, tmp_path):
    exported = export(f"sqlite:///{tmp_path / 'feedback.db'}", tmp_path / "feedback_data")
    common = ["--model_name_or_path", str(chat_model_dir), "--use_cpu", "true", "--report_to", "none"]
    kto_args, kto_training, _ = load_recipe("kto").parse_args(
        ["--dataset_path", str(exported / "kto.jsonl"), "--output_dir", str(tmp_path / "kto"), *common]
    )
    kto = load_unpaired_data(kto_args.dataset_path, kto_args.data_format, seed=kto_training.seed)
    assert kto.conversational and len(kto.train) == 3 and sorted(kto.train["label"]) == [False, False, True]

    dpo_args, _, _ = load_recipe("dpo").parse_args(
        ["--dataset_path", str(exported / "dpo.jsonl"), "--output_dir", str(tmp_path / "dpo"), *common]
    )
    dpo = load_preference_data(dpo_args.dataset_path, dpo_args.data_format)
    assert dpo.conversational and len(dpo.train) == 2 and not dpo.reports[0][1].dropped
    assert dpo.train[1]["chosen"] == assistant(EDITED)

    sft_args, _, _ = load_recipe("sft").parse_args(
        ["--dataset_path", str(exported / "sft.jsonl"), "--output_dir", str(tmp_path / "sft"), *common]
    )
    sft = load_training_data(dataset_specs(sft_args))
    assert sft.shape == "messages" and sft.train["messages"] == [SFT_ROWS[0]["messages"]]


def test_filters_by_version_and_feedback_time(tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    fill_store(url)
    engine = open_store(url)
    feedback, responses = read_store(engine)
    engine.dispose()

    v2 = build_rows(feedback, responses, versions=["v2"])
    assert v2.rows["kto"] == [] and v2.rows["dpo"] == DPO_ROWS[:1] and v2.filtered_out == 6
    # minutes 9 and 10 from T0: the edit and the comment on r7
    window = build_rows(feedback, responses, since=T0 + timedelta(minutes=9), until=T0 + timedelta(minutes=11))
    assert window.rows == {"kto": [], "dpo": DPO_ROWS[1:], "sft": SFT_ROWS}
    assert window.comments == 1 and window.filtered_out == 11

    out = tmp_path / "out"
    result = run_cli("--db", url, "--output_dir", out, "--versions", "v1", "--since", "2026-12-01T10:09:00Z")
    assert result.returncode == 0, result.stderr
    # from minute 9 on, v1 only: r7's edit and comment, r9's thumbs down (r8's choice is v2's)
    assert read_jsonl(out / "kto.jsonl") == KTO_ROWS[2:]
    assert read_jsonl(out / "sft.jsonl") == SFT_ROWS and read_jsonl(out / "dpo.jsonl") == DPO_ROWS[1:]
    assert "note: kto.jsonl holds only thumbs down; the kto stage needs both labels" in result.stdout

    only_dpo = tmp_path / "only_dpo"
    result = run_cli("--db", url, "--output_dir", only_dpo, "--formats", "dpo", "--until", "2026-12-01T10:06")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in only_dpo.glob("*.jsonl")) == ["dpo.jsonl"]
    report = json.loads((only_dpo / "report.json").read_text(encoding="utf-8"))
    assert report["rows"] == {"dpo": 1} and report["rows_by_source"] == {"choice": {"dpo": 1}}
    assert report["feedback"]["selected"] == 6 and report["duplicates"] == {"dpo": 0}


@pytest.mark.parametrize(
    "setup, args, message",
    [
        ("none", [], "error: db: no feedback store at sqlite:///"),
        ("empty", [], "holds no feedback yet"),
        ("filled", ["--since", "yesterday"], "error: since: 'yesterday' is not an ISO 8601 date or time"),
        ("filled", ["--formats", "ppo"], "error: formats: ppo; choose from kto, dpo, sft"),
        ("filled", ["--versions", "v9"], "error: no training rows from 0 of 13 feedback items"),
        ("filled", ["--db", "mysql://u@h/db"], "error: db: mysql is not supported"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, setup, args, message):
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    if setup == "empty":
        FeedbackStore(url).close()
    elif setup == "filled":
        fill_store(url)
    result = run_cli("--db", url, "--output_dir", tmp_path / "out", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_kto_trains_on_the_exported_file_through_the_console_script(chat_model_dir, tmp_path):
    exported = export(f"sqlite:///{tmp_path / 'feedback.db'}", tmp_path / "feedback_data")
    output = tmp_path / "kto"
    settings = {"use_cpu": "true", "bf16": "false", "dtype": "float32", "report_to": "none", "save_strategy": "no"}
    settings |= {"per_device_train_batch_size": 2, "max_steps": 1, "max_length": 64, "gradient_checkpointing": "false"}
    settings |= {"eval_split_size": 0, "eval_strategy": "no"}
    result = subprocess.run(
        [sys.executable, "-m", "llm_recipes.cli", "kto", "--model_name_or_path", str(chat_model_dir)]
        + ["--dataset_path", str(exported / "kto.jsonl"), "--output_dir", str(output)]
        + [str(token) for key, value in settings.items() for token in (f"--{key}", value)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = read_manifest(output)
    metrics = manifest["metrics"]
    assert manifest["stage"] == "kto" and metrics["training rows"] == 3 and metrics["optimizer steps"] == 1
    assert metrics["desirable rows (label true)"] == 1 and metrics["rows trained on (prompt within max_length)"] == 3
    assert manifest["inputs"]["datasets"] == [str(exported / "kto.jsonl")]


def test_the_demo_config_parses_and_names_the_serve_demos_store():
    (args,) = load_recipe("feedback-to-data").parse_args(["--config", "configs/demo/feedback_to_data.yaml"])
    serve = yaml.safe_load((PROJECT / "configs" / "demo" / "serve.yaml").read_text(encoding="utf-8"))
    assert args.db == serve["db"] and args.formats == ["kto", "dpo", "sft"] and args.versions is None
