"""The chat page at `/`: static/chat.html with its chat.js and chat.css, shipped inside the package.

A user chats with the served versions (answers streamed), rates each answer, edits it, and in A/B mode picks the
better of two versions' answers; the page posts all of it to `/v1/feedback`. Everything it loads comes from this
server: the Content-Security-Policy forbids other origins and inline code, so the page works offline and an
injected script cannot send a conversation elsewhere. The page itself is open (the API key guards `/v1/` only);
when the server needs a key the page asks for it and sends it as `Authorization: Bearer KEY`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import Response

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_FILES = {
    "/": ("chat.html", "text/html; charset=utf-8"),
    "/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
    "/chat.css": ("chat.css", "text/css; charset=utf-8"),
}


def page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",  # the browser runs chat.js only as the JavaScript it says it is
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",  # a new version of the package's page is picked up at once
    }


def add_chat_page(app: FastAPI) -> None:
    """GET / (the page), /chat.js and /chat.css, read from the package once, when the app is built."""
    static = files("llm_recipes.serving") / "static"
    for path, (name, media_type) in PAGE_FILES.items():
        route = _file_route((static / name).read_bytes(), media_type)
        app.add_api_route(path, route, methods=["GET"], include_in_schema=False, name=f"chat_page_{name}")


def _file_route(content: bytes, media_type: str) -> Callable[[], Response]:
    # a route without parameters (FastAPI would read a default argument as a query parameter)
    def serve() -> Response:
        return Response(content, media_type=media_type, headers=page_headers())

    return serve
