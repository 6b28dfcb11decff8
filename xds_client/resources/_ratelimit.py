"""Envoy's HTTP local rate limit filter (``envoy.filters.http.local_ratelimit``,
``envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit``), listener-wide or
per route (``typed_per_filter_config``).

Honoured: ``stat_prefix``, ``token_bucket`` (max_tokens, tokens_per_fill, fill_interval;
none: no limit), ``filter_enabled`` / ``filter_enforced`` (their ``default_value``; unset:
0%, as in Envoy), ``status`` (default 429), ``response_headers_to_add`` (on limited
responses) and ``rate_limited_as_resource_exhausted``. Every other field meshlib cannot
apply (descriptors, x-ratelimit headers, per-connection buckets...) is refused by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from google.protobuf import any_pb2

from ._base import ResourceError
from ._matchers import Percent, decode_percent
from ._route_policy import HeaderToAdd, _adds, per_filter_config

__all__ = [
    "LOCAL_RATELIMIT_TYPE",
    "LocalRateLimitConfig",
    "TokenBucket",
    "decode_local_ratelimit",
    "decode_ratelimit_overrides",
]

Fail = Callable[[str, str], ResourceError]
LOCAL_RATELIMIT_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
)
#: Fields meshlib refuses when set (by name).
_REFUSED = (
    "request_headers_to_add_when_not_enforced",
    "descriptors",
    "stage",
    "local_rate_limit_per_downstream_connection",
    "local_cluster_rate_limit",
    "enable_x_ratelimit_headers",
    "vh_rate_limits",
    "always_consume_default_token_bucket",
    "rate_limits",
    "max_dynamic_descriptors",
)
_NONE = Percent(0, 100)


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """``max_tokens`` (also the start), ``tokens_per_fill`` added every
    ``fill_interval`` seconds, never above ``max_tokens``."""

    max_tokens: int
    tokens_per_fill: int
    fill_interval: float


@dataclass(frozen=True, slots=True)
class LocalRateLimitConfig:
    stat_prefix: str
    bucket: TokenBucket | None  # None: nothing is limited
    enabled: Percent = _NONE
    enforced: Percent = _NONE
    status: int = 429
    response_headers: tuple[HeaderToAdd, ...] = ()
    resource_exhausted: bool = False  # gRPC callers get RESOURCE_EXHAUSTED, not UNAVAILABLE


def decode_local_ratelimit(
    msg: local_rate_limit_pb2.LocalRateLimit, path: str, fail: Fail
) -> LocalRateLimitConfig:
    """Validate a LocalRateLimit message found at ``path``."""
    if not msg.stat_prefix:
        raise fail(f"{path}.stat_prefix", "must not be empty")
    present = {f.name for f, _ in msg.ListFields()}
    for name in _REFUSED:
        if name in present:
            raise fail(f"{path}.{name}", "not supported by meshlib")
    bucket = None
    if msg.HasField("token_bucket"):
        tb, tpath = msg.token_bucket, f"{path}.token_bucket"
        if tb.max_tokens <= 0:
            raise fail(f"{tpath}.max_tokens", "must be greater than 0")
        per_fill = tb.tokens_per_fill.value if tb.HasField("tokens_per_fill") else 1
        if per_fill <= 0:
            raise fail(f"{tpath}.tokens_per_fill", "must be greater than 0")
        interval = tb.fill_interval.seconds + tb.fill_interval.nanos / 1e9
        if not tb.HasField("fill_interval") or interval <= 0:
            raise fail(f"{tpath}.fill_interval", "must be set and greater than 0")
        if interval < 0.05:
            raise fail(f"{tpath}.fill_interval", "must be at least 50ms (as in Envoy)")
        bucket = TokenBucket(tb.max_tokens, per_fill, interval)
    status = 429
    if msg.HasField("status"):
        status = int(msg.status.code)
        if not 400 <= status < 600:
            raise fail(f"{path}.status.code", f"{status} is not in [400, 600)")

    def fraction(name: str) -> Percent:
        if not msg.HasField(name):
            return _NONE
        return decode_percent(
            getattr(msg, name).default_value, f"{path}.{name}.default_value", fail
        )

    return LocalRateLimitConfig(
        msg.stat_prefix,
        bucket,
        fraction("filter_enabled"),
        fraction("filter_enforced"),
        status,
        _adds(msg.response_headers_to_add, f"{path}.response_headers_to_add", fail),
        bool(msg.rate_limited_as_resource_exhausted),
    )


def decode_ratelimit_overrides(
    configs: Mapping[str, any_pb2.Any], field: str, fail: Fail
) -> LocalRateLimitConfig | None:
    """The LocalRateLimit among a typed_per_filter_config map (plain or in a FilterConfig)."""
    found = per_filter_config(configs, LOCAL_RATELIMIT_TYPE)
    if found is None:
        return None
    key, cfg = found
    msg = local_rate_limit_pb2.LocalRateLimit()
    if not cfg.Unpack(msg):
        raise fail(f"{field}[{key!r}]", "cannot decode LocalRateLimit")
    return decode_local_ratelimit(msg, f"{field}[{key!r}]", fail)
