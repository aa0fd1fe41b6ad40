"""Per-key rate limiting: a token bucket per API key, in each worker's memory.

Each key may send ``per_minute`` requests a minute on average, in bursts of up to ``burst``. The
buckets live in the worker process (no shared state to set up), so with ``--workers N`` a key may
reach N times the limit in total; the limit protects each worker's CPU, which is what it is for.

Example:
    >>> now = [0.0]
    >>> limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    >>> [limiter.wait("k") for _ in range(3)]   # a burst of two, then one a second
    [0.0, 0.0, 1.0]
    >>> now[0] = 1.0
    >>> limiter.wait("k"), limiter.wait("other")
    (0.0, 0.0)
"""
from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Token buckets keyed by API key id.

    Args:
        per_minute: average requests a minute per key (0: no limit).
        burst: requests a key may send at once (default: a tenth of a minute's worth, at least 1).
        clock: monotonic seconds (replaceable in tests).
    """

    def __init__(self, per_minute: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.per_second = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, int(per_minute // 10)))
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, time of last update)
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Take one token for ``key``.

        Returns:
            0.0 when the request may go ahead, else the seconds until it may (the request is refused
            and takes no token).
        """
        if self.per_second <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.per_second)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.per_second
