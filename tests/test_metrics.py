"""/metrics on the A/B test server (test_serve's fixtures): the Prometheus exposition parsed back, with counts per
version equal to the requests sent, histogram counts equal to the answers, tokens, feedback and thumbs-up rate."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_serve import MESSAGES, ab_server, call, completion, lora_dir, stream_events

from llm_recipes.serving.metrics import ServingMetrics
from llm_recipes.serving.store import ResponseRecord, utc_now

__all__ = ["ab_server", "lora_dir"]  # fixtures, used by name

P = "llm_recipes_"
STATUSES = ("ok", "error", "cancelled")


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of /metrics, fetched without the API key."""
    status, payload, headers = call(url, "/metrics", key=None)
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(payload)
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_each_versions_requests_tokens_and_timings(ab_server):
    before = scrape(ab_server.url)
    assert before[(f"{P}requests_in_flight", (("version", "v1"),))] == 0  # every series exists from the start
    for _ in range(2):
        assert completion(ab_server.url, model="v1", max_tokens=4)["usage"]["completion_tokens"] == 4
    events, _ = stream_events(ab_server.url, {"model": "v2", "messages": MESSAGES, "max_tokens": 5})
    assert events[-1] == "[DONE]"
    after = scrape(ab_server.url)

    assert delta(before, after, f"{P}requests_total", version="v1", status="ok") == 2
    assert delta(before, after, f"{P}requests_total", version="v2", status="ok") == 1
    assert delta(before, after, f"{P}requests_total", version="v1", status="error") == 0
    assert delta(before, after, f"{P}errors_total", version="v2") == 0
    assert delta(before, after, f"{P}generated_tokens_total", version="v1") == 8
    assert delta(before, after, f"{P}generated_tokens_total", version="v2") == 5
    for version, answers in (("v1", 2), ("v2", 1)):
        for histogram in ("time_to_first_token_seconds", "time_per_output_token_seconds"):
            assert delta(before, after, f"{P}{histogram}_count", version=version) == answers
            assert delta(before, after, f"{P}{histogram}_bucket", version=version, le="+Inf") == answers
            assert delta(before, after, f"{P}{histogram}_sum", version=version) > 0
    assert after[(f"{P}requests_in_flight", (("version", "v1"),))] == 0  # all answered
    assert after[(f"{P}requests_in_flight", (("version", "v2"),))] == 0
    # a stream's first token comes before its end, a whole answer's with it: TTFT sum < the v2 answer's latency
    ttft = delta(before, after, f"{P}time_to_first_token_seconds_sum", version="v2")
    tpot = delta(before, after, f"{P}time_per_output_token_seconds_sum", version="v2")
    assert 0 < ttft and 0 < tpot


def test_metrics_count_feedback_and_the_thumbs_up_rate(ab_server):
    before = scrape(ab_server.url)
    ids = [completion(ab_server.url, model="v2", max_tokens=1)["id"] for _ in range(4)]
    for id_, rating in zip(ids, ("up", "up", "up", "down"), strict=True):
        assert call(ab_server.url, "/v1/feedback", {"response_id": id_, "rating": rating})[0] == 201
    assert call(ab_server.url, "/v1/feedback", {"response_id": ids[0], "comment": "fine"})[0] == 201
    after = scrape(ab_server.url)
    assert delta(before, after, f"{P}feedback_total", version="v2", kind="rating", rating="up") == 3
    assert delta(before, after, f"{P}feedback_total", version="v2", kind="rating", rating="down") == 1
    assert delta(before, after, f"{P}feedback_total", version="v2", kind="comment", rating="") == 1
    up = before.get((f"{P}feedback_total", (("kind", "rating"), ("rating", "up"), ("version", "v2"))), 0) + 3
    down = before.get((f"{P}feedback_total", (("kind", "rating"), ("rating", "down"), ("version", "v2"))), 0) + 1
    assert after[(f"{P}thumbs_up_rate", (("version", "v2"),))] == up / (up + down)
    assert (f"{P}thumbs_up_rate", (("version", "v1"),)) not in after  # no rating yet: no rate


def test_a_request_the_engine_refuses_is_counted_cancelled_not_in_flight(ab_server):
    before = scrape(ab_server.url)
    status, _, _ = call(ab_server.url, "/v1/chat/completions", {"messages": MESSAGES, "model": "v1", "n": 2})
    assert status == 400  # refused before routing: not a version's request at all
    after = scrape(ab_server.url)
    assert delta(before, after, f"{P}requests_total", version="v1", status="cancelled") == 0
    assert after[(f"{P}requests_in_flight", (("version", "v1"),))] == 0


def samples(metrics: ServingMetrics) -> dict[tuple[str, tuple], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_ttft_and_per_token_time_follow_their_definitions(monkeypatch):
    """A stream: TTFT at its first content, then (latency - TTFT) / (tokens - 1) per token; a whole answer: TTFT is
    its latency and latency / tokens per token; a failure and a cancelled request count apart; all leave flight."""
    metrics = ServingMetrics(["v1"])
    clock = iter([10.5])  # the first content arrives 0.5 s after the request (at 10.0)
    monkeypatch.setattr("llm_recipes.serving.metrics.time.perf_counter", lambda: next(clock))
    metrics.started("s", "v1", 10.0)
    metrics.first_token("s")
    metrics.first_token("s")  # only the first counts (the clock would run out otherwise)
    assert samples(metrics)[(f"{P}requests_in_flight", (("version", "v1"),))] == 1
    metrics.answered(ResponseRecord("s", "v1", utc_now(), [], latency_ms=2500.0, prompt_tokens=7, completion_tokens=5))
    metrics.started("w", "v1", 0.0)
    metrics.answered(ResponseRecord("w", "v1", utc_now(), [], latency_ms=1000.0, completion_tokens=4))
    metrics.started("f", "v1", 0.0)
    metrics.failed("f")
    metrics.started("c", "v1", 0.0)
    metrics.closed("c")
    metrics.closed("s")  # after its answer: nothing more
    got = samples(metrics)
    assert got[(f"{P}time_to_first_token_seconds_sum", (("version", "v1"),))] == pytest.approx(0.5 + 1.0)
    assert got[(f"{P}time_to_first_token_seconds_bucket", (("le", "0.5"), ("version", "v1")))] == 1
    # (2.5 - 0.5) / 4 = 0.5 s per token for the stream; 1.0 / 4 = 0.25 for the whole answer
    assert got[(f"{P}time_per_output_token_seconds_sum", (("version", "v1"),))] == pytest.approx(0.75)
    assert got[(f"{P}time_per_output_token_seconds_bucket", (("le", "0.25"), ("version", "v1")))] == 1
    assert got[(f"{P}generated_tokens_total", (("version", "v1"),))] == 9
    assert got[(f"{P}prompt_tokens_total", (("version", "v1"),))] == 7
    statuses = {status: got[(f"{P}requests_total", (("status", status), ("version", "v1")))] for status in STATUSES}
    assert statuses == {"ok": 2, "error": 1, "cancelled": 1}
    assert got[(f"{P}errors_total", (("version", "v1"),))] == 1
    assert got[(f"{P}requests_in_flight", (("version", "v1"),))] == 0


def test_two_apps_in_one_process_keep_their_own_metrics():
    first, second = ServingMetrics(["v1"]), ServingMetrics(["v1"])
    first.feedback("v1", "rating", "up")
    assert samples(first)[(f"{P}thumbs_up_rate", (("version", "v1"),))] == 1.0
    assert (f"{P}thumbs_up_rate", (("version", "v1"),)) not in samples(second)
