"""Our FastAPI app around the engine: OpenAI's `/v1/chat/completions` (streaming too) and `/v1/models`, plus
`/v1/feedback`, `/health` and `/metrics` (Prometheus, metrics.py).

The engine (engine.py) renders the chat template, generates and builds the OpenAI response; here each request is
checked against the limits, routed to a version (routing.py), given its response id (`chatcmpl-<32 hex>`, ours, so
a client's x-request-id cannot collide two rows), tagged with the version that answered (`model` and `version` in
the body and every chunk, and the `x-model-version` header), timed and counted (stats.py), and recorded in the
feedback store (store.py) before the client gets it: for a stream, before its closing `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from transformers.cli.serving.utils import CancelOnDisconnect, EventStream

from llm_recipes.errors import UserError
from llm_recipes.serving.config import ServeArguments
from llm_recipes.serving.feedback import parse_feedback
from llm_recipes.serving.metrics import ServingMetrics, install_metrics_route
from llm_recipes.serving.middleware import ApiKey, BodyLimit, install_error_handlers, read_json
from llm_recipes.serving.page import add_chat_page
from llm_recipes.serving.routing import Router, TrafficSplit
from llm_recipes.serving.stats import ServingStats
from llm_recipes.serving.store import FeedbackStore, RecentResponses, ResponseRecord, utc_now

logger = logging.getLogger("llm_recipes.serving")

VERSION_HEADER = "x-model-version"
ROLES = ("system", "developer", "user", "assistant", "tool")
NUMBERS = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "seed")
RETENTION_EVERY_S = 3600.0


def new_response_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def check_chat_body(body: Any, max_tokens: int) -> dict[str, Any]:
    """A chat request as the engine will get it, or a 400 saying what is wrong with it."""
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object with `messages`")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HTTPException(400, "messages is required: a non-empty list of {role, content}")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise HTTPException(400, f"messages[{index}]: needs a role, one of {', '.join(ROLES)}")
        content = message.get("content")
        parts = content if isinstance(content, list) else []
        if content is None and not message.get("tool_calls"):
            raise HTTPException(400, f"messages[{index}]: has no content")
        if not isinstance(content, (str, list, type(None))) or not all(
            isinstance(part, dict) and isinstance(part.get("type"), str) for part in parts
        ):
            raise HTTPException(400, f"messages[{index}]: content must be a string or a list of typed parts")
    if "generation_config" in body:  # it would reach generate() past the limits below
        raise HTTPException(400, "generation_config is not accepted here; use max_tokens, temperature, top_p, seed")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise HTTPException(400, f"{name} must be a positive integer, got {value!r}")
        if value is not None and value > max_tokens:
            raise HTTPException(400, f"{name}: {value} is over this server's limit of {max_tokens} tokens")
    for name in NUMBERS:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise HTTPException(400, f"{name} must be a number, got {value!r}")
    if body.get("n", 1) != 1:
        raise HTTPException(400, "n: one answer per request is supported")
    if not isinstance(body.get("stream", False), bool):
        raise HTTPException(400, "stream must be true or false")
    prepared = {key: value for key, value in body.items() if key != "model"}
    if prepared.get("max_tokens") is None and prepared.get("max_completion_tokens") is None:
        prepared["max_tokens"] = max_tokens
    return prepared


class ServingState:
    """What the routes share: settings, router, engine, store and stats."""

    def __init__(self, args: ServeArguments, versions: dict[str, str], shares: dict[str, float], engine: Any):
        self.args = args
        self.router = Router(args.model_name, versions, TrafficSplit(shares, seed=args.seed))
        self.engine = engine
        self.store = FeedbackStore(args.db, RecentResponses(args.remember_responses))
        self.stats = ServingStats(list(versions))
        self.metrics = ServingMetrics(list(versions))
        self.started = int(time.time())
        key = os.environ.get(args.api_key_env) if args.api_key_env else None
        self.api_key = key or None

    def finish(self, record: ResponseRecord, started: float) -> None:
        """A completed answer: counted, remembered, and its row committed (called in a worker thread)."""
        record.latency_ms = (time.perf_counter() - started) * 1000
        self.store.record_response(record, with_text=self.args.log_conversations)
        self.stats.answered(
            record.version, record.latency_ms / 1000, record.prompt_tokens or 0, record.completion_tokens or 0
        )
        self.metrics.answered(record)

    def failed(self, record: ResponseRecord) -> None:
        self.stats.failed(record.version)
        self.metrics.failed(record.id)

    def delete_old_rows(self) -> tuple[int, int]:
        cutoff = utc_now() - timedelta(days=self.args.retention_days)
        deleted = self.store.delete_older_than(cutoff)
        if any(deleted):
            logger.info("retention: deleted %d responses and %d feedback rows before %s", *deleted, cutoff)
        return deleted


def build_app(state: ServingState) -> FastAPI:
    """The API over a started engine."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        retention = asyncio.create_task(keep_retention(state)) if state.args.retention_days else None
        try:
            yield
        finally:
            if retention is not None:
                retention.cancel()
            state.engine.shutdown()
            state.store.close()

    app = FastAPI(title="llm-recipes serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serving = state
    install_error_handlers(app)
    add_chat_page(app)  # GET /: the chat page (page.py), open like /health; its API calls carry the key
    # the last added runs first: the key, then the watch for a client that leaves (which stops its generation; it
    # reads the body for the app), then the size limit, on the body as the app reads it
    app.add_middleware(BodyLimit, limit=state.args.max_request_bytes)
    app.add_middleware(CancelOnDisconnect)
    if state.api_key:
        app.add_middleware(ApiKey, key=state.api_key)

    install_metrics_route(app, state.metrics)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict:
        shares = {name: round(share, 6) for name, share in state.router.split.shares.items()}
        routed = {"id": state.args.model_name, "object": "model", "created": state.started, "owned_by": "llm-recipes"}
        versions = [
            {"id": name, "object": "model", "created": state.started, "owned_by": "llm-recipes"}
            for name in state.router.versions
        ]
        return {"object": "list", "data": [{**routed, "traffic": shares}, *versions]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        started = time.perf_counter()
        raw = await read_json(request)
        body = check_chat_body(raw, state.args.max_tokens)
        version = state.router.route(raw.get("model"))
        response_id = new_response_id()
        record = ResponseRecord(response_id, version, utc_now(), body["messages"])
        streaming = bool(body.get("stream"))
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if streaming:  # the usage chunk gives the token counts we record; dropped again if the client did not ask
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        state.metrics.started(response_id, version, started)  # in flight until answered, failed or closed
        try:
            answer = await state.engine.chat(version, body, response_id)
        except (HTTPException, ValueError):  # the request's fault (a field the engine refuses): not the version's
            state.metrics.closed(response_id)
            raise
        except Exception:
            state.failed(record)
            raise
        headers = {VERSION_HEADER: version}
        if streaming:
            finish = functools.partial(state.finish, record, started)
            first_token = functools.partial(state.metrics.first_token, response_id)
            failed = functools.partial(state.failed, record)
            closed = functools.partial(state.metrics.closed, response_id)
            relay = relay_stream(answer.body_iterator, record, wants_usage, finish, failed, first_token, closed)
            return EventStream(relay, media_type="text/event-stream", headers=headers)
        completion = json.loads(answer.body)
        completion.update(model=version, version=version)
        choice = (completion.get("choices") or [{}])[0]
        record.answer = (choice.get("message") or {}).get("content") or ""
        record.finish_reason = choice.get("finish_reason")
        usage = completion.get("usage") or {}
        record.prompt_tokens, record.completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        try:
            await run_in_threadpool(state.finish, record, started)
        finally:
            state.metrics.closed(response_id)  # a no-op once answered
        return JSONResponse(completion, headers=headers)

    @app.post("/v1/feedback", status_code=201)
    async def feedback(request: Request) -> JSONResponse:
        items = parse_feedback(await read_json(request), state.args.max_feedback_chars)
        stored = await run_in_threadpool(state.store.add_feedback, items)  # committed before the 201
        for item, (_, version) in zip(items, stored, strict=True):
            state.stats.feedback(version, item.kind, item.value)
            state.metrics.feedback(version, item.kind, item.value)
        body = {
            "object": "feedback",
            "response_id": items[0].response_id,
            "feedback_ids": [feedback_id for feedback_id, _ in stored],
            "kinds": [item.kind for item in items],
        }
        return JSONResponse(body, status_code=201)

    return app


async def relay_stream(
    upstream: Any,
    record: ResponseRecord,
    wants_usage: bool,
    finish: Callable[[], None],
    failed_version: Callable[[], None],
    first_token: Callable[[], None] = lambda: None,
    closed: Callable[[], None] = lambda: None,
) -> AsyncIterator[str]:
    """The engine's SSE events, tagged with the version; the answer is recorded before the closing [DONE].
    `first_token` is called at the first chunk with content (time to first token), `closed` at the end, whatever
    it was (a client that left)."""
    parts, failed = [], False
    try:
        async for piece in upstream:
            out = []
            for event in piece.split("\n\n"):
                if not event.startswith("data: "):
                    continue
                chunk = json.loads(event[len("data: ") :])
                if "error" in chunk:  # the engine failed mid-stream: say so as OpenAI does, record nothing
                    failed = True
                    out.append(sse({"error": {"message": str(chunk["error"]), "type": "server_error", "code": 500}}))
                    continue
                chunk.update(model=record.version, version=record.version)
                if chunk.get("usage") and not chunk.get("choices"):
                    record.prompt_tokens = chunk["usage"].get("prompt_tokens")
                    record.completion_tokens = chunk["usage"].get("completion_tokens")
                    if not wants_usage:
                        continue
                for choice in chunk.get("choices") or []:
                    parts.append((choice.get("delta") or {}).get("content") or "")
                    if parts[-1]:
                        first_token()
                    record.finish_reason = choice.get("finish_reason") or record.finish_reason
                out.append(sse(chunk))
            if out:
                yield "".join(out)
        if failed:
            failed_version()
        else:
            record.answer = "".join(parts)
            await run_in_threadpool(finish)
            yield "data: [DONE]\n\n"
    finally:
        closed()
        await upstream.aclose()  # a client that left stops the generation (the engine's stream cancels it)


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def keep_retention(state: ServingState) -> None:
    """Retention: old rows deleted at start, then every hour (or sooner when the retention is shorter)."""
    every = min(RETENTION_EVERY_S, state.args.retention_days * 86400 / 10)
    while True:
        try:
            await run_in_threadpool(state.delete_old_rows)
        except Exception:  # the store may be down for a while; the next round tries again
            logger.exception("retention: deleting old rows failed")
        await asyncio.sleep(every)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound and listening before the server starts: a client told the address can connect
    (its connection waits in the backlog until the server accepts). Port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); choose another --port or --host") from None
    sock.listen(2048)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(app: FastAPI, log_level: str) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))


def serve_until_stopped(app: FastAPI, sock: socket.socket, log_level: str) -> None:
    """Serve on `sock` until Ctrl+C or SIGTERM. uvicorn stops gracefully (the app's lifespan stops the engine and
    closes the store), then raises the signal again for whoever handles it after: that is the end, not an error."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        make_server(app, log_level).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
