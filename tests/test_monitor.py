"""`llm-recipes monitor` on a feedback store filled here with known times, latencies and ratings: the exact
thumbs-up rates, percentiles, A/B interval and drift figures, the report files, and one clear line for bad input."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from llm_recipes.cli import load_recipe
from llm_recipes.errors import UserError
from llm_recipes.monitoring.drift import ks_distance
from llm_recipes.monitoring.report import difference_interval
from llm_recipes.serving.store import FeedbackItem, FeedbackStore, ResponseRecord

PROJECT = Path(__file__).resolve().parents[1]
DAY1 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
DAY2 = DAY1 + timedelta(days=1)
# (id, version, time, latency ms, completion tokens, prompt logged or None, ratings in order)
ANSWERS = [
    ("a1", "v1", DAY1, 100.0, 10, "What is the capital of Italy?", ["up"]),
    ("a2", "v1", DAY1 + timedelta(hours=1), 200.0, 10, "Quelle est la couleur du ciel aujourd'hui?", ["up"]),
    ("a3", "v1", DAY1 + timedelta(hours=2), 300.0, 10, "Tell me a joke about cats please", ["down"]),
    ("a4", "v1", DAY1 + timedelta(hours=3), 400.0, 20, "Hi there", []),
    ("a5", "v1", DAY2, 500.0, 10, None, ["up"]),
    ("a6", "v1", DAY2 + timedelta(hours=1), 600.0, 10, None, ["up"]),
    ("b1", "v2", DAY1, 1000.0, 10, None, ["down"]),
    ("b2", "v2", DAY1 + timedelta(hours=1), 2000.0, 10, None, ["down"]),
    ("b3", "v2", DAY2, 3000.0, 10, None, ["down", "up"]),  # changed their mind: the last rating counts
]
TRAINING = [
    "What is the capital of France?",
    "How do I bake bread at home?",
    "Explain the theory of relativity simply.",
    "Wie spät ist es heute in Berlin?",
]


def fill_store(url: str) -> None:
    store = FeedbackStore(url)
    for id_, version, moment, latency, tokens, prompt, _ in ANSWERS:
        messages = [{"role": "user", "content": prompt or "unlogged"}]
        record = ResponseRecord(id_, version, moment, messages, "an answer", latency, 5, tokens, "stop")
        store.record_response(record, with_text=prompt is not None)
    for id_, _, moment, *_, ratings in ANSWERS:
        for index, rating in enumerate(ratings):
            store.add_feedback([FeedbackItem(id_, "rating", rating, created_at=moment + timedelta(minutes=index + 1))])
    store.close()


def write_training(path: Path) -> Path:
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}]} for p in TRAINING]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def run_cli(*args: object) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "llm_recipes.cli", "monitor", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT)


def wilson(up: int, n: int) -> tuple[float, float]:
    """Written out again here, so the report's interval is checked against the textbook formula."""
    z = 1.959963984540054
    p = up / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def test_the_report_through_the_console_script_has_the_exact_figures(tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    fill_store(url)
    training = write_training(tmp_path / "train.jsonl")
    out = tmp_path / "report"
    result = run_cli("--db", url, "--output_dir", out, "--training_data", training, "--languages", "en", "de", "fr")
    assert result.returncode == 0, result.stderr
    assert "monitor finished" in result.stdout and "v2 - v1" in result.stdout
    assert {p.name for p in out.iterdir()} >= {
        "monitor_report.md",
        "monitor_report.json",
        "thumbs_up_rate.png",
        "latency.png",
        "prompt_length.png",
        "language_mix.png",
    }
    for png in out.glob("*.png"):
        assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000
    report = json.loads((out / "monitor_report.json").read_text())
    v1, v2 = report["versions"]["v1"], report["versions"]["v2"]
    assert (v1["answers"], v1["rated"], v1["up"], v1["thumbs_up_rate"]) == (6, 5, 4, 0.8)
    assert (v2["answers"], v2["rated"], v2["up"], v2["thumbs_up_rate"]) == (3, 3, 1, 1 / 3)
    assert v1["thumbs_up_interval"] == pytest.approx(wilson(4, 5))
    # latencies 100..600 ms: numpy's linear percentiles
    assert (v1["latency_ms_p50"], v1["latency_ms_p90"], v1["latency_ms_p99"]) == pytest.approx((350, 550, 595))
    assert (v2["latency_ms_p50"], v2["latency_ms_p90"], v2["latency_ms_p99"]) == pytest.approx((2000, 2800, 2980))
    assert v1["ms_per_token_p50"] == pytest.approx(25.0)  # 10, 20, 30, 20, 50, 60 ms per token
    # per day
    assert report["bucket"] == "day"
    day1, day2 = report["over_time"]["v1"]["2026-12-01"], report["over_time"]["v1"]["2026-12-02"]
    assert (day1["answers"], day1["rated"], day1["thumbs_up_rate"], day1["latency_ms_p50"]) == (4, 3, 2 / 3, 250)
    assert (day2["answers"], day2["thumbs_up_rate"], day2["latency_ms_p90"]) == (2, 1.0, pytest.approx(590))
    assert report["over_time"]["v2"]["2026-12-02"]["thumbs_up_rate"] == 1.0
    # A/B: v1 answered most, so it is the baseline; Newcombe's interval from the two Wilson intervals
    ab = report["ab"]
    assert ab["baseline"] == "v1" and ab["interval"].startswith("Newcombe")
    (row,) = ab["comparisons"]
    (l1, u1), (l2, u2) = wilson(1, 3), wilson(4, 5)
    d = 1 / 3 - 0.8
    expected = (d - math.sqrt((1 / 3 - l1) ** 2 + (u2 - 0.8) ** 2), d + math.sqrt((u1 - 1 / 3) ** 2 + (0.8 - l2) ** 2))
    assert row["difference"] == pytest.approx(d) and row["interval"] == pytest.approx(expected)
    assert row["interval"] == pytest.approx([-0.7840, 0.1585], abs=1e-4)  # by hand
    assert row["verdict"] == "no significant difference"
    # drift: the 4 logged prompts of 9 answers against 4 training prompts
    drift = report["drift"]
    assert (drift["prompts"], drift["answers"], drift["training_prompts"]) == (4, 9, 4)
    assert drift["length"]["served"] == {"mean": 5.5, "p50": 6.5, "p90": 7.0}  # 6, 7, 7, 2 words
    assert drift["length"]["training"] == {"mean": 6.5, "p50": 6.5, "p90": 7.0}  # 6, 7, 6, 7
    assert drift["length"]["ks"] == 0.25
    assert drift["languages"]["training"] == {"de": 0.25, "en": 0.75}
    assert drift["languages"]["served"] == {"en": 0.75, "fr": 0.25}  # "Hi there" counts as English
    assert drift["languages"]["total_variation"] == pytest.approx(0.25)
    # "capital of Italy" shares "what is the" with the training data; the French and the joke share nothing
    assert drift["coverage"] == {"n": 3, "eligible": 3, "uncovered": 2, "too_short": 1, "uncovered_share": 2 / 3}
    markdown = (out / "monitor_report.md").read_text()
    assert "| v1 | 6 | 5 | 80.0% [" in markdown and "v2 vs v1: -46.7% [-78.4%, +15.9%]" in markdown
    assert "Prompts read: 4 of 9 answers" in markdown and "2 of 3 (66.7%)" in markdown
    assert "![latency](latency.png)" in markdown


def test_since_baseline_and_hourly_buckets(store_url, tmp_path):
    fill_store(store_url)
    recipe = load_recipe("monitor")
    args = ["--db", store_url, "--output_dir", str(tmp_path / "r"), "--since", "2026-12-02", "--bucket", "hour"]
    report = recipe.main(*recipe.parse_args([*args, "--baseline", "v2"]))
    assert report["answers"] == 3 and report["window"] == "2026-12-02 to ..."
    assert report["versions"]["v1"]["thumbs_up_rate"] == 1.0 and report["versions"]["v2"]["thumbs_up_rate"] == 1.0
    assert sorted(report["over_time"]["v1"]) == ["2026-12-02T09:00", "2026-12-02T10:00"]
    (row,) = report["ab"]["comparisons"]
    assert row["version"] == "v1" and row["baseline"] == "v2" and row["difference"] == 0.0
    assert "drift" not in report
    assert "No training data given" in (tmp_path / "r" / "monitor_report.md").read_text()


def test_the_demo_config_parses():
    recipe = load_recipe("monitor")
    (args,) = recipe.parse_args(["--config", str(PROJECT / "configs" / "demo" / "monitor.yaml")])
    assert args.db == "sqlite:///outputs/demo/feedback.db" and args.bucket == "day" and args.ngram == 3
    assert (PROJECT / args.training_data).is_file()


def test_a_difference_interval_and_ks_distance_by_hand():
    difference, lower, upper = difference_interval(56, 70, 48, 80)  # Newcombe (1998) table II's example (e)
    assert difference == pytest.approx(0.2) and (lower, upper) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert ks_distance([1, 2, 3], [1, 2, 3]) == 0.0 and ks_distance([1, 1], [5, 6]) == 1.0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("missing", "error: db: no feedback store at sqlite:///"),
        ("empty", "error: db: the feedback store sqlite:///"),
        ("other", "is not a feedback store (no responses and feedback tables)"),
        ("baseline", "error: baseline: no answers of version 'v9' (versions: v1, v2)"),
        ("training", "has none of messages, prompt, text, question, instruction (its columns: answer)"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, make, message):
    db = tmp_path / "feedback.db"
    args = ["--db", f"sqlite:///{db}", "--output_dir", tmp_path / "out"]
    if make == "empty":
        FeedbackStore(f"sqlite:///{db}").close()
    elif make == "other":
        sqlite3.connect(db).execute("CREATE TABLE other (x INTEGER)").connection.commit()
    elif make == "baseline":
        fill_store(f"sqlite:///{db}")
        args += ["--baseline", "v9"]
    elif make == "training":
        fill_store(f"sqlite:///{db}")
        (tmp_path / "train.jsonl").write_text('{"answer": "no prompt here"}\n', encoding="utf-8")
        args += ["--training_data", tmp_path / "train.jsonl"]
    recipe = load_recipe("monitor")
    with pytest.raises(UserError) as raised:
        recipe.main(*recipe.parse_args([str(a) for a in args]))
    assert message.removeprefix("error: ") in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()
    if make == "empty":
        assert str(raised.value).endswith("holds no answers")


def test_a_missing_store_through_the_console_script(tmp_path):
    result = run_cli("--db", f"sqlite:///{tmp_path / 'nope.db'}", "--output_dir", tmp_path / "out")
    assert result.returncode != 0 and not (tmp_path / "nope.db").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "db: no feedback store at sqlite:///" in lines[0], result.stderr
