"""What stands between a client and the routes: the API key, the request size limit, and errors as OpenAI-style JSON
(`{"error": {"message", "type", "code"}}`) with a 4xx for whatever the request got wrong -- never a crash, never a
traceback in the body. Plain ASGI middlewares: they answer before the body is read, and streamed answers pass
through them untouched."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from transformers.cli.serving.utils import EngineDeadError

from llm_recipes.serving.feedback import FeedbackError
from llm_recipes.serving.routing import UnknownModel
from llm_recipes.serving.store import UnknownResponse

logger = logging.getLogger("llm_recipes.serving")

ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 503: "service_unavailable"}


class EngineFailed(RuntimeError):
    """The engine's server failed a request or could not be reached (engine: vllm): 502, not the request's fault."""


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)


async def _send_error(send: Any, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    response = error_response(status, message, headers)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class ApiKey:
    """Requests to /v1/ must carry `Authorization: Bearer KEY` (what OpenAI clients send with api_key=KEY)."""

    def __init__(self, app: Any, key: str):
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            given = Headers(scope=scope).get("authorization", "").encode()
            if not hmac.compare_digest(given, self.expected):  # constant time: the key is not guessed byte by byte
                message = "a valid API key is required: send `Authorization: Bearer KEY`"
                return await _send_error(send, 401, message, {"WWW-Authenticate": "Bearer"})
        await self.app(scope, receive, send)


class BodyLimit:
    """Bodies larger than `limit` bytes get 413: at once when Content-Length says so, else once that many arrived."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _send_error(send, 413, f"the request body is over {self.limit} bytes")
        received = 0

        async def receive_within_limit() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:  # raised inside the route: its exception handler answers 413
                    raise HTTPException(413, f"the request body is over {self.limit} bytes")
            return message

        await self.app(scope, receive_within_limit, send)


async def read_json(request: Request) -> Any:
    """The body as JSON; 400 when it is not."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HTTPException(400, f"the body is not valid JSON ({err})") from None


def install_error_handlers(app: FastAPI) -> None:
    """Every error as JSON: the request's fault 4xx, ours 5xx (logged with its traceback, not sent)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        return error_response(exc.status_code, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, json.dumps(exc.errors(), default=str))

    @app.exception_handler(UnknownModel)
    @app.exception_handler(UnknownResponse)
    async def not_found(_request: Request, exc: LookupError) -> JSONResponse:
        return error_response(404, str(exc))

    @app.exception_handler(FeedbackError)
    async def bad_feedback(_request: Request, exc: FeedbackError) -> JSONResponse:
        return error_response(exc.status, str(exc))

    @app.exception_handler(ValueError)  # transformers' handler: a value the model cannot take (prompt too long)
    async def bad_value(_request: Request, exc: ValueError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(EngineDeadError)
    async def engine_dead(_request: Request, exc: EngineDeadError) -> JSONResponse:
        return error_response(503, f"the model's engine stopped: {exc}")

    @app.exception_handler(EngineFailed)
    async def engine_failed(_request: Request, exc: EngineFailed) -> JSONResponse:
        logger.error("engine error: %s", exc)
        return error_response(502, f"the model's engine failed: {exc}")

    @app.exception_handler(SQLAlchemyError)
    async def store_down(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
        logger.error("feedback store error: %s", exc)
        return error_response(503, "the feedback store is unavailable; nothing was stored, try again")

    @app.exception_handler(Exception)
    async def crashed(_request: Request, exc: Exception) -> JSONResponse:
        logger.exception("request failed", exc_info=exc)
        return error_response(500, f"internal error ({type(exc).__name__}); the server log has the details")
