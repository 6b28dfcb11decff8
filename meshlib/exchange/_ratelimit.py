"""Local rate limiting (Envoy's ``local_ratelimit`` HTTP filter): one token bucket per
filter config, shared by every call the config covers, outbound and inbound alike.

:meth:`LocalRateLimiter.admit` is the filter's decision for one call, in Envoy's order:
sampled ``filter_enabled`` (else the call passes, uncounted), a token (``ok``), else
``rate_limited`` and, when the sampled ``filter_enforced`` says so, ``enforced`` and the
local reply (:func:`meshlib.local_reply.rate_limited`: the status, default 429, body
``local_rate_limited``, ``response_headers_to_add``, flag RL). The bucket refills lazily:
on each decision, every whole ``fill_interval`` since the last fill adds
``tokens_per_fill``, up to ``max_tokens`` (it starts full).
"""

from __future__ import annotations

import threading
import time
from typing import Final

from xds_client.resources.route import LocalRateLimitConfig, TokenBucket

from ..local_reply import LocalReply, rate_limited
from ..routing._matchers import compile_fraction

__all__ = ["RATELIMIT_STATS", "LocalRateLimiter", "TokenBuckets"]

#: The filter's counters, as Envoy names them after ``<stat_prefix>.``.
RATELIMIT_STATS: Final = ("enabled", "enforced", "rate_limited", "ok")


class TokenBuckets:
    """A thread-safe token bucket (Envoy's TokenBucket: discrete fills)."""

    __slots__ = ("_last", "_lock", "bucket", "tokens")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.tokens = bucket.max_tokens
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take one token; False when the bucket is empty."""
        b = self.bucket
        with self._lock:
            now = time.monotonic()
            fills = int((now - self._last) / b.fill_interval)
            if fills:
                self._last += fills * b.fill_interval
                self.tokens = min(b.max_tokens, self.tokens + fills * b.tokens_per_fill)
            if self.tokens <= 0:
                return False
            self.tokens -= 1
            return True


class LocalRateLimiter:
    """One LocalRateLimit config compiled (built once per Snapshot, per config object);
    ``counts`` holds its :data:`RATELIMIT_STATS` counters."""

    __slots__ = ("_bucket", "_enabled", "_enforced", "_lock", "_reply", "config", "counts")

    def __init__(self, config: LocalRateLimitConfig) -> None:
        self.config = config
        self._bucket = TokenBuckets(config.bucket) if config.bucket is not None else None
        self._enabled = compile_fraction(config.enabled)
        self._enforced = compile_fraction(config.enforced)
        self._reply = rate_limited(
            config.status,
            tuple((h.name, h.value) for h in config.response_headers),
            resource_exhausted=config.resource_exhausted,
        )
        self.counts = dict.fromkeys(RATELIMIT_STATS, 0)
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def admit(self) -> LocalReply | None:
        """None: the call goes on; else the 429 (or configured) local reply."""
        bucket = self._bucket
        if bucket is None or not self._enabled():
            return None
        self._count("enabled")
        if bucket.take():
            self._count("ok")
            return None
        self._count("rate_limited")
        if not self._enforced():
            return None
        self._count("enforced")
        return self._reply
