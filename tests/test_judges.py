"""Prompt-only evaluation data and the judges' protocol, without models: reading `prompt`, user-only `messages` and
MT-bench `turns` rows; verdict parsing, position swapping and tallying with a scripted judge; the Wilson interval;
the judge prompts a user replaces; the OpenAI-compatible client against a stub server on 127.0.0.1."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import PROJECT

from llm_recipes.errors import UserError
from llm_recipes.evaluation.conversations import Conversation, units_of
from llm_recipes.evaluation.data import load_eval_data
from llm_recipes.evaluation.judge_clients import OpenAIChatJudge, api_base
from llm_recipes.evaluation.judges import (
    Comparison,
    JudgePrompts,
    UnparsedBudget,
    compare_scores,
    grade_answers,
    judge_pairs,
    mean_score,
    parse_score,
    parse_verdict,
    swapped_outcome,
    wilson_interval,
)

MT_BENCH = PROJECT / "tests" / "data" / "mt_bench_tiny.jsonl"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------------------------------------------
# Data


def test_mt_bench_turns_are_read_in_order_with_ids():
    data = load_eval_data(str(MT_BENCH))
    assert data.prompt_only and not data.has_references
    assert [len(c.turns) for c in data.conversations] == [2, 2, 1, 2, 1]
    first = data.conversations[0]
    assert (first.id, first.category, first.chat) == ("81", "writing", True)
    assert data.report.describe() == "5/5 (prompts (turns))"
    # turn 2 is asked with the model's own first answer in the history
    assert first.prompt_at(1, ["A sea poem."]) == [
        {"role": "user", "content": "Write a two-line poem about the sea."},
        {"role": "assistant", "content": "A sea poem."},
        {"role": "user", "content": "Now rewrite it so that every line starts with the letter A."},
    ]
    units = units_of(data.conversations, [["a1", "a2"], ["b1", "b2"], ["c1"], ["d1", "d2"], ["e1"]])
    assert [(u.conversation, u.turn, u.answer) for u in units][:3] == [(0, 0, "a1"), (0, 1, "a2"), (1, 0, "b1")]
    assert len(units) == 8 and not units[0].multi_turn and units[1].multi_turn
    assert units[1].question.startswith("Now rewrite") and units[1].history[1]["content"] == "a1"
    assert load_eval_data(str(MT_BENCH), max_samples=2).conversations[1].id == "82"


def test_prompt_rows_and_user_only_messages(tmp_path):
    prompts = load_eval_data(
        write_jsonl(
            tmp_path / "prompts.jsonl",
            [
                {"prompt": "Once upon a time"},
                {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]},
                {"prompt": ""},
            ],
        )
    )
    plain, chat = prompts.conversations
    assert (plain.turns, plain.chat) == (["Once upon a time"], False)
    assert plain.prompt_at(0, []) == "Once upon a time"  # continued as it is, like a prompt/completion prompt
    assert chat.context == [{"role": "system", "content": "Be brief."}] and chat.turns == ["Hi?"]
    assert prompts.report.dropped == {"empty turn": 1}

    messages = load_eval_data(
        write_jsonl(
            tmp_path / "messages.jsonl",
            [
                {"messages": [{"role": "user", "content": "One?"}, {"role": "user", "content": "Two?"}]},
                {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Three?"}]},
            ],
        )
    )
    assert [c.turns for c in messages.conversations] == [["One?", "Two?"], ["Three?"]]
    assert messages.conversations[1].context == [{"role": "system", "content": "S"}]
    # with an answer anywhere, messages are reference data as before (the last answer is the reference)
    answered = load_eval_data(
        write_jsonl(
            tmp_path / "answered.jsonl",
            [
                {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
                {"messages": [{"role": "user", "content": "Q2"}]},
            ],
        )
    )
    assert not answered.prompt_only and answered.references == ["A"]


def test_unusable_prompt_only_data_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"no usable prompts \(0/2 \(prompts \(turns\); dropped: no turns 1, empty"):
        load_eval_data(write_jsonl(tmp_path / "bad.jsonl", [{"turns": []}, {"turns": ["  "]}]))


# ---------------------------------------------------------------------------------------------------------------
# Verdicts, swapping, tallies


def test_verdict_parsing_takes_the_last_bracketed_verdict():
    assert parse_score("Good answer. Rating: [[7]]") == 7.0
    assert parse_score("The scale is [[1]] to [[10]]... Rating: [[8.5]]") == 8.5
    assert parse_score("Rating: [7]") is None and parse_score("[[11]]") is None and parse_score("[[0]]") is None
    assert parse_score("") is None
    assert parse_verdict("A is better. [[A]]") == "A"
    assert parse_verdict("Not [[A]] but rather [[ C ]]") == "C"
    assert parse_verdict("[[D]]") is None and parse_verdict("A") is None


@pytest.mark.parametrize(
    "model_first, baseline_first, outcome",
    [
        ("A", "B", "win"),  # the model wins in both orders
        ("B", "A", "loss"),
        ("C", "C", "tie"),
        ("A", "A", "tie"),  # the first position wins each time: inconsistent, a tie
        ("B", "B", "tie"),
        ("A", "C", "tie"),
        ("C", "B", "tie"),
    ],
)
def test_position_swapped_outcomes(model_first, baseline_first, outcome):
    assert swapped_outcome(model_first, baseline_first) == outcome


def test_wilson_interval_by_hand():
    low, high = wilson_interval(5, 5)
    # p = 1, z = 1.96: centre = (1 + z^2/10) / (1 + z^2/5), half = z * sqrt(z^2/100) / (1 + z^2/5)
    z = 1.959964
    assert low == pytest.approx((1 + z * z / 10 - z * z / 10) / (1 + z * z / 5), abs=1e-9)
    assert high == 1.0
    low, high = wilson_interval(4, 8)
    assert (low + high) / 2 == pytest.approx(0.5) and low == pytest.approx(0.2152, abs=1e-4)
    with pytest.raises(UserError):
        wilson_interval(0, 0)


def test_reward_comparison_counts_ties_half():
    comparison = compare_scores(
        [1.0, 2.0, 3.0, 0.5], [1.0, 1.0, 4.0, 0.5], judge="reward model", model="m", baseline="b"
    )
    assert (comparison.wins, comparison.ties, comparison.losses) == (1, 2, 1)
    assert comparison.rate == 0.5 and comparison.judged == 4
    document = comparison.as_dict()
    assert document["ci95"] == pytest.approx(list(wilson_interval(2, 4)))
    empty = Comparison("LLM judge", "m", "b", unparsed=3)
    assert empty.rate is None and empty.as_dict()["ci95"] == [None, None]


class ScriptedJudge:
    """A judge whose answers a function computes from the request; it records every request."""

    name = "scripted"

    def __init__(self, answer):
        self.answer = answer
        self.requests = []

    def complete(self, conversations):
        self.requests += list(conversations)
        return [self.answer(messages[-1]["content"]) for messages in conversations]


def _units(answers):
    conversations = [Conversation(turns=["Q1?"]), Conversation(turns=["Q2?", "Q2 again?"]), Conversation(turns=["Q3?"])]
    return units_of(conversations, answers)


def _where(unit):
    return f"prompt {unit.conversation + 1}, turn {unit.turn + 1}"


def test_single_grading_and_pairwise_swapping_with_a_scripted_judge():
    prompts = JudgePrompts.load()
    mine = _units([["long answer"], ["yes", "second long answer"], ["same"]])
    theirs = _units([["short"], ["yes!", "x"], ["same"]])

    def verdict(text: str) -> str:
        if "[Start of the assistant's answer]" in text:  # single grading: as many points as the answer has letters
            answer = text.split("answer]\n")[1].split("\n[End")[0]
            return f"Fine. Rating: [[{min(10, len(answer))}]]"
        if "[Start of the conversation]" in text:  # a later turn: its answer is the transcript's last block
            answer = text.split("### Assistant:\n")[-1].split("\n[End")[0]
            return f"Rating: [[{min(10, len(answer))}]]"
        if "conversation with assistant A" in text:  # multi-turn pair: always the first position
            return "[[A]]"
        a = text.split("[Start of assistant A's answer]\n")[1].split("\n[End")[0]
        b = text.split("[Start of assistant B's answer]\n")[1].split("\n[End")[0]
        return "[[A]]" if len(a) > len(b) else "[[B]]" if len(a) < len(b) else "[[C]]"

    judge = ScriptedJudge(verdict)
    graded = grade_answers(judge, prompts, theirs, model="base", where=_where, budget=UnparsedBudget())
    assert [j.score for j in graded] == [5.0, 4.0, 1.0, 4.0]  # short, yes!, x, same
    assert "### Assistant:\nyes!\n\n### User:\nQ2 again?" in judge.requests[2][0]["content"]  # the whole conversation

    judge = ScriptedJudge(verdict)
    comparison, pairs = judge_pairs(
        judge, prompts, mine, theirs, model="m", baseline="base", where=_where, budget=UnparsedBudget()
    )
    # each unit judged twice, the model's answer first as A, then as B
    assert len(judge.requests) == 8
    first, second = judge.requests[0][0]["content"], judge.requests[1][0]["content"]
    assert first.index("long answer") < first.index("short") and second.index("short") < second.index("long answer")
    # long beats short in both orders (win); "yes" < "yes!" (loss); the multi-turn pair says A in both orders, which
    # is position bias (tie); equal answers tie
    assert [p.outcome for p in pairs] == ["win", "loss", "tie", "tie"]
    assert (pairs[2].model_first, pairs[2].baseline_first) == ("A", "A")
    assert (comparison.wins, comparison.ties, comparison.losses, comparison.rate) == (1, 2, 1, 0.5)


def test_unparsed_judge_output_is_a_clear_error_unless_allowed():
    prompts = JudgePrompts.load()
    units = _units([["a"], ["b", "c"], ["d"]])
    babble = ScriptedJudge(lambda text: "I think\nthis is quite good " + "blah " * 60)
    with pytest.raises(UserError) as caught:
        grade_answers(babble, prompts, units, model="outputs/sft", where=_where, budget=UnparsedBudget())
    message = str(caught.value)
    assert "\n" not in message and message.startswith("judge: no rating [[1]]..[[10]] in the judge's output for ")
    assert 'prompt 1, turn 1, model outputs/sft: "I think this is quite good blah' in message
    assert "…" in message and len(message) < 400 and "judge_max_unparsed" in message

    budget = UnparsedBudget(limit=4)
    graded = grade_answers(babble, prompts, units, model="m", where=_where, budget=budget)
    assert [j.score for j in graded] == [None] * 4 and mean_score(graded) is None
    comparison, _ = judge_pairs(
        ScriptedJudge(lambda text: "[[A]]" if "Q1?" in text else "hmm"),
        prompts,
        units,
        units,
        model="m",
        baseline="b",
        where=_where,
        budget=UnparsedBudget(limit=6),
    )
    assert (comparison.ties, comparison.unparsed, comparison.judged) == (1, 3, 1)
    with pytest.raises(UserError, match=r"more than judge_max_unparsed \(1\)"):
        judge_pairs(
            ScriptedJudge(lambda text: "hmm"),
            prompts,
            units,
            units,
            model="m",
            baseline="b",
            where=_where,
            budget=UnparsedBudget(limit=1),
        )


# ---------------------------------------------------------------------------------------------------------------
# Prompts


def test_judge_prompts_are_replaced_by_name_and_checked(tmp_path):
    shipped = JudgePrompts.load()
    assert set(shipped.templates) == {"single", "single_multi_turn", "pairwise", "pairwise_multi_turn"}
    assert all("[[" in text for text in shipped.templates.values())
    own = tmp_path / "prompts"
    own.mkdir()
    (own / "single.txt").write_text("Rate {answer} to {question} as [[n]].")
    prompts = JudgePrompts.load(str(own))
    assert prompts.sources["single"] == str(own / "single.txt")
    assert prompts.sources["pairwise"].endswith("judge_prompts/pairwise.txt")
    # one pass: an answer that contains a placeholder stays as it is
    rendered = prompts.render("single", question="Q {answer}", answer="A {question}")
    assert rendered == [{"role": "user", "content": "Rate A {question} to Q {answer} as [[n]]."}]
    (own / "pairwise.txt").write_text("Compare {answer_a} with {question}.")
    with pytest.raises(UserError, match=r"pairwise.txt lacks \{answer_b\}"):
        JudgePrompts.load(str(own))
    (own / "pairwise.txt").unlink()
    (own / "single_turn.txt").write_text("x")
    with pytest.raises(UserError, match="single_turn.txt is not one of them"):
        JudgePrompts.load(str(own))
    with pytest.raises(UserError, match="folder not found"):
        JudgePrompts.load(str(tmp_path / "missing"))


# ---------------------------------------------------------------------------------------------------------------
# The OpenAI-compatible client


class StubServer:
    """An OpenAI-compatible chat server on 127.0.0.1: answers `reply(request body)`, records requests."""

    def __init__(self, reply, models=("stub-judge",)):
        self.requests = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                stub.requests.append(("GET", self.path, dict(self.headers), None))
                if self.path == "/v1/models" and models:
                    self._send(200, {"object": "list", "data": [{"id": name} for name in models]})
                else:
                    self._send(404, {"error": "no such route"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(("POST", self.path, dict(self.headers), body))
                status, answer = reply(body)
                self._send(status, answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def chat_answer(text: str) -> tuple[int, dict]:
    return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


@pytest.fixture
def stub():
    servers = []

    def start(reply, **kwargs):
        servers.append(StubServer(reply, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_api_base_accepts_the_usual_spellings():
    for url in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/chat/completions"):
        assert api_base(url) == "http://h:8000/v1"


def test_openai_client_asks_the_served_model_greedily_with_the_key(stub, monkeypatch):
    server = stub(lambda body: chat_answer(f"echo {body['messages'][-1]['content']} [[6]]"))
    monkeypatch.setenv("STUB_JUDGE_KEY", "sk-stub-secret-42")
    client = OpenAIChatJudge(server.url, api_key_env="STUB_JUDGE_KEY", max_tokens=99)
    client.connect()
    assert client.model == "stub-judge" and client.name == f"stub-judge at {server.url}/v1"
    assert client.complete([[{"role": "user", "content": "hi"}]]) == ["echo hi [[6]]"]
    method, path, headers, body = server.requests[-1]
    assert (method, path) == ("POST", "/v1/chat/completions")
    assert body == {
        "model": "stub-judge",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "max_tokens": 99,
    }
    assert headers["Authorization"] == "Bearer sk-stub-secret-42"
    assert "sk-stub-secret" not in client.name


def test_openai_client_errors_are_one_line_without_the_key(stub, monkeypatch):
    monkeypatch.setenv("STUB_JUDGE_KEY", "sk-stub-secret-42")
    server = stub(lambda body: (400, {"error": {"message": "bad model sk-stub-secret-42"}}))
    client = OpenAIChatJudge(server.url, model="x", api_key_env="STUB_JUDGE_KEY")
    with pytest.raises(UserError, match=r"answered HTTP 400: .*bad model <redacted>") as caught:
        client.complete([[{"role": "user", "content": "hi"}]])
    assert "sk-stub-secret" not in str(caught.value)
    server = stub(lambda body: (200, {"choices": []}))
    with pytest.raises(UserError, match=r"without choices\[0\]\.message\.content"):
        OpenAIChatJudge(server.url, model="x").complete([[{"role": "user", "content": "hi"}]])
    server = stub(lambda body: (200, "<html>not json</html>"))
    with pytest.raises(UserError, match="answered no JSON: <html>"):
        OpenAIChatJudge(server.url, model="x").complete([[{"role": "user", "content": "hi"}]])
    nameless = stub(lambda body: chat_answer("x"), models=())
    with pytest.raises(UserError, match="judge_api_model: .* answered HTTP 404.* name the model the server serves"):
        OpenAIChatJudge(nameless.url).connect()
    OpenAIChatJudge(nameless.url, model="named").connect()  # a server without a listing is fine when named
    port = nameless.server.server_address[1]
    nameless.close()
    with pytest.raises(UserError, match=rf"cannot reach http://127.0.0.1:{port}/v1/models: .*refused"):
        OpenAIChatJudge(nameless.url).connect()
    with pytest.raises(UserError, match="environment variable NO_SUCH_KEY_VAR is not set"):
        OpenAIChatJudge(server.url, api_key_env="NO_SUCH_KEY_VAR")


def test_wilson_matches_the_closed_form_for_a_middle_case():
    successes, n, z = 6.5, 10, 1.959964
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson_interval(successes, n) == pytest.approx((centre - half, centre + half))


# ---------------------------------------------------------------------------------------------------------------
# The pipeline's evaluate section


def test_the_pipeline_evaluate_section_takes_a_judge(tmp_path, monkeypatch, capsys):
    """A pipeline whose evaluate section judges MT-bench-style prompts with a judge server: the dry run checks the
    section and prints the plan; a judge mistake is one line naming the stage, before anything runs."""
    import yaml
    from conftest import relocated_demo_pipeline

    from llm_recipes.cli import load_recipe

    monkeypatch.chdir(PROJECT)
    pipeline = load_recipe("pipeline")
    config = relocated_demo_pipeline(tmp_path)
    config["evaluate"].update(
        dataset_path=str(MT_BENCH), judge_model="http://127.0.0.1:8000", judge_max_unparsed=2, protocol=None
    )
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (args,) = pipeline.parse_args(["--config", str(path), "--dry_run"])
    assert not pipeline.main(args)  # a dry run runs nothing
    printed = capsys.readouterr().out
    assert "every stage config checked" in printed and not (tmp_path / "out").exists()

    config["evaluate"].update(judge_api_key_env="NO_SUCH_JUDGE_KEY_VAR")
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    with pytest.raises(UserError, match="stage evaluate: judge_api_key_env: the environment variable NO_SUCH_JUDGE"):
        pipeline.main(*pipeline.parse_args(["--config", str(path), "--dry_run"]))
    config["evaluate"].update(judge_model=None, judge_api_key_env=None, judge_prompts=str(tmp_path))
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    with pytest.raises(UserError, match="stage evaluate: judge_prompts needs judge_model"):
        pipeline.main(*pipeline.parse_args(["--config", str(path), "--dry_run"]))
