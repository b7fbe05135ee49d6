"""An engine that is another OpenAI-compatible server: each one a child process on 127.0.0.1 (engine: vllm runs
`vllm serve`, vllm_command.py builds its command), our API in front of it.

Why a child process and a proxy rather than vLLM's Python engine in ours: `vllm serve` is the interface vLLM keeps
stable and documents (its OpenAI server renders the chat template, applies the generation config, batches and
streams), and a process boundary keeps CUDA, its memory and its crashes out of the process that holds the feedback
store. What is ours: starting the children and waiting until they answer `/health` (a child that exits first is one
line naming its last log line), relaying chat requests with httpx (the request's `model` set to the name the child
serves it under, the answer's `id`, in every chunk of a stream too, set to our response id so feedback on it
matches), the upstream's 4xx passed on as ours and its 5xx or silence as an engine error (502; a child that died
is named with its exit and last log line), and stopping the children -- their whole process group, so nothing they
started outlives the server. Their logs live in a temporary folder, removed at the end when every child ended well
(exit 0, or our SIGTERM) and kept when one did not (an error line named its log).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from llm_recipes.errors import UserError, one_line
from llm_recipes.serving.app import sse
from llm_recipes.serving.middleware import EngineFailed

POLL_S = 0.5
STOP_GRACE_S = 30.0
# a child killed mid-answer closes its sockets a moment before it can be seen to have exited: wait that long for it
EXIT_SEEN_S = 2.0
# a generation may run for minutes before its first byte (non-streaming): no read timeout, the child bounds it
TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=60.0, pool=None)
# what vLLM puts before a log line: the process that wrote it, then the level, time and source
PROCESS_PREFIX = re.compile(r"^\(\w+ pid=\d+\) ")
LOG_PREFIX = re.compile(r"^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) [\d-]+ [\d:.]+ \[[^\]]*\] ")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b")
# vLLM's server says this once its engine process died; the engine's own error, logged before it, is the reason
WRAPPER = "See root cause above"


@dataclass
class ChildServer:
    """One OpenAI-compatible server to run: its command for a port, and the versions it answers."""

    versions: list[str]
    command: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Running:
    child: ChildServer
    process: subprocess.Popen
    url: str
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def last_log_line(log: Path) -> str:
    """Why a child stopped: the last exception line of its log that is not vLLM's "see root cause above" wrapper,
    else its last line that is not blank or part of a traceback; without vLLM's prefixes."""
    try:
        raw = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "no log"
    lines = [LOG_PREFIX.sub("", PROCESS_PREFIX.sub("", line)) for line in raw]
    lines = [line for line in lines if line.strip() and not line[0].isspace()]
    lines = [line.strip() for line in lines if not line.startswith(("Traceback", "During handling", "File ", "^"))]
    errors = [line for line in lines if EXCEPTION_LINE.match(line) and WRAPPER not in line]
    return (errors or lines or ["its log is empty"])[-1]


def exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def upstream_message(response: httpx.Response) -> str:
    """The error message of an OpenAI-style error body (`{"error": {"message"}}`, vLLM's older `{"message"}`,
    FastAPI's `{"detail"}`), else the body's start."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(payload, dict):
        for key in ("message", "detail"):
            if payload.get(key):
                value = payload[key]
                return value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(payload)[:500]


class UpstreamEvents:
    """The child's SSE stream as whole events (`data: {...}\\n\\n`), each chunk's `id` ours; its `[DONE]` dropped
    (our app sends its own after recording the answer). `aclose` closes the upstream response, which stops the
    child's generation when a client leaves. `broke` says why the stream broke off, as an error event."""

    def __init__(self, response: httpx.Response, response_id: str, broke: Callable[[str], Awaitable[str]]):
        self.response = response
        self.broke = broke
        self.events = self._read(response_id)

    def __aiter__(self) -> UpstreamEvents:
        return self

    async def __anext__(self) -> str:
        return await self.events.__anext__()

    async def aclose(self) -> None:
        await self.events.aclose()
        await self.response.aclose()

    async def _read(self, response_id: str) -> AsyncIterator[str]:
        data: list[str] = []
        try:
            async for line in self.response.aiter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:  # a blank line ends an event
                    payload, data = "\n".join(data), []
                    if payload.strip() == "[DONE]":
                        return
                    yield rewrite_id(payload, response_id)
        except httpx.HTTPError as err:  # the child went away mid-answer: an error event, recorded as the engine's
            yield sse({"error": await self.broke(f"its server's stream broke off ({type(err).__name__}: {err})")})
            return
        if data and "\n".join(data).strip() != "[DONE]":  # a last event without its blank line
            yield rewrite_id("\n".join(data), response_id)


def rewrite_id(payload: str, response_id: str) -> str:
    chunk = json.loads(payload)
    if isinstance(chunk, dict) and "error" not in chunk:
        chunk["id"] = response_id
    return sse(chunk)


class UpstreamEngine:
    """Child servers behind our API: `routes` maps each version to (its child's index, the model name to ask)."""

    def __init__(self, name: str, children: list[ChildServer], routes: dict[str, tuple[int, str]], timeout: float):
        self.name = name
        self.children = children
        self.routes = routes
        self.timeout = timeout
        self.running: list[Running] = []
        self.client: httpx.AsyncClient | None = None
        self.logs: Path | None = None  # made at the start: an engine refused before it starts leaves nothing
        self.keep_logs = False  # set once an error line names a log

    def start(self) -> None:
        """Every child started side by side and answering `/health`; any that does not fails the start, and the
        others are stopped (no orphans)."""
        atexit.register(self.shutdown)  # a server that dies before its own shutdown still stops its children
        self.logs = Path(tempfile.mkdtemp(prefix=f"llm-recipes-{self.name}-"))
        try:
            for index, child in enumerate(self.children):
                port = free_port()
                log = self.logs / f"{index}-{'-'.join(child.versions)}.log"
                with log.open("wb") as out:  # the child holds its own copy of the file
                    process = subprocess.Popen(
                        child.command(port),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, **child.env},
                        start_new_session=True,  # its own process group: stopped whole, with what it starts
                    )
                self.running.append(Running(child, process, f"http://127.0.0.1:{port}", log))
                names = ", ".join(child.versions)
                print(f"engine {self.name}: {names} starting (pid {process.pid}, log {log})", file=sys.stderr)
            self._wait_until_answering()
        except BaseException:
            self.shutdown()
            raise

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self.timeout
        waiting = list(self.running)
        with httpx.Client(trust_env=False, timeout=5.0) as client:  # no proxy between us and 127.0.0.1
            while waiting:
                for running in list(waiting):
                    names = ", ".join(running.child.versions)
                    code = running.process.poll()
                    if code is not None:
                        self.keep_logs = True
                        raise UserError(
                            f"{names}: the {self.name} server stopped before it answered (exit {code}): "
                            f"{one_line(last_log_line(running.log))} (log: {running.log})"
                        )
                    try:
                        if client.get(f"{running.url}/health").status_code == 200:
                            waiting.remove(running)
                    except httpx.HTTPError:
                        pass  # not listening yet
                if waiting and time.monotonic() > deadline:
                    names = ", ".join(name for running in waiting for name in running.child.versions)
                    self.keep_logs = True
                    raise UserError(
                        f"{names}: the {self.name} server did not answer within start_timeout ({self.timeout:g} s); "
                        f"its log: {waiting[0].log}"
                    )
                if waiting:
                    time.sleep(POLL_S)

    async def chat(self, version: str, body: dict[str, Any], response_id: str) -> Any:
        """The child's answer: a JSONResponse, or a StreamingResponse of whole SSE events; its ids ours."""
        index, model = self.routes[version]
        running = self.running[index]
        url = f"{running.url}/v1/chat/completions"
        if self.client is None:  # made in the server's event loop, which it belongs to
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
            self.client = httpx.AsyncClient(trust_env=False, timeout=TIMEOUT, limits=limits)
        request = self.client.build_request("POST", url, json={**body, "model": model})
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as err:
            raise EngineFailed(
                await self._why(version, running, f"no answer from its server ({type(err).__name__}: {err})")
            ) from None
        if response.status_code >= 400 or not body.get("stream"):
            try:
                await response.aread()
            except httpx.HTTPError as err:
                why = await self._why(version, running, f"its server's answer broke off ({type(err).__name__})")
                raise EngineFailed(why) from None
            finally:
                await response.aclose()
        if response.status_code >= 400:
            message = upstream_message(response)
            if response.status_code < 500:
                raise HTTPException(response.status_code, message)  # the request's fault, said as the child said it
            raise EngineFailed(f"{version}: its server answered {response.status_code}: {message}")
        if body.get("stream"):
            broke = functools.partial(self._why, version, running)
            return StreamingResponse(UpstreamEvents(response, response_id, broke), media_type="text/event-stream")
        try:
            completion = response.json()
        except ValueError:
            raise EngineFailed(f"{version}: its server answered something other than JSON") from None
        completion["id"] = response_id
        return JSONResponse(completion)

    async def _why(self, version: str, running: Running, what: str) -> str:
        """Why a request to a child failed: the child's exit and last log line once it has stopped, else `what`."""
        deadline = time.monotonic() + EXIT_SEEN_S
        while (code := running.process.poll()) is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if code is None:
            return f"{version}: {what}"
        self.keep_logs = True
        last = one_line(last_log_line(running.log))
        return f"{version}: its server stopped ({exit_text(code)}): {last} (log: {running.log})"

    def shutdown(self) -> None:
        """SIGTERM to each child's process group, SIGKILL to whatever is left after the grace period; the logs
        removed when every child ended well (exit 0, or our SIGTERM), else kept and named. Runs twice (the app's
        end, then atexit): the second has nothing to stop."""
        self.client = None  # its connections go with the children
        stopping, self.running = self.running, []
        for running in stopping:
            signal_group(running.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for running in stopping:
            try:
                running.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            signal_group(running.process, signal.SIGKILL)  # the child's own children too, whether it stopped or not
            try:
                running.process.wait(5)  # reaped: its exit is known
            except subprocess.TimeoutExpired:
                pass
        for running in stopping:
            code = running.process.returncode
            if code not in (0, -signal.SIGTERM):
                self.keep_logs = True
                names = ", ".join(running.child.versions)
                ended = "did not exit" if code is None else exit_text(code)
                print(
                    f"engine {self.name}: {names}: its server ended badly ({ended}); log kept: {running.log}",
                    file=sys.stderr,
                )
        if self.logs is not None and not self.keep_logs:
            shutil.rmtree(self.logs, ignore_errors=True)


def signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already
