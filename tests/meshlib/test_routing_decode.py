"""RouteConfiguration decoding: every field routing acts on, Envoy's defaults, and NACKs
that name the offending field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshlib._snapshot import ListenerView
from meshlib.controlplane.xds._cache import ROUTE_TYPE
from tests.meshlib.xds_builders import (
    api_listener,
    mesh_for,
    packed,
    resources,
    route_config,
    serving,
)
from xds_client.resources import ResourceError
from xds_client.resources.route import (
    HeaderMatch,
    HeaderToAdd,
    Percent,
    RouteConfigResource,
    RouteConfigType,
    StringMatch,
)

FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def decode_routes(*routes: dict[str, Any], **vhost: Any) -> RouteConfigResource:
    vh = {"name": "vh", "domains": ["*"], "routes": list(routes), **vhost}
    return RouteConfigType().decode(packed(route_config([vh])))[1]


def route(match: dict[str, Any] | None = None, **action: Any) -> dict[str, Any]:
    return {"match": match or {"prefix": "/"}, "route": {"cluster": "c", **action}}


def test_retry_policy_defaults_follow_envoy() -> None:
    rc = decode_routes(route(retry_policy={"retry_on": "5xx,unavailable,bogus"}))
    action = rc.virtual_hosts[0].routes[0].action
    assert action is not None and action.retry_policy is not None
    p = action.retry_policy
    assert p.retry_on == {"5xx", "unavailable"}  # unknown names are ignored
    assert p.num_retries == 1  # default when a retry_policy exists
    assert (p.base_interval, p.max_interval) == (0.025, 0.25)  # 25 ms, 10x base
    assert p.per_try_timeout is None and not p.previous_hosts


def test_retry_policy_fields() -> None:
    policy = {
        "retry_on": "retriable-status-codes,retriable-headers",
        "num_retries": 4,
        "per_try_timeout": "0.5s",
        "retriable_status_codes": [418],
        "retriable_headers": [{"name": "X-Retry", "exact_match": "yes"}],
        "retry_back_off": {"base_interval": "0.1s"},
        "rate_limited_retry_back_off": {
            "reset_headers": [
                {"name": "Retry-After"},
                {"name": "X-Reset", "format": "UNIX_TIMESTAMP"},
            ],
            "max_interval": "2s",
        },
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts"}],
        "host_selection_retry_max_attempts": 5,
    }
    action = decode_routes(route(retry_policy=policy)).virtual_hosts[0].routes[0].action
    assert action is not None and (p := action.retry_policy) is not None
    assert p.num_retries == 4 and p.per_try_timeout == 0.5
    assert p.retriable_status_codes == {418}
    assert p.retriable_headers == (HeaderMatch("x-retry", "string", StringMatch("exact", "yes")),)
    assert (p.base_interval, p.max_interval) == (0.1, pytest.approx(1.0))
    assert p.rate_limited_headers == (("retry-after", "seconds"), ("x-reset", "unix_timestamp"))
    assert p.rate_limited_max_interval == 2.0
    assert p.previous_hosts and p.host_selection_max_attempts == 5


def test_virtual_host_retry_policy_and_mutations_levels() -> None:
    rc = RouteConfigType().decode(
        packed(
            route_config(
                [
                    {
                        "name": "vh",
                        "domains": ["*"],
                        "routes": [route()],
                        "retry_policy": {"retry_on": "reset"},
                        "request_headers_to_add": [
                            {"header": {"key": "X-VH", "value": "1"}, "append": False}
                        ],
                    }
                ]
            )
        )
    )[1]
    vh = rc.virtual_hosts[0]
    assert vh.retry_policy is not None and vh.retry_policy.retry_on == {"reset"}
    assert vh.mutations.request_add == (HeaderToAdd("x-vh", "1", "overwrite_if_exists_or_add"),)


def test_match_fields_and_fault_override() -> None:
    match = {
        "safe_regex": {"regex": "/api/v[0-9]+/.*"},
        "headers": [
            {"name": "x-env", "string_match": {"prefix": "can", "ignore_case": True}},
            {"name": "x-debug", "present_match": True, "invert_match": True},
            {"name": "x-n", "range_match": {"start": 1, "end": 10}},
        ],
        "query_parameters": [
            {"name": "q", "string_match": {"exact": "1"}},
            {"name": "p", "present_match": True},
        ],
        "runtime_fraction": {"default_value": {"numerator": 25, "denominator": "TEN_THOUSAND"}},
        "grpc": {},
    }
    r = {
        "match": match,
        "route": {"cluster": "c"},
        "typed_per_filter_config": {
            "envoy.filters.http.fault": {
                "@type": FAULT,
                "abort": {"http_status": 503, "percentage": {"numerator": 50}},
                "max_active_faults": 3,
            }
        },
    }
    entry = decode_routes(r).virtual_hosts[0].routes[0]
    m = entry.match
    assert (m.kind, m.value, m.grpc) == ("safe_regex", "/api/v[0-9]+/.*", True)
    assert m.headers[0] == HeaderMatch("x-env", "string", StringMatch("prefix", "can", True))
    assert m.headers[1].invert and m.headers[1].kind == "present"
    assert m.headers[2].range == (1, 10)
    assert [q.name for q in m.query_parameters] == ["q", "p"] and m.query_parameters[
        1
    ].string is None
    assert m.runtime_fraction == Percent(25, 10_000)
    assert entry.fault is not None and entry.fault.abort is not None
    assert entry.fault.abort.http_status == 503 and entry.fault.abort.percent == Percent(50)
    assert entry.fault.max_active_faults == 3


def test_actions_decode() -> None:
    r = route(
        prefix_rewrite="/v2/",
        host_rewrite_literal="internal.example",
        timeout="0s",
        hash_policy=[
            {"header": {"header_name": "X-User"}, "terminal": True},
            {"cookie": {"name": "s"}},
        ],
        request_mirror_policies=[
            {"cluster": "shadow", "runtime_fraction": {"default_value": {"numerator": 10}}}
        ],
        max_stream_duration={"grpc_timeout_header_max": "3s", "grpc_timeout_header_offset": "0.1s"},
    )
    rc = decode_routes(r)
    a = rc.virtual_hosts[0].routes[0].action
    assert a is not None
    assert (a.prefix_rewrite, a.host_rewrite_literal, a.timeout) == (
        "/v2/",
        "internal.example",
        0.0,
    )
    assert [(h.kind, h.name, h.terminal) for h in a.hash_policy] == [
        ("header", "x-user", True),
        ("cookie", "s", False),
    ]
    assert a.mirror_policies[0].cluster == "shadow" and a.mirror_policies[0].percent == Percent(10)
    assert rc.cluster_names() == {"c", "shadow"}  # mirror clusters are subscribed too
    assert a.max_stream_duration is not None
    assert a.max_stream_duration.grpc_timeout_header_max == 3.0


@pytest.mark.parametrize(
    ("bad_route", "field", "problem"),
    [
        (
            route({"safe_regex": {"regex": "(a"}}),
            "virtual_hosts[0].routes[0].match.safe_regex.regex",
            "invalid RE2 regex",
        ),
        (
            route({"safe_regex": {"regex": "[a-z]{50}[0-9]{60}"}}),
            "virtual_hosts[0].routes[0].match.safe_regex.regex",
            "exceeds the limit 100",
        ),
        (
            route({"prefix": "/", "headers": [{"name": "x", "safe_regex_match": {"regex": "\\"}}]}),
            "virtual_hosts[0].routes[0].match.headers[0].safe_regex_match.regex",
            "invalid RE2 regex",
        ),
        (
            route(
                {"prefix": "/", "headers": [{"name": "x", "range_match": {"start": 5, "end": 5}}]}
            ),
            "virtual_hosts[0].routes[0].match.headers[0].range_match",
            "end (5) must be greater",
        ),
        (
            route(
                retry_policy={
                    "retry_on": "5xx",
                    "retry_back_off": {"base_interval": "1s", "max_interval": "0.5s"},
                }
            ),
            "virtual_hosts[0].routes[0].route.retry_policy.retry_back_off.max_interval",
            "must be >=",
        ),
        (
            route(retry_policy={"retry_on": "5xx", "retry_back_off": {"base_interval": "0s"}}),
            "virtual_hosts[0].routes[0].route.retry_policy.retry_back_off.base_interval",
            "greater than zero",
        ),
        (
            route(timeout="-1s"),
            "virtual_hosts[0].routes[0].route.timeout",
            "must not be negative",
        ),
        (
            route(regex_rewrite={"pattern": {"regex": "[z-a]"}, "substitution": "x"}),
            "virtual_hosts[0].routes[0].route.regex_rewrite.pattern.regex",
            "invalid RE2 regex",
        ),
        (
            {
                "match": {"prefix": "/"},
                "route": {"cluster": "c"},
                "request_headers_to_add": [{"header": {"key": ":path", "value": "/x"}}],
            },
            "virtual_hosts[0].routes[0].request_headers_to_add[0].header.key",
            "cannot be set",
        ),
        (
            {
                "match": {"prefix": "/"},
                "route": {"cluster": "c"},
                "typed_per_filter_config": {
                    "envoy.filters.http.fault": {"@type": FAULT, "abort": {"http_status": 700}}
                },
            },
            "virtual_hosts[0].routes[0].typed_per_filter_config['envoy.filters.http.fault'].abort.http_status",
            "must be in [200, 600)",
        ),
        (
            route(request_mirror_policies=[{"cluster": ""}]),
            "virtual_hosts[0].routes[0].route.request_mirror_policies[0].cluster",
            "must not be empty",
        ),
    ],
)
def test_invalid_fields_are_nacked_with_their_path(
    bad_route: dict[str, Any], field: str, problem: str
) -> None:
    with pytest.raises(ResourceError) as err:
        decode_routes(bad_route)
    assert err.value.field == field
    assert problem in err.value.problem
    assert str(err.value).startswith(f"RouteConfiguration '{'test-routes'}': {field}")


def test_a_bad_regex_is_nacked_over_ads_and_the_last_good_config_keeps_serving(
    tmp_path: Path,
) -> None:
    good = route_config([{"name": "vh", "domains": ["*"], "routes": [route()]}])
    bad = route_config(
        [{"name": "vh", "domains": ["*"], "routes": [route({"safe_regex": {"regex": "a{101}"}})]}]
    )
    res = resources([api_listener("nack.test:80")], [good], {"c": [9]})
    with serving(tmp_path, res) as cp, mesh_for(cp) as mesh:
        engine = mesh._engine
        found = engine.listener("nack.test:80")
        if not isinstance(found, ListenerView):
            found.wait(10)
        table = engine.resolved("nack.test:80").routes
        assert table is not None
        cp.cache.set_resources(resources([api_listener("nack.test:80")], [bad], {"c": [9]}))
        nack = cp.events.wait_for(lambda e: e.kind == "NACK" and e.type_url == ROUTE_TYPE, 10)
        assert nack.error_detail is not None
        assert "virtual_hosts[0].routes[0].match.safe_regex.regex" in nack.error_detail
        assert "program size" in nack.error_detail
        assert engine.resolved("nack.test:80").routes is table  # the last good one serves
