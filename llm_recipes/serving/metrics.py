"""Prometheus metrics at `/metrics`, per version: requests and errors, time to first token and per-token latency
histograms, tokens generated (tokens/s is `rate()` over it), requests in flight (the queue depth), feedback counts
and the thumbs-up rate.

Each app has its own CollectorRegistry (not prometheus_client's global one), so several apps in one process (tests,
replicas sharing an engine) never clash. The page carries counts and timings only, no request text; like /health
it is outside /v1/ and so not behind the API key (the server listens on 127.0.0.1 unless told otherwise).

Timings, from the moment the request arrived:
    time_to_first_token_seconds    a stream: until its first chunk with content; a whole answer: until it is
                                   complete (the client sees no token before)
    time_per_output_token_seconds  a stream: (latency - TTFT) / (tokens - 1), the decode pace after the first;
                                   a whole answer, whose first token is not seen apart: latency / tokens
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from llm_recipes.serving.store import ResponseRecord

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PREFIX = "llm_recipes_"


@dataclass
class _Open:
    version: str
    started: float  # time.perf_counter() when the request arrived
    first_token: float | None = None


class ServingMetrics:
    """The metrics of one app; every method is safe from the event loop and worker threads at once."""

    def __init__(self, versions: list[str]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}requests", "Chat requests by version and outcome (ok, error, cancelled)", ["version", "status"],
            registry=r,
        )  # fmt: skip
        self.errors = Counter(f"{PREFIX}errors", "Requests the engine failed", ["version"], registry=r)
        self.ttft = Histogram(
            f"{PREFIX}time_to_first_token_seconds", "Time to first token", ["version"], buckets=TTFT_BUCKETS, registry=r
        )
        self.tpot = Histogram(
            f"{PREFIX}time_per_output_token_seconds",
            "Time per output token after the first",
            ["version"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            f"{PREFIX}generated_tokens", "Tokens generated (rate() = tokens/s)", ["version"], registry=r
        )
        self.prompt_tokens = Counter(f"{PREFIX}prompt_tokens", "Prompt tokens read", ["version"], registry=r)
        self.in_flight = Gauge(
            f"{PREFIX}requests_in_flight", "Requests being answered (queue depth)", ["version"], registry=r
        )
        self.feedback_count = Counter(
            f"{PREFIX}feedback", "Feedback by version, kind and rating", ["version", "kind", "rating"], registry=r
        )
        self.thumbs_up = Gauge(f"{PREFIX}thumbs_up_rate", "Share of up among up/down ratings", ["version"], registry=r)
        for version in versions:  # every series exists from the start, at 0 (no gap in rate())
            for status in ("ok", "error", "cancelled"):
                self.requests.labels(version, status)
            for metric in (self.errors, self.ttft, self.tpot, self.tokens, self.prompt_tokens, self.in_flight):
                metric.labels(version)
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        self._ratings: dict[str, list[int]] = {}  # version -> [up, down]

    def started(self, response_id: str, version: str, started: float) -> None:
        with self._lock:
            self._open[response_id] = _Open(version, started)
        self.in_flight.labels(version).inc()

    def first_token(self, response_id: str) -> None:
        with self._lock:
            request = self._open.get(response_id)
            if request is not None and request.first_token is None:
                request.first_token = time.perf_counter()

    def _close(self, response_id: str) -> _Open | None:
        with self._lock:
            request = self._open.pop(response_id, None)
        if request is not None:
            self.in_flight.labels(request.version).dec()
        return request

    def answered(self, record: ResponseRecord) -> None:
        """A complete answer (its record's latency_ms and token counts set)."""
        request = self._close(record.id)
        if request is None:
            return
        latency = (record.latency_ms or 0.0) / 1000
        tokens = record.completion_tokens or 0
        version = request.version
        self.requests.labels(version, "ok").inc()
        self.tokens.labels(version).inc(tokens)
        self.prompt_tokens.labels(version).inc(record.prompt_tokens or 0)
        if request.first_token is not None:  # a stream
            ttft = request.first_token - request.started
            self.ttft.labels(version).observe(ttft)
            if tokens > 1:
                self.tpot.labels(version).observe(max(latency - ttft, 0.0) / (tokens - 1))
        else:
            self.ttft.labels(version).observe(latency)
            if tokens:
                self.tpot.labels(version).observe(latency / tokens)

    def failed(self, response_id: str) -> None:
        request = self._close(response_id)
        if request is not None:
            self.requests.labels(request.version, "error").inc()
            self.errors.labels(request.version).inc()

    def closed(self, response_id: str) -> None:
        """The request ended: if neither answered nor failed, it was cancelled (the client left, or the engine
        refused the request's fields)."""
        request = self._close(response_id)
        if request is not None:
            self.requests.labels(request.version, "cancelled").inc()

    def feedback(self, version: str, kind: str, value: str) -> None:
        rating = value if kind == "rating" else ""
        self.feedback_count.labels(version, kind, rating).inc()
        if kind == "rating":
            with self._lock:
                counts = self._ratings.setdefault(version, [0, 0])
                counts[0 if value == "up" else 1] += 1
                rate = counts[0] / (counts[0] + counts[1])
            self.thumbs_up.labels(version).set(rate)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def install_metrics_route(app: FastAPI, metrics: ServingMetrics) -> None:
    """GET /metrics: the Prometheus text exposition format."""

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
