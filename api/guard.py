"""What stands in front of every route: a per-client rate limit (token bucket), the request body
size limit, and the request metrics — one plain ASGI middleware (no per-request task or copy of
the body). Also the constant-time comparisons of API keys and of the webhook's secret."""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from api.metrics import Metrics

UNLIMITED_PATHS = frozenset({"/healthz", "/metrics"})
MAX_CLIENTS = 10_000  # buckets kept; the fullest (idle longest) are dropped past it


def matches(given: str | None, secrets: Iterable[SecretStr]) -> bool:
    """Whether ``given`` equals one of ``secrets`` (each compared in constant time)."""
    if not given:
        return False
    found = False
    for secret in secrets:  # no early exit: the time does not say which key was close
        found |= hmac.compare_digest(given.encode(), secret.get_secret_value().encode())
    return found


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """Per-client token buckets: ``rate`` tokens a second up to ``burst``; a request takes one."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, client: str, now: float | None = None) -> float:
        """0 when the request may go; else the seconds until a token is there."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                if len(self._buckets) >= MAX_CLIENTS:
                    self._forget_idle(now)
                bucket = self._buckets[client] = _Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        refill = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.at < refill}
        if len(self._buckets) >= MAX_CLIENTS:  # all busy: the oldest half goes
            kept = sorted(self._buckets.items(), key=lambda kv: kv[1].at)[MAX_CLIENTS // 2 :]
            self._buckets = dict(kept)


class BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: 429 past the client's rate, 413 past ``max_body`` bytes (declared or
    streamed), and each request counted and timed by its route's path template."""

    def __init__(
        self, app: Any, metrics: Metrics, buckets: TokenBuckets | None, max_body: int
    ) -> None:
        self.app, self.metrics, self.buckets, self.max_body = app, metrics, buckets, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        refusal = self._refusal(scope)
        try:
            if refusal is not None:
                await _json(sending, *refusal)
            else:
                await self.app(scope, self._limited(receive), sending)
        except BodyTooLarge:
            await _json(sending, 413, f"request body over {self.max_body} bytes")
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
            if refusal is not None or status["code"] == 413:
                kind = "rate_limited" if status["code"] == 429 else "body_too_large"
                self.metrics.errors.labels(path, kind).inc()

    def _refusal(self, scope: dict) -> tuple[int, str, dict[str, str]] | None:
        if self.buckets is not None and scope["path"] not in UNLIMITED_PATHS:
            client = (scope.get("client") or ("unknown", 0))[0]
            wait = self.buckets.take(client)
            if wait > 0:
                message = f"rate limit: {self.buckets.rate:g} requests/s per client"
                return 429, message, {"retry-after": str(max(1, round(wait)))}
        for name, value in scope.get("headers") or ():
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                return 413, f"request body over {self.max_body} bytes", {}
        return None

    def _limited(self, receive: Any) -> Any:
        seen = 0

        async def receiving() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge
            return message

        return receiving


async def _json(send: Any, code: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": code, "headers": raw})
    await send({"type": "http.response.body", "body": body})
