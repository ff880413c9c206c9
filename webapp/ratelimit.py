"""Per-client request limiting: a token bucket per client address, kept in memory.

Why in-process: the server is one process with threads (waitress), so a dict under a lock is exact
and costs microseconds; a deployment with several processes behind a proxy should limit at the
proxy. Buckets of clients idle for a while are dropped so the table cannot grow without bound.
"""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    """``per_minute`` requests per client, with bursts up to the same number; 0 disables it."""

    def __init__(self, per_minute: int, *, clock=time.monotonic, max_clients: int = 100_000):
        self.per_minute = max(0, int(per_minute))
        self.capacity = float(self.per_minute)
        self.rate = self.per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)
        self._lock = threading.Lock()
        self._max_clients = max_clients

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def acquire(self, client: str) -> float:
        """Take one token for ``client``; returns 0.0 when allowed, else the seconds to wait."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._buckets) > self._max_clients:
                self._evict(now)
        return wait

    def _evict(self, now: float) -> None:
        full_after = self.capacity / self.rate  # a bucket idle this long is full again: forget it
        stale = [c for c, (_, last) in self._buckets.items() if now - last >= full_after]
        for c in stale:
            del self._buckets[c]
        if len(self._buckets) > self._max_clients:  # still too many: drop the oldest half
            for c, _ in sorted(self._buckets.items(), key=lambda kv: kv[1][1])[: len(self._buckets) // 2]:
                del self._buckets[c]

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
