"""Prompt-only evaluation through the evaluate stage on tiny random models: MT-bench-style prompts answered turn by
turn, graded by an LLM judge behind a stub OpenAI-compatible server on 127.0.0.1 (scripted verdicts, through the
`llm-recipes evaluate` console script) and by a tiny local chat model (garbage: a clear error, or counted as
unparsed), and compared pairwise by a reward model, ties included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import PROJECT, write_yaml
from test_judges import MT_BENCH, StubServer, chat_answer

from llm_recipes.evaluation.config import EvaluateArguments
from llm_recipes.evaluation.judges import wilson_interval

pytestmark = pytest.mark.slow

SECRET = "sk-judge-test-0123456789"


def run_cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llm_recipes.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


@pytest.fixture(scope="module")
def other_chat_dir(tmp_path_factory, chat_model_dir):
    """A second chat policy: the same tokenizer (ChatML template), other random weights."""
    from transformers import AutoTokenizer

    from llm_recipes.models.loading import init_decoder

    folder = tmp_path_factory.mktemp("tiny-chat-other")
    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    torch.manual_seed(7)
    init_decoder("llama-tiny", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, chat_model_dir):
    """A tiny reward model as TRL's RewardTrainer leaves it: a sequence classifier with one output."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-reward-judge")
    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(1)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# the test's own judge prompts (replacing the shipped ones by name): easy for the stub to read
PROMPTS = {
    "single.txt": "SINGLE {question}\n<<<{answer}>>>",
    "single_multi_turn.txt": "SINGLE\n{conversation}>>>",
    "pairwise.txt": "PAIR {question}\n<<<{answer_a}>>>\n<<<{answer_b}>>>",
    "pairwise_multi_turn.txt": "PAIR\n{conversation_a}>>>\n{conversation_b}>>>",
}


def _last_answer(block: str) -> str:
    """The judged answer in one of the prompts above: after <<< (one turn) or the transcript's last assistant turn."""
    return block.split("### Assistant:\n")[-1].split("<<<")[-1].removesuffix(">>>")


def stub_score(answer: str) -> int:
    return 1 + len(answer) % 10


def stub_verdict(text: str) -> tuple[str, str, str]:
    """(verdict, answer A, answer B): the longer answer wins; anything about the poem gets [[A]] whatever the order
    (the position bias that swapping must turn into a tie)."""
    a, b = (_last_answer(block) for block in text.split(">>>\n", 1))
    verdict = "A" if len(a) > len(b) else "B" if len(a) < len(b) else "C"
    return ("A" if "poem" in text else verdict), a, b


def scripted_reply(body: dict) -> tuple[int, dict]:
    text = body["messages"][-1]["content"]
    if text.startswith("SINGLE"):
        # a decoy rating first: the last [[n]] is the verdict
        return chat_answer(f"Scale [[1]] to [[10]]. Rating: [[{stub_score(_last_answer(text))}]]")
    return chat_answer(f"Verdict: [[{stub_verdict(text)[0]}]]")


def test_prompt_only_evaluation_with_a_judge_server_and_a_reward_model(
    tmp_path, chat_model_dir, other_chat_dir, reward_dir
):
    prompts = tmp_path / "judge_prompts"
    prompts.mkdir()
    for name, text in PROMPTS.items():
        (prompts / name).write_text(text, encoding="utf-8")
    # the baseline, an identical copy of it (every answer the same: reward ties), and other weights
    twin = tmp_path / "twin"
    shutil.copytree(chat_model_dir, twin)
    models = [str(chat_model_dir), str(twin), str(other_chat_dir)]
    server = StubServer(scripted_reply)
    output = tmp_path / "eval"
    try:
        config = write_yaml(
            tmp_path / "evaluate.yaml",
            {
                "models": models,
                "dataset_path": str(MT_BENCH),
                "max_new_tokens": 8,
                "generation_config": {"no_repeat_ngram_size": 1},
                "reward_model": str(reward_dir),
                "judge_model": server.url,
                "judge_api_key_env": "JUDGE_TEST_KEY",
                "judge_prompts": str(prompts),
                "output_dir": str(output),
                "device": "cpu",
                "plot_training_curves": False,
            },
        )
        result = run_cli("evaluate", "--config", config, env={"JUDGE_TEST_KEY": SECRET})
    finally:
        server.close()
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((output / "eval_results.json").read_text())
    entries = [document["models"][path] for path in models]
    answers = [[row["answer"] for row in entry["answers"]] for entry in entries]
    units = [(row["prompt"], row["turn"]) for row in entries[0]["answers"]]
    assert units == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (4, 1), (4, 2), (5, 1)]  # 5 prompts, 8 turns
    assert answers[0] == answers[1] != answers[2]

    # the server: one model listing, then greedy chat requests to the model it lists, each with the key
    posts = [r for r in server.requests if r[0] == "POST"]
    assert [r[:2] for r in server.requests if r[0] == "GET"] == [("GET", "/v1/models")]
    assert {r[3]["model"] for r in posts} == {"stub-judge"} and {r[3]["temperature"] for r in posts} == {0}
    assert {r[2]["Authorization"] for r in posts} == {f"Bearer {SECRET}"}
    assert len(posts) == 3 * 8 + 2 * 8 * 2  # single: 3 models x 8 turns; pairwise: 2 models x 8 turns x 2 orders
    # turn 2 was asked with the model's own first answer in the history, and judged with the conversation in view
    single = [r[3]["messages"][0]["content"] for r in posts if r[3]["messages"][0]["content"].startswith("SINGLE")]
    assert any(
        f"### User:\nWhat is 12 plus 13?\n\n### Assistant:\n{answers[2][2]}\n\n### User:\nAnd what" in text
        for text in single
    )

    # the judge's scores: the stub's rule on each answer, averaged
    for entry, replies in zip(entries, answers, strict=True):
        scores = [stub_score(answer) for answer in replies]
        assert [row["judge_score"] for row in entry["answers"]] == scores
        assert entry["metrics"]["judge_score"] == pytest.approx(sum(scores) / len(scores))
    # pairwise against the first model, both orders: the longer answer wins consistently; the poem's turns are
    # inconsistent ([[A]] both times) and tie; equal answers tie
    pairs = [
        stub_verdict(r[3]["messages"][0]["content"]) for r in posts if r[3]["messages"][0]["content"][:4] == "PAIR"
    ]
    assert len(pairs) == 32
    for index, path in enumerate(models[1:], 1):
        expected = []
        for turn, (answer, base) in enumerate(zip(answers[index], answers[0], strict=True)):
            if units[turn][0] == 1 or len(answer) == len(base):
                expected.append("tie")
            else:
                expected.append("win" if len(answer) > len(base) else "loss")
        entry = entries[index]
        assert [row["judge_vs_first"] for row in entry["answers"]] == expected
        judged = {c["judge"]: c for c in entry["comparisons"]}["LLM judge"]
        wins, ties, losses = (expected.count(k) for k in ("win", "tie", "loss"))
        assert (judged["wins"], judged["ties"], judged["losses"], judged["unparsed"]) == (wins, ties, losses, 0)
        assert judged["baseline"] == models[0] and judged["model"] == path
        assert judged["win_rate"] == pytest.approx((wins + ties / 2) / 8)
        assert judged["ci95"] == pytest.approx(list(wilson_interval(wins + ties / 2, 8)))
        assert entry["metrics"]["judge_win_rate"] == judged["win_rate"]
    # each pair was judged in both orders: (mine, base) and (base, mine)
    for mine, base in zip(answers[2], answers[0], strict=True):
        assert (mine, base) in [p[1:] for p in pairs] and (base, mine) in [p[1:] for p in pairs]
    assert "comparisons" not in entries[0]  # the baseline is compared with nothing
    assert [c["judge"] for c in entries[2]["comparisons"]] == ["reward model", "LLM judge"]

    # the reward model: the twin ties on every turn (0.5); the other model against the scores it was given
    rewards = [[row["reward"] for row in entry["answers"]] for entry in entries]
    assert rewards[0] == rewards[1]
    twin_reward = {c["judge"]: c for c in entries[1]["comparisons"]}["reward model"]
    assert (twin_reward["wins"], twin_reward["ties"], twin_reward["losses"]) == (0, 8, 0)
    assert twin_reward["win_rate"] == 0.5 and twin_reward["ci95"] == pytest.approx(list(wilson_interval(4, 8)))
    other = {c["judge"]: c for c in entries[2]["comparisons"]}["reward model"]
    wins = sum(a > b for a, b in zip(rewards[2], rewards[0], strict=True))
    assert other["wins"] == wins and other["wins"] + other["losses"] == 8 and other["ties"] == 0
    assert entries[2]["metrics"]["win_rate"] == pytest.approx(wins / 8)
    assert entries[2]["metrics"]["mean_reward"] == pytest.approx(sum(rewards[2]) / 8)
    assert "perplexity" not in entries[0]["metrics"] and "bleu" not in entries[0]["metrics"]

    # the report: the win-rate table, every turn's answers with their scores; the printed tables; no key anywhere
    report = (output / "eval_report.md").read_text()
    assert "| judge | model | vs | wins | ties | losses | unparsed | win rate | 95% CI |" in report
    assert "### Prompt 2 (id 82, math), turn 2" in report and "| model | answer | reward | judge score |" in report
    assert f"LLM judge `stub-judge at {server.url}/v1` (single, pairwise)" in report
    judgments = [json.loads(line) for line in (output / "judgments.jsonl").read_text().splitlines()]
    assert len(judgments) == 3 * 8 + 2 * 8  # one record per grading, one per position-swapped pair
    assert {j["mode"] for j in judgments} == {"single", "pairwise"}
    printed = result.stdout
    llm_row = [line for line in printed.splitlines() if line.startswith("LLM judge") and str(other_chat_dir) in line]
    judged = {c["judge"]: c for c in entries[2]["comparisons"]}["LLM judge"]
    low, high = judged["ci95"]
    assert llm_row and llm_row[0].split()[-3:] == [f"{judged['win_rate']:.3f}", f"[{low:.3f},", f"{high:.3f}]"]
    assert "Wilson score interval" in printed
    # the pipeline's stage table says what the evaluate section found
    from llm_recipes.pipeline.report import headline

    said = headline("evaluate", str(output))[0]
    assert said.startswith(f"judge_score {os.path.basename(models[0])} ") and "; mean_reward " in said, said
    for path in output.rglob("*"):
        assert not path.is_file() or SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in printed + result.stderr


def test_a_tiny_local_judge_says_nothing_parsable(tmp_path, chat_model_dir, other_chat_dir):
    """A random tiny chat model as the judge: by default the first output without a rating stops the run in one
    line naming the prompt; with judge_max_unparsed every verdict is counted as unparsed and no score is made up."""
    output = tmp_path / "strict"
    config = {
        "models": [str(chat_model_dir), str(other_chat_dir)],
        "dataset_path": str(MT_BENCH),
        "max_eval_samples": 2,
        "max_new_tokens": 4,
        "judge_model": str(chat_model_dir),
        "judge_max_new_tokens": 6,
        "device": "cpu",
        "plot_training_curves": False,
    }
    result = run_cli(
        "evaluate", "--config", write_yaml(tmp_path / "strict.yaml", {**config, "output_dir": str(output)})
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("error: judge: no rating [[1]]..[[10]] in the judge's output for prompt 1 (id 81), ")
    assert f"turn 1, model {chat_model_dir}: " in errors[0] and "judge_max_unparsed" in errors[0]
    assert "Traceback" not in result.stderr and not output.exists()  # a failed stage leaves no half-made folder

    from llm_recipes.evaluation import run_evaluation

    lenient = EvaluateArguments(**config, judge_max_unparsed=100, output_dir=str(tmp_path / "lenient"))
    base, other = run_evaluation(lenient)
    assert "judge_score" not in base.metrics and base.details["judge_unparsed"] == 4
    assert [row["judge_score"] for row in base.answers] == [None] * 4
    comparison = other.comparisons[0]
    assert (comparison["judge"], comparison["unparsed"], comparison["win_rate"]) == ("LLM judge", 4, None)
    assert "judge_win_rate" not in other.metrics
    judgments = (tmp_path / "lenient" / "judgments.jsonl").read_text().splitlines()
    assert len(judgments) == 2 * 4 + 4  # every raw output kept for inspection
