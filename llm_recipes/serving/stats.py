"""What each version did since the server started: requests, failures, tokens, latency (a histogram with
Prometheus-style cumulative buckets) and the ratings it got -- in memory, per server process. The feedback store
holds the same per response, across replicas and restarts; this is the cheap live view a /metrics page reads."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

# seconds; the last bucket (+Inf) is the count
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BUCKET_NAMES = (*map(str, LATENCY_BUCKETS), "+Inf")


@dataclass
class VersionStats:
    requests: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_seconds_sum: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    ratings: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    feedback: int = 0


class ServingStats:
    """Per-version counters, safe to update from the event loop and worker threads at once."""

    def __init__(self, versions: list[str]):
        self._lock = threading.Lock()
        self.versions = {name: VersionStats() for name in versions}

    def answered(self, version: str, seconds: float, prompt_tokens: int, completion_tokens: int) -> None:
        with self._lock:
            stats = self.versions[version]
            stats.requests += 1
            stats.prompt_tokens += prompt_tokens
            stats.completion_tokens += completion_tokens
            stats.latency_seconds_sum += seconds
            stats.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def failed(self, version: str) -> None:
        with self._lock:
            self.versions[version].requests += 1
            self.versions[version].failures += 1

    def feedback(self, version: str, kind: str, value: str) -> None:
        with self._lock:
            stats = self.versions.get(version)
            if stats is None:  # a version this process does not serve (another replica's, an older run's)
                return
            stats.feedback += 1
            if kind == "rating":
                stats.ratings[value] += 1

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return {
                name: {
                    "requests": s.requests,
                    "failures": s.failures,
                    "prompt_tokens": s.prompt_tokens,
                    "completion_tokens": s.completion_tokens,
                    "latency_seconds_sum": s.latency_seconds_sum,
                    "latency_buckets": dict(zip(BUCKET_NAMES, _cumulative(s.latency_buckets), strict=True)),
                    "ratings": dict(s.ratings),
                    "feedback": s.feedback,
                }
                for name, s in self.versions.items()
            }


def _cumulative(counts: list[int]) -> list[int]:
    total, out = 0, []
    for count in counts:
        total += count
        out.append(total)
    return out
