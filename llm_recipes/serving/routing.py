"""Which version answers a request: the one it names, or a draw from the traffic split (A/B testing).

The draws come from one seeded random generator, so a server started with the same seed assigns the same sequence
of requests to the same versions (what the tests count, and what makes an A/B run reproducible).
"""

from __future__ import annotations

import bisect
import itertools
import random
import threading


class UnknownModel(LookupError):
    """A request names a model this server does not serve (404 for its client)."""


class TrafficSplit:
    """Draws a version with probability equal to its share."""

    def __init__(self, shares: dict[str, float], seed: int = 0):
        self.shares = dict(shares)
        self.names = [name for name, share in shares.items() if share > 0]
        self._bounds = list(itertools.accumulate(shares[name] for name in self.names))
        self._random = random.Random(seed)
        self._lock = threading.Lock()  # requests are routed from the event loop and from worker threads

    def draw(self) -> str:
        with self._lock:
            point = self._random.random() * self._bounds[-1]
        return self.names[min(bisect.bisect_right(self._bounds, point), len(self.names) - 1)]


class Router:
    """A request's `model` -> the version that answers it: a version's own name, or the routed name (or none)."""

    def __init__(self, model_name: str, versions: dict[str, str], split: TrafficSplit):
        self.model_name = model_name
        self.versions = versions
        self.split = split

    def route(self, requested: object) -> str:
        if requested is None or requested == self.model_name:
            return self.split.draw()
        if isinstance(requested, str) and requested in self.versions:
            return requested
        served = ", ".join([self.model_name, *self.versions])
        raise UnknownModel(f"model {requested!r} is not served here (served: {served})")
