"""Route actions against Envoy's documented meaning: cluster choice, rewrites, header
mutations and their order, hash keys, timeouts and mirrors."""

from __future__ import annotations

import collections
import random
from typing import Any

import pytest

from meshlib import Call
from meshlib.routing import RoutePlan, RouteTable
from tests.meshlib.xds_builders import decoded, table


def plan_of(t: RouteTable, path: str = "/", headers: dict[str, str] | None = None) -> RoutePlan:
    plan = t.route(Call("h:80", "GET", path, headers or {}))
    assert plan is not None
    return plan


@pytest.mark.parametrize(
    ("match", "action", "path", "rewritten"),
    [
        ({"prefix": "/api/"}, {"prefix_rewrite": "/v2/"}, "/api/users?x=1", "/v2/users?x=1"),
        ({"prefix": "/api"}, {"prefix_rewrite": "/"}, "/api", "/"),
        ({"path": "/old"}, {"prefix_rewrite": "/new"}, "/old", "/new"),
        (
            {"prefix": "/"},
            {
                "regex_rewrite": {
                    "pattern": {"regex": "^/service/([^/]+)(/.*)$"},
                    "substitution": "\\2/instance/\\1",
                }
            },
            "/service/foo/v1/api",
            "/v1/api/instance/foo",
        ),
        (
            {"prefix": "/"},
            {"regex_rewrite": {"pattern": {"regex": "one"}, "substitution": "two"}},
            "/xxx/one/yyy/one/zzz",
            "/xxx/two/yyy/two/zzz",  # every match is replaced
        ),
    ],
)
def test_path_rewrites(
    match: dict[str, Any], action: dict[str, Any], path: str, rewritten: str
) -> None:
    t = table({"match": match, "route": {"cluster": "c", **action}})
    assert plan_of(t, path).path == rewritten


def test_no_rewrite_leaves_path_and_host_alone() -> None:
    plan = plan_of(table({"match": {"prefix": "/"}, "route": {"cluster": "c"}}), "/a?b")
    assert (plan.path, plan.authority) == (None, None)


def test_host_rewrite_literal_route_and_weighted_cluster() -> None:
    t = table(
        {
            "match": {"prefix": "/w"},
            "route": {
                "host_rewrite_literal": "route.example",
                "weighted_clusters": {
                    "clusters": [{"name": "a", "weight": 1, "host_rewrite_literal": "a.example"}]
                },
            },
        },
        {
            "match": {"prefix": "/"},
            "route": {"cluster": "c", "host_rewrite_literal": "route.example"},
        },
    )
    assert plan_of(t, "/w").authority == "a.example"  # the weighted cluster's wins
    assert plan_of(t, "/x").authority == "route.example"


def add(key: str, value: str, action: str = "APPEND_IF_EXISTS_OR_ADD") -> dict[str, Any]:
    return {"header": {"key": key, "value": value}, "append_action": action}


def mutated(most_specific_wins: bool, request: list[tuple[str, str]]) -> list[tuple[str, str]]:
    rc = decoded(
        [
            {
                "name": "vh",
                "domains": ["*"],
                "request_headers_to_add": [add("x-level", "vhost", "OVERWRITE_IF_EXISTS_OR_ADD")],
                "routes": [
                    {
                        "match": {"prefix": "/"},
                        "request_headers_to_add": [
                            add("x-level", "route", "OVERWRITE_IF_EXISTS_OR_ADD"),
                            add("x-route", "1"),
                        ],
                        "request_headers_to_remove": ["x-secret"],
                        "route": {
                            "weighted_clusters": {
                                "clusters": [
                                    {
                                        "name": "a",
                                        "weight": 1,
                                        "request_headers_to_add": [
                                            add("x-level", "cluster", "OVERWRITE_IF_EXISTS_OR_ADD")
                                        ],
                                    }
                                ]
                            }
                        },
                    }
                ],
            }
        ],
        request_headers_to_add=[
            add("x-level", "config", "OVERWRITE_IF_EXISTS_OR_ADD"),
            add("x-config", ""),
        ],
        most_specific_header_mutations_wins=most_specific_wins,
    )
    plan = plan_of(RouteTable(rc))
    return plan.headers.request(list(request))


def test_header_mutation_order_follows_envoy() -> None:
    # Default: weighted cluster, route, vhost, config in that order, so the least
    # specific overwrite is the one that sticks.
    out = mutated(False, [("x-secret", "s"), ("x-keep", "k")])
    assert ("x-secret", "s") not in out and ("x-keep", "k") in out
    assert [v for k, v in out if k == "x-level"] == ["config"]
    assert ("x-route", "1") in out
    assert all(k != "x-config" for k, _ in out)  # empty values are skipped unless kept
    assert [v for k, v in mutated(True, []) if k == "x-level"] == ["cluster"]


@pytest.mark.parametrize(
    ("action", "before", "after"),
    [
        ("APPEND_IF_EXISTS_OR_ADD", [("x", "1")], [("x", "1"), ("x", "2")]),
        ("ADD_IF_ABSENT", [("x", "1")], [("x", "1")]),
        ("ADD_IF_ABSENT", [], [("x", "2")]),
        ("OVERWRITE_IF_EXISTS_OR_ADD", [("x", "1"), ("x", "3")], [("x", "2")]),
        ("OVERWRITE_IF_EXISTS", [], []),
        ("OVERWRITE_IF_EXISTS", [("x", "1")], [("x", "2")]),
    ],
)
def test_append_actions(
    action: str, before: list[tuple[str, str]], after: list[tuple[str, str]]
) -> None:
    t = table(
        {
            "match": {"prefix": "/"},
            "request_headers_to_add": [add("x", "2", action)],
            "route": {"cluster": "c"},
        }
    )
    assert plan_of(t).headers.request(list(before)) == after


def test_response_mutations() -> None:
    t = table(
        {
            "match": {"prefix": "/"},
            "response_headers_to_add": [add("x-served-by", "mesh")],
            "response_headers_to_remove": ["server"],
            "route": {"cluster": "c"},
        }
    )
    chain = plan_of(t).headers
    assert chain.response([("server", "uvicorn"), ("a", "b")]) == [
        ("a", "b"),
        ("x-served-by", "mesh"),
    ]


def test_cluster_header_routes_by_request_header() -> None:
    t = table({"match": {"prefix": "/"}, "route": {"cluster_header": "X-Cluster"}})
    assert plan_of(t, headers={"x-cluster": "blue"}).cluster == "blue"
    assert t.route(Call("h:80", "GET", "/", {})) is None  # absent header: no route (404)


def test_weighted_clusters_chi_square() -> None:
    random.seed(3)
    t = table(
        {
            "match": {"prefix": "/"},
            "route": {
                "weighted_clusters": {
                    "clusters": [
                        {"name": "a", "weight": 10},
                        {"name": "b", "weight": 30},
                        {"name": "c", "weight": 60},
                    ]
                }
            },
        }
    )
    n = 6000
    counts = collections.Counter(plan_of(t).cluster for _ in range(n))
    expected = {"a": 0.1 * n, "b": 0.3 * n, "c": 0.6 * n}
    chi2 = sum((counts[k] - e) ** 2 / e for k, e in expected.items())
    assert chi2 < 13.82, counts  # 2 degrees of freedom, p = 0.001


def test_hash_policy_header_cookie_query_and_terminal() -> None:
    def key(
        policies: list[dict[str, Any]], path: str = "/", headers: dict[str, str] | None = None
    ) -> int | None:
        t = table({"match": {"prefix": "/"}, "route": {"cluster": "c", "hash_policy": policies}})
        return plan_of(t, path, headers).hash_key

    by_user = [{"header": {"header_name": "x-user"}}]
    assert key(by_user, headers={"x-user": "ann"}) == key(by_user, headers={"x-user": "ann"})
    assert key(by_user, headers={"x-user": "ann"}) != key(by_user, headers={"x-user": "bob"})
    assert key(by_user) is None  # nothing to hash: the balancer picks as if no policy
    cookie = [{"cookie": {"name": "sid"}}]
    assert key(cookie, headers={"cookie": "a=1; sid=42"}) == key(
        cookie, headers={"cookie": "sid=42"}
    )
    query = [{"query_parameter": {"name": "u"}}]
    assert key(query, "/?u=7") == key(query, "/x?u=7") != key(query, "/?u=8")
    terminal = [
        {"header": {"header_name": "x-a"}, "terminal": True},
        {"header": {"header_name": "x-b"}},
    ]
    both = {"x-a": "1", "x-b": "2"}
    assert key(terminal, headers=both) == key(terminal, headers={"x-a": "1", "x-b": "other"})
    combined = [{"header": {"header_name": "x-a"}}, {"header": {"header_name": "x-b"}}]
    assert key(combined, headers=both) != key(combined, headers={"x-a": "1", "x-b": "other"})
    rewrite = [
        {
            "header": {
                "header_name": "x-p",
                "regex_rewrite": {"pattern": {"regex": "-.*"}, "substitution": ""},
            }
        }
    ]
    assert key(rewrite, headers={"x-p": "u1-a"}) == key(rewrite, headers={"x-p": "u1-b"})


GRPC = {"content-type": "application/grpc"}


@pytest.mark.parametrize(
    ("action", "headers", "timeout"),
    [
        ({}, {}, 15.0),  # Envoy's default
        ({"timeout": "0s"}, {}, None),  # explicit 0 disables it
        ({"timeout": "2s"}, {}, 2.0),
        (
            {"timeout": "2s", "max_stream_duration": {"grpc_timeout_header_max": "0s"}},
            {**GRPC, "grpc-timeout": "500m"},
            0.5,
        ),
        (
            {"timeout": "2s", "max_stream_duration": {"grpc_timeout_header_max": "0s"}},
            GRPC,
            None,
        ),  # uncapped, no header
        (
            {"max_stream_duration": {"grpc_timeout_header_max": "1s"}},
            {**GRPC, "grpc-timeout": "5S"},
            1.0,
        ),
        ({"max_stream_duration": {"grpc_timeout_header_max": "1s"}}, GRPC, 1.0),
        (
            {
                "max_stream_duration": {
                    "grpc_timeout_header_max": "0s",
                    "grpc_timeout_header_offset": "0.1s",
                }
            },
            {**GRPC, "grpc-timeout": "1S"},
            0.9,
        ),
        (
            {"timeout": "2s", "max_stream_duration": {"grpc_timeout_header_max": "0s"}},
            {"grpc-timeout": "1S"},
            2.0,
        ),  # not gRPC
        ({"timeout": "0s", "max_stream_duration": {"max_stream_duration": "3s"}}, {}, 3.0),
    ],
)
def test_route_timeout(
    action: dict[str, Any], headers: dict[str, str], timeout: float | None
) -> None:
    t = table({"match": {"prefix": "/"}, "route": {"cluster": "c", **action}})
    assert plan_of(t, headers=headers).timeout == pytest.approx(timeout)


def test_mirror_policies_sample_their_fraction() -> None:
    random.seed(5)
    t = table(
        {
            "match": {"prefix": "/"},
            "route": {
                "cluster": "c",
                "request_mirror_policies": [
                    {"cluster": "all"},
                    {"cluster": "some", "runtime_fraction": {"default_value": {"numerator": 20}}},
                ],
            },
        }
    )
    n = 3000
    counts = collections.Counter(m.cluster for _ in range(n) for m in plan_of(t).mirrors)
    assert counts["all"] == n
    e = 0.2 * n
    chi2 = (counts["some"] - e) ** 2 / e + (counts["some"] - e) ** 2 / (n - e)
    assert chi2 < 10.83, counts
    target = plan_of(t).mirrors[0]
    assert target.authority("reviews:9080") == "reviews-shadow:9080"
