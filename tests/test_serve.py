"""The serve stage over real HTTP on 127.0.0.1: two versions of a tiny chat model (the full model and a LoRA adapter
on it) behind one server, checked against what the models themselves generate; the traffic split, API key, limits,
JSON errors and feedback, each row read back from the database through a connection of the test's own; and
`llm-recipes serve` as a user starts it, on a quantized model."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import DEMO_CONFIGS
from sqlalchemy import create_engine, text
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_recipes.cli import main as cli_main
from llm_recipes.cli import parse_here
from llm_recipes.serving.app import ServingState, bind, build_app, make_server, url_of
from llm_recipes.serving.checks import find_vllm, served_versions, traffic_shares
from llm_recipes.serving.engine import make_engine
from llm_recipes.serving.routing import TrafficSplit
from llm_recipes.serving.store import FeedbackItem, FeedbackStore, ResponseRecord, database_url, utc_now

KEY_ENV, KEY = "LLM_RECIPES_TEST_SERVE_KEY", "test-key-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "What is 2 + 3?"}]
ID = re.compile(r"^chatcmpl-[0-9a-f]{32}$")


# --------------------------------------------------------------------------------------------------------------
# A server in a thread of this process, and an HTTP client


@dataclass
class Running:
    url: str
    state: ServingState
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def start_server(args: Any, engine: Any = None) -> Running:
    """What `llm-recipes serve` does, with uvicorn in a thread; `engine` shares a started one (a replica)."""
    versions = served_versions(args)
    sock = bind(args.host, args.port)
    state = ServingState(args, versions, traffic_shares(args.traffic, versions), engine or make_engine(args, versions))
    if engine is None:
        state.engine.start()
    server = make_server(build_app(state), args.log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return Running(url_of(sock), state, server, thread)


def call(url: str, path: str, body: Any = None, *, key: str | None = KEY, raw: bytes | None = None, **headers: str):
    """(status, JSON body, headers) of a request; `raw` sends bytes as they are."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **headers}
    if key:
        sent["Authorization"] = f"Bearer {key}"
    connection.request("POST" if data is not None else "GET", path, body=data, headers=sent)
    response = connection.getresponse()
    payload = response.read().decode()
    connection.close()
    return response.status, (json.loads(payload) if payload.startswith(("{", "[")) else payload), response.headers


def stream_events(url: str, body: dict) -> tuple[list[Any], Any]:
    status, payload, headers = call(url, "/v1/chat/completions", {**body, "stream": True})
    assert status == 200, payload
    events = [line.removeprefix("data: ") for line in payload.split("\n\n") if line.startswith("data: ")]
    return [event if event == "[DONE]" else json.loads(event) for event in events], headers


def read(url: str, query: str, **params: Any) -> list[tuple]:
    engine = create_engine(database_url(url))
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(query), params)]
    finally:
        engine.dispose()


def generated(model: Any, tokenizer: Any, max_new_tokens: int) -> str:
    """What the model itself answers to MESSAGES, greedily, through its chat template."""
    inputs = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


# --------------------------------------------------------------------------------------------------------------
# Fixtures: a LoRA version of the tiny chat model, and the A/B server


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, chat_model_dir) -> Path:
    """A LoRA adapter on the chat model, its update far from zero, saved without a tokenizer (its base's serves)."""
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("lora")
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(chat_model_dir), config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def expected(chat_model_dir, lora_dir) -> dict[str, str]:
    """Each version's own greedy answer (8 tokens), generated here without the server; the adapter unmerged."""
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    base = AutoModelForCausalLM.from_pretrained(chat_model_dir)
    answers = {"v1": generated(base, tokenizer, 8)}
    answers["v2"] = generated(PeftModel.from_pretrained(base, lora_dir), tokenizer, 8)
    assert answers["v1"] != answers["v2"]  # so an answer tells which version gave it
    return answers


@pytest.fixture(scope="module")
def ab_server(tmp_path_factory, chat_model_dir, lora_dir):
    db = tmp_path_factory.mktemp("serve") / "feedback.db"
    versions = json.dumps({"v1": str(chat_model_dir), "v2": str(lora_dir)})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, KEY)
        (args,) = parse_here(
            "serve",
            ["--versions", versions, "--traffic", '{"v1": 50, "v2": 50}', "--seed", "3", "--port", "0"]
            + ["--db", f"sqlite:///{db}", "--api_key_env", KEY_ENV, "--max_tokens", "8"]
            + ["--max_request_bytes", "4096", "--max_feedback_chars", "200", "--log_level", "warning"],
        )
        running = start_server(args)
        yield running
        running.stop()


def completion(url: str, **body: Any) -> dict:
    status, payload, headers = call(url, "/v1/chat/completions", {"messages": MESSAGES, **body})
    assert status == 200, payload
    assert headers["x-model-version"] == payload["version"] == payload["model"]
    return payload


# --------------------------------------------------------------------------------------------------------------
# The API


def test_models_lists_the_routed_name_and_each_version(ab_server):
    status, payload, _ = call(ab_server.url, "/v1/models")
    assert status == 200
    assert [model["id"] for model in payload["data"]] == ["llm-recipes", "v1", "v2"]
    assert payload["data"][0]["traffic"] == {"v1": 0.5, "v2": 0.5}


def test_an_answer_is_the_versions_own_with_its_id(ab_server, expected):
    for version in ("v1", "v2"):
        answer = completion(ab_server.url, model=version, max_tokens=8)
        assert ID.match(answer["id"]) and answer["version"] == version
        assert answer["choices"][0]["message"]["content"] == expected[version]
        assert answer["usage"]["completion_tokens"] == 8 and answer["choices"][0]["finish_reason"] == "length"
        # committed before the answer came back; no conversation stored without feedback (logging is off)
        rows = read(
            ab_server.state.args.db,
            "SELECT version, completion_tokens, messages, answer FROM responses WHERE id = :id",
            id=answer["id"],
        )
        assert rows == [(version, 8, None, None)]


def test_without_max_tokens_an_answer_gets_the_servers_limit(ab_server, expected):
    answer = completion(ab_server.url, model="v1")
    assert answer["usage"]["completion_tokens"] == 8 and answer["choices"][0]["message"]["content"] == expected["v1"]


def test_a_stream_carries_one_id_and_the_version_in_every_chunk(ab_server, expected):
    events, headers = stream_events(ab_server.url, {"model": "v2", "messages": MESSAGES, "max_tokens": 8})
    assert events[-1] == "[DONE]" and headers["x-model-version"] == "v2"
    chunks = events[:-1]
    assert len({chunk["id"] for chunk in chunks}) == 1 and ID.match(chunks[0]["id"])
    assert all(chunk["version"] == chunk["model"] == "v2" for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks)  # the usage chunk the server asked for is not passed on
    text_ = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text_ == expected["v2"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    rows = read(
        ab_server.state.args.db, "SELECT version, completion_tokens FROM responses WHERE id = :id", id=chunks[0]["id"]
    )
    assert rows == [("v2", 8)]  # recorded before [DONE]


def test_a_stream_gives_usage_when_asked(ab_server):
    body = {"model": "v1", "messages": MESSAGES, "max_tokens": 3, "stream_options": {"include_usage": True}}
    events, _ = stream_events(ab_server.url, body)
    assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == 3


def test_the_traffic_split_tags_each_answer_with_the_version_that_gave_it(ab_server, expected):
    """Routed requests (no model, or the routed name) follow the seeded draws exactly; each answer's text shows
    which model wrote it, and its tag says the same."""
    split = ab_server.state.router.split
    upcoming = TrafficSplit(split.shares)
    upcoming._random.setstate(split._random.getstate())  # the draws this server makes next
    before = ab_server.state.stats.snapshot()
    tags = []
    for index in range(40):
        body = {"max_tokens": 2} if index % 2 else {"model": "llm-recipes", "max_tokens": 2}
        answer = completion(ab_server.url, **body)
        first_two = answer["choices"][0]["message"]["content"]
        assert expected[answer["version"]].startswith(first_two) and not expected[
            "v2" if answer["version"] == "v1" else "v1"
        ].startswith(first_two)
        tags.append(answer["version"])
    assert tags == [upcoming.draw() for _ in range(40)]
    assert 10 <= tags.count("v1") <= 30  # 50/50 over 40 draws
    after = ab_server.state.stats.snapshot()
    assert {v: after[v]["requests"] - before[v]["requests"] for v in ("v1", "v2")} == {
        "v1": tags.count("v1"),
        "v2": tags.count("v2"),
    }


def test_a_split_draws_each_version_at_its_share():
    split = TrafficSplit({"v1": 0.9, "v2": 0.1, "v3": 0.0}, seed=7)
    draws = [split.draw() for _ in range(5000)]
    assert abs(draws.count("v1") / 5000 - 0.9) < 0.02 and "v3" not in draws
    again = TrafficSplit({"v1": 0.9, "v2": 0.1, "v3": 0.0}, seed=7)
    assert [again.draw() for _ in range(5000)] == draws


def test_the_api_key_is_required(ab_server):
    for key in (None, "wrong-key"):
        status, payload, headers = call(ab_server.url, "/v1/chat/completions", {"messages": MESSAGES}, key=key)
        assert status == 401 and payload["error"]["type"] == "authentication_error"
        assert headers["www-authenticate"] == "Bearer"
    assert call(ab_server.url, "/v1/models", key=None)[0] == 401
    assert call(ab_server.url, "/health", key=None)[:2] == (200, {"status": "ok"})


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"messages": [', 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        ({"model": "v1"}, 400, "messages is required"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0]: needs a role"),
        ({"messages": [{"role": "user", "content": 5}]}, 400, "content must be a string"),
        ({"messages": MESSAGES, "max_tokens": 9}, 400, "over this server's limit of 8"),
        ({"messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens must be a positive integer"),
        ({"messages": MESSAGES, "temperature": "hot"}, 400, "temperature must be a number"),
        ({"messages": MESSAGES, "n": 2}, 400, "one answer per request"),
        ({"messages": MESSAGES, "generation_config": "{}"}, 400, "generation_config is not accepted"),
        ({"messages": MESSAGES, "model": "v3"}, 404, "model 'v3' is not served here"),
        ({"messages": MESSAGES, "colour": "red"}, 422, "Unexpected fields"),
        ({"messages": [{"role": "user", "content": "x" * 5000}]}, 413, "over 4096 bytes"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_json_error(ab_server, body, status, message):
    raw = body if isinstance(body, bytes) else None
    got, payload, _ = call(ab_server.url, "/v1/chat/completions", None if raw else body, raw=raw)
    assert got == status and message in payload["error"]["message"], payload
    assert payload["error"]["code"] == status


def test_an_oversize_body_without_a_length_is_cut_off(ab_server):
    """Chunked: no Content-Length to refuse up front, so the server counts what arrives."""
    host, port = ab_server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    chunks = iter([b'{"messages": [{"role": "user", "content": "', b"x" * 3000, b"y" * 3000, b'"}]}'])
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connection.request("POST", "/v1/chat/completions", body=chunks, headers=headers, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and "over 4096 bytes" in json.loads(response.read())["error"]["message"]
    connection.close()
    assert completion(ab_server.url, model="v1", max_tokens=1)["version"] == "v1"  # still serving


# --------------------------------------------------------------------------------------------------------------
# Feedback


def test_feedback_of_every_kind_is_in_the_database_when_the_2xx_comes(ab_server, expected):
    db = ab_server.state.args.db
    first, second = completion(ab_server.url, model="v1")["id"], completion(ab_server.url, model="v2")["id"]
    ups = ab_server.state.stats.snapshot()["v1"]["ratings"]["up"]
    bodies = [
        ({"response_id": first, "rating": "up"}, [("rating", "up", None)]),
        ({"response_id": first, "preferred_over": second}, [("choice", first, second)]),
        ({"response_id": second, "edit": "2 + 3 = 5"}, [("edit", "2 + 3 = 5", None)]),
        (
            {"response_id": second, "rating": "down", "comment": "no"},
            [("rating", "down", None), ("comment", "no", None)],
        ),
    ]
    for body, rows in bodies:
        status, payload, _ = call(ab_server.url, "/v1/feedback", body)
        assert status == 201 and payload["response_id"] == body["response_id"], payload
        query = "SELECT kind, value, other_response_id FROM feedback WHERE id = :id"
        assert [row for id_ in payload["feedback_ids"] for row in read(db, query, id=id_)] == rows
    # the two conversations the feedback judged are stored now, from the server's memory
    query = "SELECT id, messages, answer FROM responses WHERE id IN (:a, :b) ORDER BY version"
    assert read(db, query, a=first, b=second) == [
        (first, json.dumps(MESSAGES), expected["v1"]),
        (second, json.dumps(MESSAGES), expected["v2"]),
    ]
    assert ab_server.state.stats.snapshot()["v1"]["ratings"]["up"] == ups + 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"response_id": "chatcmpl-nope", "rating": "up"}, 404, "unknown response id 'chatcmpl-nope'"),
        ({"response_id": "ANSWER", "rating": "sideways"}, 422, "rating must be 'up' or 'down'"),
        ({"rating": "up"}, 422, "response_id is required"),
        ({"response_id": "ANSWER", "preferred_over": "chatcmpl-nope"}, 404, "unknown response id"),
        ({"response_id": "ANSWER", "comment": "x" * 201}, 413, "at most 200"),
        ({"response_id": "ANSWER", "comment": "x" * 5000}, 413, "over 4096 bytes"),
        (b"{rating: up}", 400, "not valid JSON"),
    ],
)
def test_bad_feedback_gets_a_4xx_and_stores_nothing(ab_server, body, status, message):
    answer_id = completion(ab_server.url, model="v1", max_tokens=1)["id"]
    count = read(ab_server.state.args.db, "SELECT count(*) FROM feedback")
    raw = body if isinstance(body, bytes) else None
    sent = None if raw else {key: answer_id if value == "ANSWER" else value for key, value in body.items()}
    got, payload, _ = call(ab_server.url, "/v1/feedback", sent, raw=raw)
    assert got == status and message in payload["error"]["message"], payload
    assert read(ab_server.state.args.db, "SELECT count(*) FROM feedback") == count


class SharedEngine:
    """A started engine lent to another server (a replica in these tests): that server's stop leaves it running."""

    def __init__(self, engine: Any):
        self.engine = engine

    async def chat(self, version: str, body: dict, response_id: str) -> Any:
        return await self.engine.chat(version, body, response_id)

    def shutdown(self) -> None:
        pass


def test_replicas_share_a_postgresql_store(ab_server, chat_model_dir, postgres_store_url):
    """Two servers on one PostgreSQL database (sharing the A/B server's engine, to stay light): feedback on one
    replica's answer lands through the other, without the conversation, which only the answering replica holds."""
    argv = ["--versions", json.dumps({"v1": str(chat_model_dir)}), "--port", "0", "--db", postgres_store_url]
    argv += ["--max_tokens", "8", "--log_level", "warning"]
    replicas = [start_server(parse_here("serve", argv)[0], engine=SharedEngine(ab_server.state.engine)) for _ in "ab"]
    try:
        status, answer, _ = call(replicas[0].url, "/v1/chat/completions", {"messages": MESSAGES}, key=None)
        assert status == 200 and answer["version"] == "v1"
        feedback = {"response_id": answer["id"], "rating": "up"}
        assert call(replicas[1].url, "/v1/feedback", feedback, key=None)[0] == 201
        query = "SELECT answer, (SELECT count(*) FROM feedback) FROM responses WHERE id = :id"
        assert read(postgres_store_url, query, id=answer["id"]) == [(None, 1)]
        feedback = {"response_id": answer["id"], "comment": "fine"}
        assert call(replicas[0].url, "/v1/feedback", feedback, key=None)[0] == 201
        assert read(postgres_store_url, query, id=answer["id"]) == [(answer["choices"][0]["message"]["content"], 2)]
    finally:
        for replica in replicas:
            replica.stop()


def test_retention_deletes_old_rows_when_the_server_starts(tmp_path, chat_model_dir):
    db = f"sqlite:///{tmp_path / 'feedback.db'}"
    store = FeedbackStore(db)
    for response_id, days in (("old", 45), ("new", 2)):
        store.record_response(ResponseRecord(response_id, "v1", utc_now() - timedelta(days=days), MESSAGES), False)
    store.add_feedback([FeedbackItem("old", "rating", "up"), FeedbackItem("new", "rating", "down")])
    store.close()
    argv = ["--versions", json.dumps({"v1": str(chat_model_dir)}), "--port", "0", "--db", db]
    (args,) = parse_here("serve", [*argv, "--retention_days", "30", "--log_level", "warning"])
    server = start_server(args, engine=SharedEngine(None))  # no model needed: nothing is asked
    try:
        deadline = time.monotonic() + 30
        while read(db, "SELECT count(*) FROM responses") != [(1,)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert read(db, "SELECT id FROM responses") == [("new",)]
        assert read(db, "SELECT response_id, value FROM feedback") == [("new", "down")]
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------------------
# The console script


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "BASE"], "has no chat template; serve a chat model"),
        (["--model", "CHAT", "--versions", '{"v2": "CHAT"}'], "set exactly one of model"),
        (["--versions", '{"v1": "CHAT"}', "--traffic", '{"v9": 1}'], "traffic: 'v9' is not a served version"),
        (["--versions", '{"llm-recipes": "CHAT"}'], "is model_name, the name that routes"),
        (["--model", "CHAT", "--engine", "vllm"], "engine: vllm needs the vllm package"),
        (["--model", "CHAT", "--api_key_env", "LLM_RECIPES_NO_SUCH_KEY"], "LLM_RECIPES_NO_SUCH_KEY is not set"),
        (["--model", "CHAT", "--db", "mysql://me@db/feedback"], "db: mysql is not supported"),
        (["--model", "CHAT", "--max_tokens", "0"], "max_tokens: 0 must be >= 1"),
    ],
)
def test_config_mistakes_are_one_line_before_any_model_loads(argv, message, base_model_dir, chat_model_dir, capsys):
    if find_vllm() is not None and "vllm" in argv:
        pytest.skip("vllm is installed here")
    paths = {"BASE": str(base_model_dir), "CHAT": str(chat_model_dir)}
    argv = [re.sub("BASE|CHAT", lambda match: paths[match.group(0)], token) for token in argv]
    assert cli_main(["serve", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_the_demo_config_holds_only_serve_fields():
    """configs/demo/serve.yaml reads the demo pipeline's outputs (absent here): its fields are checked by name and
    type, not against folders."""
    from llm_recipes.configs import parse_config
    from llm_recipes.serving.config import ServeArguments

    (args,) = parse_config((ServeArguments,), ["--config", str(DEMO_CONFIGS / "serve.yaml")])
    assert (args.traffic, args.host, args.db) == (
        {"v1": 90, "v2": 10},
        "127.0.0.1",
        "sqlite:///outputs/demo/feedback.db",
    )


@pytest.fixture(scope="module")
def quantized_chat_dir(tmp_path_factory, chat_model_dir) -> Path:
    """The chat model quantized by the quantize stage's code (bitsandbytes int8, as in the demo), with a tokenizer."""
    from llm_recipes.compress.quantize import QuantizationSpec, quantize_folder

    folder = tmp_path_factory.mktemp("quantized") / "int8"
    quantize_folder(chat_model_dir, folder, QuantizationSpec("bnb_int8"))
    AutoTokenizer.from_pretrained(chat_model_dir).save_pretrained(folder)
    return folder


def console_script() -> list[str]:
    installed = Path(sys.executable).with_name("llm-recipes")
    return [str(installed)] if installed.is_file() else [sys.executable, "-m", "llm_recipes.cli"]


@pytest.mark.slow
def test_a_model_that_cannot_load_is_one_line(tmp_path, chat_model_dir):
    """Found only when the model's process loads it: still one `error:` line naming the version, exit 2."""
    broken = tmp_path / "broken"
    shutil.copytree(chat_model_dir, broken)
    (broken / "model.safetensors").write_bytes((chat_model_dir / "model.safetensors").read_bytes()[:1000])
    command = [*console_script(), "serve", "--model", str(broken), "--port", "0", "--db", f"sqlite:///{tmp_path}/f.db"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("error: broken: the model did not load: SafetensorError")


@pytest.mark.slow
def test_llm_recipes_serve_a_quantized_model_with_logging(tmp_path, quantized_chat_dir):
    """As a user runs it: the model loads, the printed address answers, conversations are logged, Ctrl+C stops it."""
    from llm_recipes.evaluation.loading import load_model

    db = f"sqlite:///{tmp_path / 'feedback.db'}"
    command = [*console_script(), "serve", "--model", str(quantized_chat_dir), "--port", "0", "--db", db]
    command += ["--log_conversations", "true", "--max_tokens", "6", "--log_level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = process.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/v1 -- feedback store sqlite:///", line)
        assert match, line + process.stderr.read() if process.poll() is not None else line
        url = match.group(1)
        status, models, _ = call(url, "/v1/models", key=None)
        assert status == 200 and [model["id"] for model in models["data"]] == ["llm-recipes", "int8"]
        status, answer, _ = call(url, "/v1/chat/completions", {"messages": MESSAGES}, key=None)
        assert status == 200 and answer["version"] == "int8" and ID.match(answer["id"])
        model = load_model(str(quantized_chat_dir), device="cpu")
        assert answer["choices"][0]["message"]["content"] == generated(
            model, AutoTokenizer.from_pretrained(quantized_chat_dir), 6
        )
        # logged as it was answered, before any feedback
        rows = read(db, "SELECT version, messages, answer FROM responses WHERE id = :id", id=answer["id"])
        assert rows == [("int8", json.dumps(MESSAGES), answer["choices"][0]["message"]["content"])]
        status, _, _ = call(url, "/v1/feedback", {"response_id": answer["id"], "rating": "down"}, key=None)
        assert status == 201 and read(db, "SELECT kind, value FROM feedback") == [("rating", "down")]
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err[-3000:]
    assert "Traceback" not in err
