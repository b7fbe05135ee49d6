"""The chat models a judge runs on: a local model folder (transformers, greedy), or any server speaking the OpenAI
chat API -- vLLM, TGI, llama.cpp's server, the OpenAI API itself -- at a URL (`POST {url}/v1/chat/completions`).

The HTTP client is the standard library's urllib: one JSON request per judgment, temperature 0, no extra
dependency. An API key is read from the environment variable the config names and only ever sent in the
Authorization header: it is never a config value, so it reaches no manifest, report or error message.
"""

from __future__ import annotations

import gc
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from llm_recipes.errors import UserError, mask_tokens
from llm_recipes.evaluation.conversations import Message
from llm_recipes.evaluation.generation import build_generation_config, generate_responses
from llm_recipes.evaluation.loading import load_model, load_tokenizer_for

# answers worth trying again after a pause (rate limits, a server starting or overloaded)
RETRY_STATUS = (429, 502, 503, 504)
RETRIES = 2
BODY_CHARS = 200  # how much of an unexpected answer an error shows


class ServerAnswered(UserError):
    """The server answered with an HTTP error status."""


def is_url(value: str | None) -> bool:
    return bool(value) and value.lower().startswith(("http://", "https://"))


def api_base(url: str) -> str:
    """The API root of an OpenAI-compatible server: http://host:8000, .../v1 and .../v1/chat/completions all
    become http://host:8000/v1."""
    base = url.rstrip("/")
    base = base.removesuffix("/chat/completions").rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


class LocalChatJudge:
    """A local chat model as the judge, loaded on first use (after the evaluated models are freed) and greedy."""

    def __init__(
        self,
        path: str,
        *,
        max_new_tokens: int = 512,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        self.name = path
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self._load = {"device": device, "dtype": dtype, "trust_remote_code": trust_remote_code}
        self._model: Any = None
        self._tokenizer: Any = None

    def complete(self, conversations: Sequence[list[Message]]) -> list[str]:
        if self._model is None:
            self._tokenizer = load_tokenizer_for(self.name, trust_remote_code=self._load["trust_remote_code"])
            self._model = load_model(self.name, **self._load)
        config = build_generation_config(self._model, self._tokenizer, max_new_tokens=self.max_new_tokens)
        return generate_responses(
            self._model, self._tokenizer, list(conversations), generation_config=config, batch_size=self.batch_size
        )

    def close(self) -> None:
        self._model = self._tokenizer = None
        gc.collect()


class OpenAIChatJudge:
    """A judge behind an OpenAI-compatible chat API."""

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key_env: str | None = None,
        max_tokens: int = 512,
        timeout: float = 120.0,
    ) -> None:
        self.base = api_base(url)
        self.model = model
        self.max_tokens = max_tokens
        self.timeout = timeout
        self._key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not self._key:
            raise UserError(f"judge_api_key_env: the environment variable {api_key_env} is not set")

    @property
    def name(self) -> str:
        return f"{self.model or '?'} at {self.base}"

    def connect(self) -> None:
        """Reach the server before any model is evaluated, and take the model it serves when none is named."""
        try:
            listing = self._request("GET", "/models")
        except ServerAnswered as err:
            if self.model:
                return  # reachable; it just lists no models
            raise UserError(f"judge_api_model: {err} -- name the model the server serves") from None
        if self.model:
            return
        served = [entry.get("id") for entry in listing.get("data") or [] if isinstance(entry, dict)]
        if not served or not isinstance(served[0], str):
            raise UserError(f"judge_api_model: {self.base}/models lists no model; name the judge model")
        self.model = served[0]

    def complete(self, conversations: Sequence[list[Message]]) -> list[str]:
        return [self._chat(messages) for messages in conversations]

    def close(self) -> None:
        pass

    def _chat(self, messages: list[Message]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens}
        answer = self._request("POST", "/chat/completions", body)
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            shown = self._shown(json.dumps(answer)[:BODY_CHARS])
            raise UserError(
                f"judge_model: {self.base}/chat/completions answered without choices[0].message.content: {shown}"
            )
        return content

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.base + path
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        data = json.dumps(body).encode("utf-8") if body is not None else None
        for attempt in range(RETRIES + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    text = response.read().decode("utf-8", errors="replace")
                break
            except urllib.error.HTTPError as err:
                if err.code in RETRY_STATUS and attempt < RETRIES:
                    time.sleep(2**attempt)
                    continue
                detail = " ".join(err.read().decode("utf-8", errors="replace").split())[:BODY_CHARS]
                raise ServerAnswered(f"judge_model: {url} answered HTTP {err.code}: {self._shown(detail)}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                reason = getattr(err, "reason", err)
                if attempt < RETRIES and not isinstance(reason, ConnectionRefusedError):
                    time.sleep(2**attempt)
                    continue
                raise UserError(f"judge_model: cannot reach {url}: {self._shown(str(reason))}") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise UserError(f"judge_model: {url} answered no JSON: {self._shown(text[:BODY_CHARS])}") from None

    def _shown(self, text: str) -> str:
        return mask_tokens(" ".join(text.split()), [self._key] if self._key else [])


def judge_client(
    judge_model: str,
    *,
    api_model: str | None = None,
    api_key_env: str | None = None,
    max_new_tokens: int = 512,
    timeout: float = 120.0,
    batch_size: int = 8,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> LocalChatJudge | OpenAIChatJudge:
    """The client for `judge_model`: a URL is an OpenAI-compatible server (reached now), anything else a local
    model folder (loaded when first asked)."""
    if is_url(judge_model):
        client = OpenAIChatJudge(
            judge_model, model=api_model, api_key_env=api_key_env, max_tokens=max_new_tokens, timeout=timeout
        )
        client.connect()
        return client
    return LocalChatJudge(
        judge_model,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
