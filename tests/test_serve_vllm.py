"""`llm-recipes serve --engine vllm` as a user runs it, with a stand-in for the `vllm` executable: vLLM needs CUDA
and is not installed where these tests run. The stand-in, first on PATH, records the command it is given and refuses
any it does not understand (argparse, the flags we promise), then runs a real OpenAI-compatible server on the port
it was told: our own `llm-recipes serve --engine transformers`, serving the folder under `--served-model-name` and
each `--lora-modules NAME=FOLDER` under its NAME (with STAND_IN_HANG set, each of its streams stops after its first
event and waits, to be killed mid-answer). So what is checked here is our side: the command, the start, the
relay (ids, streaming, errors, feedback) and the stop; vLLM itself answering on a GPU is not."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_serve
from test_serve import ID, MESSAGES, call, console_script, read, stream_events

from llm_recipes.cli import main as cli_main
from llm_recipes.cli import parse_here
from llm_recipes.errors import UserError
from llm_recipes.serving.checks import find_vllm, served_versions
from llm_recipes.serving.engine import make_engine
from llm_recipes.serving.upstream import ChildServer, UpstreamEngine

# test_serve's fixtures: the LoRA version of the tiny chat model, and each version's own greedy answer
lora_dir, expected = test_serve.lora_dir, test_serve.expected

STAND_IN = """\
#!{python}
import argparse, json, os, sys, time
from pathlib import Path

DYING = {dying!r}
HANG = '''
import asyncio, sys
from llm_recipes.cli import main
from llm_recipes.serving import app

relay = app.relay_stream
async def first_event_then_wait(*args, **kwargs):
    async for piece in relay(*args, **kwargs):
        yield piece
        await asyncio.sleep(3600)
app.relay_stream = first_event_then_wait
sys.exit(main(sys.argv[1:]))
'''
record = Path(os.environ["STAND_IN_RECORD"])
(record / f"{{os.getpid()}}.json").write_text(json.dumps(sys.argv[1:]))
parser = argparse.ArgumentParser(prog="vllm")
parser.add_argument("command", choices=["serve"])
parser.add_argument("model")
for flag in ("--host", "--port", "--served-model-name", "--dtype", "--generation-config", "--tokenizer",
             "--quantization", "--max-loras", "--max-lora-rank", "--gpu-memory-utilization"):
    parser.add_argument(flag)
parser.add_argument("--trust-remote-code", action="store_true")
parser.add_argument("--enable-lora", action="store_true")
parser.add_argument("--lora-modules", nargs="+", default=[])
args = parser.parse_args()
failing = os.environ.get("STAND_IN_FAIL")
if failing and failing in args.model:  # as vLLM dies: its engine's error, then the server's wrapper of it
    print(DYING, file=sys.stderr)
    sys.exit(1)
if failing:  # the other server of that test: started, never answering, to be stopped by the failed start
    time.sleep(600)
assert args.host == "127.0.0.1" and args.generation_config == "auto" and args.dtype == "auto", args
assert bool(args.lora_modules) == args.enable_lora, args
versions = {{args.served_model_name: args.model}}
versions.update(module.split("=", 1) for module in args.lora_modules)
command = [{script!r}, *{prefix!r}]
if os.environ.get("STAND_IN_HANG"):  # the same server, each of its streams held after its first event
    command = [sys.executable, "-c", HANG]
os.execv(command[0], [*command, "serve", "--versions", json.dumps(versions), "--model_name",
         "stand-in", "--host", args.host, "--port", args.port, "--db", f"sqlite:///{{record}}/inner.db",
         "--max_tokens", "64", "--log_level", "warning"])
"""


# the end of a vLLM log whose engine could not start (the shape of vLLM 0.1x's logs)
DYING = """\
(APIServer pid=1) INFO 12-07 21:00:00 [api_server.py:1] vLLM API server version 0.11.0
(EngineCore_DP0 pid=2) ERROR 12-07 21:00:01 [core.py:708] EngineCore failed to start.
(EngineCore_DP0 pid=2) ERROR 12-07 21:00:01 [core.py:708] Traceback (most recent call last):
(EngineCore_DP0 pid=2) ERROR 12-07 21:00:01 [core.py:708]   File "core.py", line 699, in run_engine_core
(EngineCore_DP0 pid=2) ERROR 12-07 21:00:01 [core.py:708] ValueError: No available memory for the cache blocks.
(APIServer pid=1) Traceback (most recent call last):
(APIServer pid=1)   File "utils.py", line 782, in wait_for_engine_startup
(APIServer pid=1)     raise RuntimeError(
(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"""


def stand_in_path(tmp: Path) -> dict[str, str]:
    """An environment whose PATH finds the stand-in `vllm` first; what it records lands in tmp/record."""
    (tmp / "bin").mkdir()
    (tmp / "record").mkdir()
    command = console_script()
    script = STAND_IN.format(python=sys.executable, script=command[0], prefix=command[1:], dying=DYING)
    (tmp / "bin" / "vllm").write_text(script)
    (tmp / "bin" / "vllm").chmod(0o755)
    return {"PATH": f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}", "STAND_IN_RECORD": str(tmp / "record")}


def recorded(tmp: Path) -> dict[int, list[str]]:
    return {int(path.stem): json.loads(path.read_text()) for path in (tmp / "record").glob("*.json")}


def group_members(group: int) -> list[int]:
    """Processes of a process group that are still running (zombies aside)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(stat.parent.name))
    return members


def wait_for_no_members(group: int, seconds: float = 15) -> list[int]:
    deadline = time.monotonic() + seconds
    while group_members(group) and time.monotonic() < deadline:
        time.sleep(0.2)
    return group_members(group)


def child_logs(tmp: Path) -> list[Path]:
    """The log of each child server, as our server named it at its start (in tmp/stderr.txt)."""
    return [Path(path) for path in re.findall(r"starting \(pid \d+, log (.+)\)$", read_stderr(tmp), re.M)]


def read_stderr(tmp: Path) -> str:
    return (tmp / "stderr.txt").read_text()


@contextlib.contextmanager
def serving(tmp: Path, versions: dict[str, Path], **env: str) -> Iterator[dict[str, Any]]:
    """`llm-recipes serve --engine vllm` over `versions` with the stand-in, until the block ends (then Ctrl+C)."""
    env = {**os.environ, **stand_in_path(tmp), **env}
    command = [*console_script(), "serve", "--engine", "vllm", "--port", "0", "--start_timeout", "240"]
    command += ["--versions", json.dumps({name: str(folder) for name, folder in versions.items()})]
    command += ["--db", f"sqlite:///{tmp / 'feedback.db'}", "--max_tokens", "8", "--log_level", "warning"]
    with (tmp / "stderr.txt").open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=tmp, env=env)
        try:
            line = process.stdout.readline()
            match = re.search(r"at (http://127\.0\.0\.1:\d+)/v1 -- feedback store sqlite:///", line)
            assert match, line + read_stderr(tmp)[-3000:]
            yield {"url": match.group(1), "process": process, "tmp": tmp, "db": f"sqlite:///{tmp / 'feedback.db'}"}
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.communicate(timeout=60)


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory, chat_model_dir, lora_dir):
    """`llm-recipes serve --engine vllm` over the chat model (v1) and a LoRA adapter on it (v2): one stand-in server."""
    with serving(tmp_path_factory.mktemp("vllm"), {"v1": chat_model_dir, "v2": lora_dir}) as server:
        yield server


def test_the_vllm_command_is_what_we_promise(vllm_server, chat_model_dir, lora_dir):
    """One `vllm serve` for both versions: the base under v1's name, the adapter as v2's LoRA module."""
    [(_, argv)] = recorded(vllm_server["tmp"]).items()
    port = argv[argv.index("--port") + 1]
    assert argv == [
        "serve", str(chat_model_dir.resolve()), "--host", "127.0.0.1", "--port", port,
        "--served-model-name", "v1", "--dtype", "auto", "--generation-config", "auto",
        "--enable-lora", "--max-loras", "1", "--max-lora-rank", "8", "--lora-modules", f"v2={lora_dir.resolve()}",
    ]  # fmt: skip
    assert port.isdigit() and int(port) != int(vllm_server["url"].rsplit(":", 1)[1])


def test_answers_are_the_models_own_with_our_id_and_version(vllm_server, expected):
    for version in ("v1", "v2"):
        status, answer, headers = call(
            vllm_server["url"], "/v1/chat/completions", {"messages": MESSAGES, "model": version}
        )
        assert status == 200, answer
        assert ID.match(answer["id"]) and answer["version"] == answer["model"] == headers["x-model-version"] == version
        assert answer["choices"][0]["message"]["content"] == expected[version]
        assert answer["usage"]["completion_tokens"] == 8 and answer["choices"][0]["finish_reason"] == "length"
        rows = read(
            vllm_server["db"], "SELECT version, completion_tokens FROM responses WHERE id = :id", id=answer["id"]
        )
        assert rows == [(version, 8)]  # our id, recorded before the answer came back


def test_a_stream_carries_our_id_in_every_chunk(vllm_server, expected):
    events, headers = stream_events(vllm_server["url"], {"model": "v2", "messages": MESSAGES})
    assert events[-1] == "[DONE]" and headers["x-model-version"] == "v2"
    chunks = events[:-1]
    assert len({chunk["id"] for chunk in chunks}) == 1 and ID.match(chunks[0]["id"])
    assert all(chunk["version"] == chunk["model"] == "v2" for chunk in chunks)
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks) == expected["v2"]
    rows = read(
        vllm_server["db"], "SELECT version, completion_tokens FROM responses WHERE id = :id", id=chunks[0]["id"]
    )
    assert rows == [("v2", 8)]


def test_feedback_on_a_relayed_answer_is_stored(vllm_server, expected):
    _, answer, _ = call(vllm_server["url"], "/v1/chat/completions", {"messages": MESSAGES, "model": "v1"})
    status, payload, _ = call(vllm_server["url"], "/v1/feedback", {"response_id": answer["id"], "rating": "up"})
    assert status == 201, payload
    query = "SELECT r.answer, f.kind, f.value FROM feedback f JOIN responses r ON r.id = f.response_id WHERE r.id = :id"
    assert read(vllm_server["db"], query, id=answer["id"]) == [(expected["v1"], "rating", "up")]


def test_the_upstreams_4xx_is_a_4xx_with_its_message(vllm_server):
    body = {"messages": MESSAGES, "model": "v1", "colour": "red"}  # passes our checks; the server behind refuses it
    status, payload, _ = call(vllm_server["url"], "/v1/chat/completions", body)
    assert status == 422 and payload["error"]["code"] == 422 and "colour" in payload["error"]["message"], payload
    status, payload, _ = call(vllm_server["url"], "/v1/chat/completions", {**body, "stream": True})
    assert status == 422 and "colour" in payload["error"]["message"], payload


def test_stopping_the_server_stops_its_vllm_server(vllm_server):
    """Ctrl+C: exit 0, the child's whole process group (the stand-in's own model processes too) is gone, and so is
    the folder of its log (it ended well: nothing to look at)."""
    [child] = recorded(vllm_server["tmp"])
    [log] = child_logs(vllm_server["tmp"])
    assert group_members(child) and log.is_file()  # running while the server is
    process = vllm_server["process"]
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    assert process.returncode == 0, read_stderr(vllm_server["tmp"])[-3000:]
    assert wait_for_no_members(child) == []
    assert log.name == "0-v1-v2.log" and not log.parent.exists()
    assert "log kept" not in read_stderr(vllm_server["tmp"])


def test_a_vllm_server_that_dies_while_serving_is_a_502_and_its_log_is_kept(tmp_path, chat_model_dir):
    """The child killed (SIGKILL, its whole group) in the middle of a stream: the stream ends with an error event
    naming the child's exit and log, no [DONE], and no answer recorded; the next request is a 502 JSON error at
    once, not a hang; /health and /v1/models still answer; Ctrl+C still exits 0, keeping the log and naming it."""
    with serving(tmp_path, {"v1": chat_model_dir}, STAND_IN_HANG="1") as server:
        [child] = recorded(tmp_path)
        [log] = child_logs(tmp_path)
        stopped = re.escape("v1: its server stopped (killed by SIGKILL): ") + r".+" + re.escape(f" (log: {log})")
        body = {"model": "v1", "messages": MESSAGES, "stream": True}
        with httpx.Client(trust_env=False, timeout=60) as client:
            with client.stream("POST", f"{server['url']}/v1/chat/completions", json=body) as response:
                assert response.status_code == 200
                events = (line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: "))
                first = json.loads(next(events))
                os.killpg(child, signal.SIGKILL)  # the child holds the rest of its answer: it dies mid-stream
                rest = list(events)
        assert ID.match(first["id"]) and first["version"] == "v1" and "error" not in first, first
        assert len(rest) == 1 and set(json.loads(rest[0])) == {"error"}, rest  # no [DONE] after it
        error = json.loads(rest[0])["error"]
        assert error["code"] == 500 and re.fullmatch(stopped, error["message"]), error
        assert read(server["db"], "SELECT id FROM responses") == []  # a broken answer is not recorded
        assert wait_for_no_members(child) == []

        started = time.monotonic()
        status, payload, _ = call(server["url"], "/v1/chat/completions", {"model": "v1", "messages": MESSAGES})
        assert status == 502 and set(payload) == {"error"} and payload["error"]["code"] == 502, payload
        assert re.fullmatch("the model's engine failed: " + stopped, payload["error"]["message"]), payload
        assert time.monotonic() - started < 10
        assert call(server["url"], "/health")[:2] == (200, {"status": "ok"})
        status, models, _ = call(server["url"], "/v1/models")
        assert status == 200 and [model["id"] for model in models["data"]][1:] == ["v1"], models
        process = server["process"]
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert process.returncode == 0, read_stderr(tmp_path)[-3000:]
    assert f"engine vllm: v1: its server ended badly (killed by SIGKILL); log kept: {log}" in read_stderr(tmp_path)
    assert log.is_file()
    shutil.rmtree(log.parent)


def test_a_vllm_server_that_dies_at_start_is_one_line_and_leaves_nothing(tmp_path, chat_model_dir):
    """v2's server dies as vLLM does (its engine's error, then the wrapper); v1's, still starting, is stopped."""
    copy = tmp_path / "dying-copy"
    shutil.copytree(chat_model_dir, copy)
    env = {**os.environ, **stand_in_path(tmp_path), "STAND_IN_FAIL": "dying-copy"}
    versions = json.dumps({"v1": str(chat_model_dir), "v2": str(copy)})
    command = [*console_script(), "serve", "--engine", "vllm", "--versions", versions, "--port", "0"]
    command += ["--db", f"sqlite:///{tmp_path / 'f.db'}", "--start_timeout", "120"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1, result.stderr[-3000:]
    assert re.fullmatch(
        r"error: v2: the vllm server stopped before it answered \(exit 1\): "
        r"ValueError: No available memory for the cache blocks\. \(log: .*1-v2\.log\)",
        errors[0],
    ), errors[0]
    assert time.monotonic() - started < 120  # not the start timeout: the exit is seen at once
    # each child as started (pid and log); v1's may be stopped before its stand-in records its command
    children = re.findall(r"^engine vllm: (v1|v2) starting \(pid (\d+), log (.+)\)$", result.stderr, re.M)
    assert [version for version, _, _ in children] == ["v1", "v2"], result.stderr[-3000:]
    assert all(wait_for_no_members(int(pid)) == [] for _, pid, _ in children)
    log = Path(re.search(r"\(log: (.+)\)$", errors[0]).group(1))
    assert log == Path(children[1][2])
    assert DYING.splitlines()[-1] in log.read_text()  # the log the error names is kept, with its neighbour's
    assert sorted(path.name for path in log.parent.iterdir()) == ["0-v1.log", "1-v2.log"]
    shutil.rmtree(log.parent)


def test_a_vllm_server_that_does_not_answer_in_time_is_stopped_and_its_log_kept(tmp_path, monkeypatch):
    """The start timeout's error names the child's log: the child is stopped, its log stays to be read."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    loading = [sys.executable, "-c", "import time; print('still loading', flush=True); time.sleep(120)"]
    engine = UpstreamEngine("vllm", [ChildServer(["v1"], lambda _port: loading)], {"v1": (0, "v1")}, timeout=2.0)
    with pytest.raises(UserError) as raised:
        engine.start()
    [folder] = tmp_path.glob("llm-recipes-vllm-*")
    log = folder / "0-v1.log"
    assert str(raised.value) == f"v1: the vllm server did not answer within start_timeout (2 s); its log: {log}"
    assert log.read_text() == "still loading\n"
    engine.shutdown()  # as atexit calls it again: the kept log stays
    assert log.is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("dora", "versions: v2: vLLM does not serve DoRA adapters; merge it with `llm-recipes export` first"),
        ("modules", "versions: v2: vLLM does not serve an adapter that saves whole modules (embed_tokens)"),
        ("torchao", "is torchao-quantized, our CPU format, not served through vLLM"),
        ("cpu", "device: engine: vllm runs on a CUDA GPU (auto, cuda or cuda:N), not 'cpu'"),
    ],
)
def test_what_vllm_cannot_serve_is_refused_before_it_starts(
    change, message, tmp_path, chat_model_dir, lora_dir, monkeypatch, capsys
):
    monkeypatch.setenv("PATH", stand_in_path(tmp_path)["PATH"])
    assert find_vllm() == str(tmp_path / "bin" / "vllm")
    v2 = tmp_path / "v2"
    shutil.copytree(chat_model_dir if change == "torchao" else lora_dir, v2)
    config_file = v2 / ("config.json" if change == "torchao" else "adapter_config.json")
    config = json.loads(config_file.read_text())
    if change == "torchao":
        config["quantization_config"] = {"quant_method": "torchao", "quant_type": {"default": {}}}
    config.update({"dora": {"use_dora": True}, "modules": {"modules_to_save": ["embed_tokens"]}}.get(change, {}))
    config_file.write_text(json.dumps(config))
    argv = ["serve", "--engine", "vllm", "--versions", json.dumps({"v1": str(chat_model_dir), "v2": str(v2)})]
    argv += ["--device", "cpu"] if change == "cpu" else []
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert recorded(tmp_path) == {}  # nothing was started


def test_each_weights_folder_gets_one_vllm_server(tmp_path, chat_model_dir, lora_dir, monkeypatch):
    """The commands for four versions on `device: cuda:1`, without starting them: the chat model and a LoRA adapter
    on it share a server; a bitsandbytes folder gets its own, quantized; an adapter saved with its own tokenizer
    gets its own, with `--tokenizer`; three servers on one GPU split its memory."""
    monkeypatch.setenv("PATH", stand_in_path(tmp_path)["PATH"])
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    int8, tokenized = tmp_path / "int8", tmp_path / "tokenized"
    shutil.copytree(chat_model_dir, int8)
    config = json.loads((int8 / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (int8 / "config.json").write_text(json.dumps(config))
    shutil.copytree(lora_dir, tokenized)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (chat_model_dir / name).is_file():
            shutil.copy(chat_model_dir / name, tokenized / name)
    versions = {"v1": chat_model_dir, "v2": int8, "v3": lora_dir, "v4": tokenized}
    argv = ["--engine", "vllm", "--versions", json.dumps({k: str(v) for k, v in versions.items()})]
    (args,) = parse_here("serve", [*argv, "--device", "cuda:1", "--dtype", "bfloat16", "--trust_remote_code", "true"])
    engine = make_engine(args, served_versions(args))
    stand_in, chat = str(tmp_path / "bin" / "vllm"), str(chat_model_dir.resolve())
    common = ["--host", "127.0.0.1", "--port", "1234"]
    options = ["--dtype", "bfloat16", "--generation-config", "auto"]
    gpu = ["--gpu-memory-utilization", "0.30"]
    lora = ["--enable-lora", "--max-loras", "1", "--max-lora-rank", "8", "--lora-modules"]
    assert [child.command(1234) for child in engine.children] == [
        [stand_in, "serve", chat, *common, "--served-model-name", "v1", *options, "--trust-remote-code",
         *lora, f"v3={lora_dir.resolve()}", *gpu],
        [stand_in, "serve", str(int8.resolve()), *common, "--served-model-name", "v2", *options,
         "--trust-remote-code", "--quantization", "bitsandbytes", *gpu],
        [stand_in, "serve", chat, *common, "--served-model-name", "base", *options, "--tokenizer",
         str(tokenized.resolve()), "--trust-remote-code", *lora, f"v4={tokenized.resolve()}", *gpu],
    ]  # fmt: skip
    assert [child.versions for child in engine.children] == [["v1", "v3"], ["v2"], ["v4"]]
    assert all(child.env == {"CUDA_VISIBLE_DEVICES": "1"} for child in engine.children)
    assert engine.routes == {"v1": (0, "v1"), "v2": (1, "v2"), "v3": (0, "v3"), "v4": (2, "v4")}
    assert list(tmp_path.glob("llm-recipes-*")) == []  # an engine not started has no log folder to leave behind
