"""The local rate limit filter: decoding (Envoy's defaults, refusals by name), the token
bucket, the filter's decision and counters, and the per-route override on a route table.
The differential against Envoy is tests/peers/test_envoy_local_replies.py."""

from __future__ import annotations

from typing import Any

import pytest

from meshlib._call import Call
from meshlib.exchange._ratelimit import LocalRateLimiter, TokenBuckets
from meshlib.local_reply import LocalReply
from meshlib.routing import RouteTable
from tests.meshlib.local_reply_xds import RATELIMIT
from tests.meshlib.test_routing_decode import decode_routes
from xds_client.resources import ResourceError
from xds_client.resources.route import LocalRateLimitConfig, Percent, TokenBucket

KEY = "envoy.filters.http.local_ratelimit"
ALL = {"default_value": {"numerator": 100}}


def limited(**config: Any) -> dict[str, Any]:
    return {
        "match": {"prefix": "/"},
        "route": {"cluster": "c"},
        "typed_per_filter_config": {KEY: {"@type": RATELIMIT, "stat_prefix": "rl", **config}},
    }


def test_defaults_follow_envoy() -> None:
    rc = decode_routes(limited(token_bucket={"max_tokens": 2, "fill_interval": "1s"}))
    cfg = rc.virtual_hosts[0].routes[0].ratelimit
    assert cfg == LocalRateLimitConfig("rl", TokenBucket(2, 1, 1.0))
    assert cfg is not None and cfg.enabled == Percent(0, 100) == cfg.enforced  # 0%: safe
    assert cfg.status == 429


@pytest.mark.parametrize(
    ("config", "field", "problem"),
    [
        (
            {"descriptors": [{"entries": [{"key": "a", "value": "b"}]}]},
            "descriptors",
            "not supported",
        ),
        (
            {"enable_x_ratelimit_headers": "DRAFT_VERSION_03"},
            "enable_x_ratelimit_headers",
            "not supported",
        ),
        (
            {"local_rate_limit_per_downstream_connection": True},
            "local_rate_limit_per_downstream_connection",
            "not supported",
        ),
        (
            {"token_bucket": {"max_tokens": 0, "fill_interval": "1s"}},
            "token_bucket.max_tokens",
            "greater than 0",
        ),
        (
            {"token_bucket": {"max_tokens": 1, "fill_interval": "0.01s"}},
            "token_bucket.fill_interval",
            "50ms",
        ),
        ({"token_bucket": {"max_tokens": 1}}, "token_bucket.fill_interval", "must be set"),
        ({"status": {"code": 200}}, "status.code", "not in [400, 600)"),
    ],
)
def test_bad_configs_are_nacked_by_field(config: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ResourceError) as err:
        decode_routes(limited(**config))
    assert err.value.field == f"virtual_hosts[0].routes[0].typed_per_filter_config['{KEY}'].{field}"
    assert problem in err.value.problem


def test_the_bucket_starts_full_and_refills_in_whole_intervals() -> None:
    bucket = TokenBuckets(TokenBucket(3, 2, 3600.0))
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    bucket._last -= 3600.0  # one interval went by: two tokens
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    bucket._last -= 3 * 3600.0  # three: capped at max_tokens
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_enabled_but_not_enforced_counts_and_passes() -> None:
    shadow = LocalRateLimiter(
        LocalRateLimitConfig("rl", TokenBucket(1, 1, 3600.0), Percent(100, 100))
    )
    assert [shadow.admit() for _ in range(3)] == [None, None, None]
    assert shadow.counts == {"enabled": 3, "enforced": 0, "rate_limited": 2, "ok": 1}
    off = LocalRateLimiter(LocalRateLimitConfig("rl", TokenBucket(1, 1, 3600.0)))
    assert [off.admit() for _ in range(3)] == [None, None, None]
    assert off.counts["enabled"] == 0


def test_per_route_config_has_its_own_bucket_and_the_reply() -> None:
    bucket = {"max_tokens": 1, "fill_interval": "3600s"}
    route = limited(
        token_bucket=bucket,
        filter_enabled=ALL,
        filter_enforced=ALL,
        status={"code": 503},
        rate_limited_as_resource_exhausted=True,
    )
    other = {"match": {"prefix": "/free"}, "route": {"cluster": "c"}}
    table = RouteTable(decode_routes(other, route))
    free = table.route(Call("a:80", "GET", "/free"))
    assert free is not None and free.ratelimit is None
    plan = table.route(Call("a:80", "GET", "/x"))
    assert plan is not None and plan.ratelimit is not None
    assert plan.ratelimit.admit() is None
    reply = plan.ratelimit.admit()
    assert reply is not None
    assert (reply.status, reply.body, reply.flag, reply.grpc_status) == (
        503,
        b"local_rate_limited",
        "RL",
        8,
    )


def test_a_direct_response_route_is_rate_limited_too() -> None:
    route = limited(
        token_bucket={"max_tokens": 1, "fill_interval": "3600s"},
        filter_enabled=ALL,
        filter_enforced=ALL,
    )
    del route["route"]
    route["direct_response"] = {"status": 200, "body": {"inline_string": "hi"}}
    table = RouteTable(decode_routes(route))
    first, second = (table.route_or_reply(Call("a:80", "GET", "/")) for _ in range(2))
    assert isinstance(first, LocalReply) and isinstance(second, LocalReply)
    assert [first.status, second.status] == [200, 429]
    assert second.flag == "RL"
