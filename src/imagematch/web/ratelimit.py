"""Requests per minute per client: a token bucket per address, in memory, answered with 429 and Retry-After.

The address is the connection's peer, or the one a trusted reverse proxy forwards (IMAGEMATCH_TRUSTED_PROXIES,
web/proxies.py). Static files are not counted: one page loads several of them.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from imagematch.web.refusals import refusal

# Buckets kept at most; the least recently seen client is forgotten first (it comes back with a full bucket).
MAX_CLIENTS = 10_000
_UNCOUNTED_PREFIXES = ("/static/",)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One bucket per key holding up to `per_minute` tokens, refilled continuously at `per_minute` a minute.

    Safe to share between the event loop and request threads (the login form counts guesses in a thread).
    """

    def __init__(
        self, per_minute: int, *, max_clients: int = MAX_CLIENTS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until a token is back."""
        with self._lock:
            return self._take(key, self.clock())

    def _take(self, key: str, now: float) -> float:
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.per_second)
            bucket.updated = now
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.per_second


def client_address(scope: Scope) -> str:
    """The peer's address, which ProxyHeaders has replaced by the forwarded one when a trusted proxy sent it."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def too_many_requests(scope: Scope, wait_s: float) -> Response:
    """429 with Retry-After: JSON for the API, a page for people."""
    seconds = max(1, math.ceil(wait_s))
    message = f"too many requests from your address; try again in {seconds} s"
    return refusal(scope, 429, message, page=f"Slow down a little: {message}.", headers={"Retry-After": str(seconds)})


class RateLimit:
    """ASGI middleware that refuses a client's requests beyond its budget before any work is done."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(_UNCOUNTED_PREFIXES):
            wait = self.buckets.take(client_address(scope))
            if wait > 0:
                await too_many_requests(scope, wait)(scope, receive, send)
                return
        await self.app(scope, receive, send)
