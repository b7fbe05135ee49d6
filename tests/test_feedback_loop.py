"""The loop closes, end to end on a tiny model: serve v1, a scripted client asks the synthetic colour task's questions
and rates each answer up when it names a colour (and picks the colour answer of two, and edits a colourless one into
a colour one); one feedback round as `llm-recipes pipeline` runs it (configs/demo/feedback_round.yaml's shape:
feedback-to-data exports the store, one DPO round trains v1 on the users' pairs, evaluate measures v1 against the new
model, export writes it as v2); v1 and v2 served side by side (50/50), the same client rates them, and
`llm-recipes monitor` shows v2's thumbs-up rate above v1's."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT, write_yaml
from test_serve import call, start_server
from transformers import GenerationConfig

from llm_recipes.cli import parse_here
from llm_recipes.data.synthetic import (
    ANSWERS,
    COLORS,
    has_color,
    synthetic_prompts,
    write_synthetic_base_model,
    write_synthetic_demo_data,
    write_synthetic_heldout_data,
)

pytestmark = pytest.mark.slow

SEED = 0
PROMPTS = 60  # each asked twice per round: enough answers that the two rates differ well beyond their noise
MAX_TOKENS = 24
# ~90 pairs, not the benchmark's 1200: more epochs and smaller batches at benchmarks/rl_learning.py's rate; at
# 1e-3 (after a 4-epoch SFT) v2 babbled colours: 0.97 thumbs up, answers cut at max_tokens (the last assertion)
DPO = {"num_train_epochs": 4, "per_device_train_batch_size": 8, "learning_rate": 3e-4, "beta": 0.1}
TRL_SETTINGS = {
    "use_cpu": True,
    "seed": SEED,
    "save_strategy": "no",
    "bf16": False,
    "report_to": "none",
    "max_length": 64,
}


def cli(*args: object) -> subprocess.CompletedProcess:
    """A stage as a user runs it; fails the test with its stderr's end when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "llm_recipes.cli", *map(str, args)], capture_output=True, text=True, cwd=PROJECT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def trl_args(output: Path, model: Path, data: Path) -> list[object]:
    flags = [item for name, value in TRL_SETTINGS.items() for item in (f"--{name}", str(value).lower())]
    return ["--output_dir", output, "--model_name_or_path", model, "--dataset_path", data, *flags]


def feedback_round(tmp_path: Path, served: Path, db: Path, output_root: Path) -> Path:
    """A pipeline config of one feedback round on the served model: feedback-to-data -> dpo -> evaluate -> export.
    The evaluation: greedy answers to the task's held-out questions, scored as the scripted user rates."""
    protocol = {
        "tasks": [
            {
                "name": "colour",
                "kind": "true_reward",
                "path": str(write_synthetic_heldout_data(tmp_path / "heldout")),
                "function": "llm_recipes.data.synthetic:colour_only_reward",
            }
        ],
        "max_new_tokens": MAX_TOKENS,
        "device": "cpu",
    }
    config = {
        "pipeline": {"output_root": str(output_root), "rl_algorithm": "dpo", "use_existing": {"sft": str(served)}},
        "feedback-to-data": {"db": f"sqlite:///{db}"},
        "dpo": {**TRL_SETTINGS, **DPO, "eval_split_size": 0},
        "evaluate": {"protocol": str(write_yaml(tmp_path / "protocol.yaml", protocol)), "device": "cpu"},
        "export": {},
    }
    return write_yaml(tmp_path / "feedback_round.yaml", config)


def sample_when_served(model: Path) -> None:
    """The served answers vary, as chat models ship (transformers' serving samples as the generation config says):
    the users see both behaviours, and DPO gets pairs of the model's own answers."""
    config = GenerationConfig.from_pretrained(model)
    config.update(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    config.save_pretrained(model)


def serve(versions: dict[str, Path], db: Path):
    """`llm-recipes serve`'s own argument parsing and app, in a thread (tests/test_serve.py's helper)."""
    argv = ["--versions", json.dumps({name: str(path) for name, path in versions.items()}), "--seed", SEED] + [
        "--port",
        "0",
        "--db",
        f"sqlite:///{db}",
        "--max_tokens",
        MAX_TOKENS,
        "--log_level",
        "warning",
    ]
    (args,) = parse_here("serve", [str(item) for item in argv])
    return start_server(args)


def good_answer(question: str, rng: random.Random) -> str:
    """What the scripted user writes instead of a colourless answer: one about the asked animal, with a colour."""
    animal = question.rstrip(".?").split()[-1]
    return rng.choice(ANSWERS).format(animal=animal, adjective=rng.choice(COLORS), place="farm", food="seeds")


def send_feedback(url: str, body: dict) -> None:
    status, payload, _ = call(url, "/v1/feedback", body, key=None)
    assert status == 201, payload


def scripted_client(url: str, questions: list[str], *, choose_and_edit: bool) -> list[tuple[str, str]]:
    """Asks each question twice (sampled, seeded per request) through the traffic split; thumbs up for a colour
    answer, down otherwise; with `choose_and_edit`, also the colour answer chosen over a colourless one, and an
    edit of a colourless answer into a colour one (both make DPO pairs). Returns (version, finish reason) of each
    answer."""
    rng = random.Random(SEED)
    served = []
    for index, question in enumerate(questions):
        answers = []
        for repeat in range(2):
            body = {"messages": [{"role": "user", "content": question}], "temperature": 1.0}
            status, payload, _ = call(url, "/v1/chat/completions", {**body, "seed": 2 * index + repeat}, key=None)
            assert status == 200, payload
            answer = payload["choices"][0]["message"]["content"]
            answers.append((payload["id"], answer, has_color(answer)))
            served.append((payload["version"], payload["choices"][0]["finish_reason"]))
            rating = {"response_id": payload["id"], "rating": "up" if has_color(answer) else "down"}
            send_feedback(url, rating)
        if not choose_and_edit:
            continue
        (first, _, first_good), (second, _, second_good) = answers
        if first_good != second_good:
            chosen, rejected = (first, second) if first_good else (second, first)
            choice = {"response_id": chosen, "preferred_over": rejected}
            send_feedback(url, choice)
        for response_id, _, good in answers:
            if not good:
                edit = {"response_id": response_id, "edit": good_answer(question, rng)}
                send_feedback(url, edit)
    return served


def monitor_report(db: Path, output: Path) -> dict:
    cli("monitor", "--db", f"sqlite:///{db}", "--output_dir", output, "--baseline", "v1")
    return json.loads((output / "monitor_report.json").read_text(encoding="utf-8"))


def test_feedback_on_v1_trains_a_v2_that_users_like_more(tmp_path):
    # v1: a tiny random model taught the task's answer format by a short SFT; about half its answers name a colour
    base = write_synthetic_base_model(tmp_path / "base", seed=SEED)
    data = tmp_path / "task"
    write_synthetic_demo_data(data)
    v1 = tmp_path / "v1"
    sft = ["--num_train_epochs", 10, "--per_device_train_batch_size", 16, "--learning_rate", 3e-3]
    cli("sft", *trl_args(v1, base, data / "colour_sft.jsonl"), *sft, "--lr_scheduler_type", "cosine")
    sample_when_served(v1)
    questions = synthetic_prompts(PROMPTS, seed=SEED + 5)

    # round 1: v1 alone, rated, chosen and edited by the scripted user
    running = serve({"v1": v1}, tmp_path / "round1.db")
    try:
        scripted_client(running.url, questions, choose_and_edit=True)
    finally:
        running.stop()

    # one feedback round, as the pipeline runs it (configs/demo/feedback_round.yaml's shape): the store exported,
    # one DPO round on the pairs the users made, v1 against the new model, and the new model exported as v2
    round_dir = tmp_path / "round"
    cli("pipeline", "--config", feedback_round(tmp_path, v1, tmp_path / "round1.db", round_dir))
    pairs = (round_dir / "feedback-to-data" / "dpo.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(pairs) >= 30
    v2 = round_dir / "export"
    # the round's evaluation measured the served model and the new one on the same protocol (greedy answers: both
    # name a colour there, the users' sampled answers tell them apart below)
    evaluated = json.loads((round_dir / "evaluate" / "eval_results.json").read_text(encoding="utf-8"))["models"]
    assert [Path(model) for model in evaluated] == [v1, round_dir / "dpo"]
    assert all("colour/true_reward" in result["metrics"] for result in evaluated.values())
    assert GenerationConfig.from_pretrained(v2).do_sample  # v2 keeps v1's generation config: the same sampling

    # round 2: v1 and v2 side by side, the same user (thumbs only), then the monitor
    running = serve({"v1": v1, "v2": v2}, tmp_path / "round2.db")
    try:
        served = scripted_client(running.url, questions, choose_and_edit=False)
    finally:
        running.stop()
    report = monitor_report(tmp_path / "round2.db", tmp_path / "monitor")
    rates = {version: stats["thumbs_up_rate"] for version, stats in report["versions"].items()}
    rated = {version: stats["rated"] for version, stats in report["versions"].items()}
    print(f"dpo pairs {len(pairs)}; thumbs-up rate", *(f"{v} {rates[v]:.3f} of {rated[v]}" for v in ("v1", "v2")))
    # seed 0: v1 0.400 of 45 rated answers, v2 0.747 of 75; the monitor's own interval must see it too
    assert min(rated.values()) >= 40 and rates["v2"] > rates["v1"] + 0.15
    (comparison,) = report["ab"]["comparisons"]
    assert comparison["version"] == "v2" and comparison["interval"][0] > 0
    # v2 learned colours, not to babble them: its answers still end on their own, as v1's do
    v2_endings = [reason for version, reason in served if version == "v2"]
    assert v2_endings.count("stop") >= 0.9 * len(v2_endings)
